"""Image transforms: the recipes' training augmentations (in `AUGMENTATIONS`) and the evaluation resize.

Training views are drawn from torch's RNG inside `seeded`, whose seed derives from (seed, epoch, draw,
sample index, view) only, so an augmentation does not depend on the data-loader worker or process that
produced it, and a resumed run redraws the same views. A new augmentation is a function of the image size, with
`mean` and `std` keywords for the normalisation (ImageNet's by default; a run starting from pretrained encoder
weights passes theirs), registered with `@AUGMENTATIONS.register("name")`.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from ..image_utils import IMAGENET_MEAN, IMAGENET_STD
from ..registry import Registry

ImageTransform = Callable[[Image.Image], torch.Tensor]
AUGMENTATIONS: Registry[Callable[..., ImageTransform]] = Registry("augmentation")
Channels = Sequence[float]  # one value per RGB channel


def _to_normalised_tensor(mean: Channels, std: Channels) -> list[v2.Transform]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


@AUGMENTATIONS.register("kaggle")
def kaggle_augmentation(
    image_size: int, mean: Channels = IMAGENET_MEAN, std: Channels = IMAGENET_STD
) -> ImageTransform:
    """The released code's `--aug kaggle` pipeline, both views alike, drawn independently (docs/method.md,
    "Data and augmentation").

    Resize to (s, s); RandomAffine with rotation in +-180 deg, scale [0.8, 1.2] and shear (0.8, 1.2) degrees
    (a shear of about 1 deg, as written in the code); horizontal then vertical flip, each p=0.5; ColorJitter
    (0.2, 0.2, 0.2, 0.1); normalisation by `mean`/`std` (ImageNet's unless the encoder's weights say otherwise).
    """
    return v2.Compose(
        [
            v2.Resize((image_size, image_size)),
            v2.RandomAffine(degrees=180, scale=(0.8, 1.2), shear=(0.8, 1.2)),
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomVerticalFlip(p=0.5),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1),
            *_to_normalised_tensor(mean, std),
        ]
    )


@AUGMENTATIONS.register("digits")
def digits_augmentation(
    image_size: int, mean: Channels = IMAGENET_MEAN, std: Channels = IMAGENET_STD
) -> ImageTransform:
    """Digit-safe augmentation for the demo: a small affine jitter, no flips and no large rotations
    (a 6 turned over is a 9)."""
    return v2.Compose(
        [
            v2.Resize((image_size, image_size)),
            v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=5),
            v2.ColorJitter(brightness=0.2, contrast=0.2),
            *_to_normalised_tensor(mean, std),
        ]
    )


@AUGMENTATIONS.register("none")
def eval_transform(
    image_size: int, mean: Channels = IMAGENET_MEAN, std: Channels = IMAGENET_STD
) -> ImageTransform:
    """Evaluation view: resize to (s, s) and normalise; no crop (the official eval). Also the "none"
    augmentation."""
    return v2.Compose([v2.Resize((image_size, image_size)), *_to_normalised_tensor(mean, std)])


def build_augmentation(
    name: str, image_size: int, mean: Channels = IMAGENET_MEAN, std: Channels = IMAGENET_STD
) -> ImageTransform:
    """The augmentation registered as `name` at `image_size`, normalising by `mean`/`std`; an unknown name lists the
    choices. With ImageNet's statistics it is called with the image size alone, as before normalisations other
    than ImageNet's existed; one that takes no `mean`/`std` keywords is refused any other normalisation."""
    factory = AUGMENTATIONS[name]
    if tuple(mean) == tuple(IMAGENET_MEAN) and tuple(std) == tuple(IMAGENET_STD):
        return factory(image_size)
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        parameters = {}
    if not {"mean", "std"} <= parameters.keys():
        raise ValueError(
            f"augmentation {name!r} takes no mean/std keywords, so it cannot normalise by the pretrained weights' "
            f"statistics (mean {tuple(mean)}, std {tuple(std)}); give it `mean` and `std` keyword arguments"
        )
    return factory(image_size, mean=mean, std=std)


def view_seed(seed: int, epoch: int, draw: int, index: int, view: int) -> int:
    """A 63-bit seed that depends only on its arguments (numpy's SeedSequence hash)."""
    state = np.random.SeedSequence([seed, epoch, draw, index, view]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


@contextlib.contextmanager
def cpu_rng_seeded(seed: int) -> Iterator[None]:
    """torch's CPU random stream seeded by `seed` inside the block, as it was outside it. Only the CPU generator
    is touched: `torch.manual_seed` would also (lazily) reseed every GPU generator, with a traceback recorded per
    call, a millisecond each, and the training's own GPU stream reset by every view."""
    state = torch.get_rng_state()
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(state)


def seeded(transform: ImageTransform, image: Image.Image, seed: int) -> torch.Tensor:
    """Apply `transform` with torch's CPU RNG seeded by `seed`, leaving the caller's RNG state untouched."""
    with cpu_rng_seeded(seed):
        return transform(image)
