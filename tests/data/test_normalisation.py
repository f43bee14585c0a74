"""The normalisation of every image a run makes: ImageNet's by default, exactly as before `backbone_pretrained`
existed; given the pretrained weights' mean/std, the same views normalised by those instead, on the CPU path, on
the training device and in the evaluation view.

The check is a hand computation: un-normalising either output, x * std + mean, gives the same [0, 1] pixels.
"""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from aduni_hf.data.device_augmentation import DeviceAugmentation
from aduni_hf.data.transforms import AUGMENTATIONS, build_augmentation, eval_transform, seeded, view_seed
from aduni_hf.image_utils import IMAGENET_MEAN, IMAGENET_STD

SIZE = 32
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def photo(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8), mode="RGB")


def pixels(normalised: torch.Tensor, mean, std) -> torch.Tensor:
    """x * std + mean per channel: the [0, 1] pixels before normalisation."""
    return normalised * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_by_default_every_pipeline_normalises_by_imagenets_statistics(name):
    normalize = [t for t in build_augmentation(name, SIZE).transforms if isinstance(t, v2.Normalize)]
    assert len(normalize) == 1
    assert normalize[0].mean == list(IMAGENET_MEAN) and normalize[0].std == list(IMAGENET_STD)
    default = seeded(build_augmentation(name, SIZE), photo(), seed=7)
    explicit = seeded(build_augmentation(name, SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD), photo(), seed=7)
    assert torch.equal(default, explicit)


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_the_same_view_normalised_by_the_weights_statistics(name):
    seed = view_seed(3, 1, 0, 5, 1)
    imagenet = seeded(build_augmentation(name, SIZE), photo(), seed)
    ours = seeded(build_augmentation(name, SIZE, mean=MEAN, std=STD), photo(), seed)
    torch.testing.assert_close(pixels(ours, MEAN, STD), pixels(imagenet, IMAGENET_MEAN, IMAGENET_STD), rtol=0, atol=1e-5)
    assert not torch.allclose(ours, imagenet)


def test_the_evaluation_view_normalised_by_the_weights_statistics():
    imagenet, ours = eval_transform(SIZE)(photo()), eval_transform(SIZE, mean=MEAN, std=STD)(photo())
    torch.testing.assert_close(pixels(ours, MEAN, STD), pixels(imagenet, IMAGENET_MEAN, IMAGENET_STD), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["kaggle", "digits"])
def test_the_device_augmentation_normalises_by_the_weights_statistics(name):
    frames = torch.from_numpy(np.stack([np.asarray(photo(s).resize((SIZE, SIZE))) for s in range(3)]))
    imagenet, ours = DeviceAugmentation(name, SIZE), DeviceAugmentation(name, SIZE, mean=MEAN, std=STD)
    assert (imagenet.mean, imagenet.std) == (tuple(IMAGENET_MEAN), tuple(IMAGENET_STD))
    assert (ours.mean, ours.std) == (MEAN, STD)
    parameters = torch.stack([imagenet.draw(view_seed(0, 0, 0, i, 0)) for i in range(3)])
    torch.testing.assert_close(
        pixels(ours.apply(frames, parameters), MEAN, STD),
        pixels(imagenet.apply(frames, parameters), IMAGENET_MEAN, IMAGENET_STD),
        rtol=0,
        atol=1e-5,
    )


def test_an_augmentation_without_mean_and_std_keywords_keeps_imagenets_and_refuses_others(monkeypatch):
    from aduni_hf.data import transforms

    monkeypatch.setitem(transforms.AUGMENTATIONS._entries, "sized", lambda size: v2.Compose([v2.Resize(size)]))
    assert isinstance(build_augmentation("sized", SIZE), v2.Compose)  # as before: called with the size alone
    with pytest.raises(ValueError, match=r"augmentation 'sized' takes no mean/std keywords.*mean \(0.5, 0.4, 0.3\)"):
        build_augmentation("sized", SIZE, mean=MEAN, std=STD)
