"""The augmentation on the training device (`DeviceAugmentation`): the random parameters are the CPU path's bit for
bit, and the pixels are torchvision's kernels' with those parameters; against the CPU path itself (PIL, which
rounds to uint8 after every step) the difference is small and stated.

Real photographs: scikit-learn's two bundled sample images (china.jpg, flower.jpg, 427x640).
"""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from aduni_hf.data.device_augmentation import INDEX, PARAMETERS, DeviceAugmentation
from aduni_hf.data.transforms import build_augmentation, seeded, view_seed

SIZE = 96
KERNELS = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)  # ColorJitter's order


@pytest.fixture(scope="module")
def photographs() -> torch.Tensor:
    """(2, SIZE, SIZE, 3) uint8: the sample photographs resized as prepare_data.py stores them."""
    return torch.from_numpy(
        np.stack([np.asarray(Image.fromarray(p).resize((SIZE, SIZE), Image.BILINEAR)) for p in load_sample_images().images])
    )  # fmt: skip


def recorded_draws(pipeline: v2.Compose, image: Image.Image, seed: int) -> dict:
    """What the CPU path draws for one view: each random transform's parameters and which flips it applied."""
    drawn: dict = {"flips": set()}
    originals = []
    for transform in pipeline.transforms:
        if isinstance(transform, (v2.RandomAffine, v2.ColorJitter)):
            originals.append((transform, "make_params", transform.make_params))

            def record(flat, transform=transform, make=transform.make_params):
                drawn[type(transform).__name__] = make(flat)
                return drawn[type(transform).__name__]

            transform.make_params = record
        elif isinstance(transform, (v2.RandomHorizontalFlip, v2.RandomVerticalFlip)):
            originals.append((transform, "transform", transform.transform))

            def flip(inpt, params, transform=transform, apply=transform.transform):
                drawn["flips"].add(type(transform).__name__)
                return apply(inpt, params)

            transform.transform = flip
    try:
        seeded(pipeline, image, seed)
    finally:
        for transform, name, original in originals:
            setattr(transform, name, original)
    return drawn


@pytest.mark.parametrize("name", ["kaggle", "digits"])
def test_the_parameters_are_the_cpu_paths_bit_for_bit(name, photographs):
    augmentation, pipeline = DeviceAugmentation(name, SIZE), build_augmentation(name, SIZE)
    image = Image.fromarray(photographs[0].numpy())
    flips_seen = set()
    for draw in range(60):
        seed = view_seed(7, 2, draw, draw % 5, draw % 2)
        drawn, row = recorded_draws(pipeline, image, seed), augmentation.draw(seed)
        affine = drawn["RandomAffine"]
        assert row[INDEX["angle"]].item() == affine["angle"] and row[INDEX["scale"]].item() == affine["scale"]
        assert (row[INDEX["translate_x"]].item(), row[INDEX["translate_y"]].item()) == tuple(map(float, affine["translate"]))
        assert (row[INDEX["shear_x"]].item(), row[INDEX["shear_y"]].item()) == affine["shear"]
        jitter = drawn["ColorJitter"]
        assert row[INDEX["jitter_order_0"] : INDEX["jitter_order_3"] + 1].tolist() == jitter["fn_idx"].tolist()
        for factor in ("brightness", "contrast", "saturation", "hue"):
            expected = jitter[f"{factor}_factor"]
            value = row[INDEX[factor]].item()
            assert (math.isnan(value) and expected is None) or value == expected, factor
        applied = {n for n, key in (("RandomHorizontalFlip", "horizontal_flip"), ("RandomVerticalFlip", "vertical_flip"))
                   if row[INDEX[key]] == 1.0}  # fmt: skip
        assert applied == drawn["flips"]
        flips_seen |= applied
    if name == "kaggle":
        assert flips_seen == {"RandomHorizontalFlip", "RandomVerticalFlip"}  # the coins came up both ways


def reference(photograph: torch.Tensor, row: torch.Tensor, augmentation: DeviceAugmentation) -> torch.Tensor:
    """One view by torchvision's own float kernels with the parameters of `row`."""
    image = photograph.permute(2, 0, 1).float() / 255
    image = TF.affine(
        image, angle=row[INDEX["angle"]].item(), translate=[row[INDEX["translate_x"]].item(), row[INDEX["translate_y"]].item()],
        scale=row[INDEX["scale"]].item(), shear=[row[INDEX["shear_x"]].item(), row[INDEX["shear_y"]].item()],
        interpolation=v2.InterpolationMode.NEAREST, fill=0,
    )  # fmt: skip
    if row[INDEX["horizontal_flip"]] == 1:
        image = TF.horizontal_flip(image)
    if row[INDEX["vertical_flip"]] == 1:
        image = TF.vertical_flip(image)
    for position in range(4):
        function = int(row[INDEX[f"jitter_order_{position}"]])
        factor = row[INDEX[("brightness", "contrast", "saturation", "hue")[function]]].item()
        if not math.isnan(factor):
            image = KERNELS[function](image, factor)
    return TF.normalize(image, augmentation.mean, augmentation.std)


def batch(photographs: torch.Tensor, augmentation: DeviceAugmentation, views: int = 24):
    seeds = [view_seed(0, 5, draw, draw % 2, 1) for draw in range(views)]
    rows = torch.stack([augmentation.draw(seed) for seed in seeds])
    pixels = torch.stack([photographs[draw % 2] for draw in range(views)])
    return seeds, pixels, rows


def in_255_units(difference: torch.Tensor, augmentation: DeviceAugmentation) -> torch.Tensor:
    return (difference * torch.tensor(augmentation.std).view(1, 3, 1, 1) * 255).abs()


@pytest.mark.parametrize("name", ["kaggle", "digits"])
def test_the_pixels_are_torchvisions_kernels_with_those_parameters(name, photographs):
    augmentation = DeviceAugmentation(name, SIZE)
    _, pixels, rows = batch(photographs, augmentation)
    views = augmentation.apply(pixels, rows)
    expected = torch.stack([reference(p, r, augmentation) for p, r in zip(pixels, rows, strict=True)])
    assert views.shape == (len(rows), 3, SIZE, SIZE) and views.dtype == torch.float32
    assert in_255_units(views - expected, augmentation).max() < 1e-2  # float rounding only
    one_by_one = torch.cat([augmentation.apply(pixels[i : i + 1], rows[i : i + 1]) for i in range(len(rows))])
    torch.testing.assert_close(views, one_by_one, rtol=0, atol=1e-6)  # each view its own parameters


@pytest.mark.parametrize(("name", "mean_limit", "p999_limit"), [("kaggle", 2.0, 12.0), ("digits", 1.5, 4.0)])
def test_against_the_cpu_path_the_difference_is_small(name, mean_limit, p999_limit, photographs):
    """The CPU path applies the same operations to a PIL image, rounding to uint8 after each; where a nearest
    neighbour falls on the other side of a pixel edge, one pixel takes its neighbour's value (the maximum)."""
    augmentation, pipeline = DeviceAugmentation(name, SIZE), build_augmentation(name, SIZE)
    seeds, pixels, rows = batch(photographs, augmentation)
    views = augmentation.apply(pixels, rows)
    cpu = torch.stack([seeded(pipeline, Image.fromarray(p.numpy()), s) for p, s in zip(pixels, seeds, strict=True)])
    difference = in_255_units(views - cpu, augmentation)
    mean, p999 = difference.mean().item(), torch.quantile(difference.flatten()[::3], 0.999).item()
    print(f"{name}: device vs CPU path, mean {mean:.3f}, 99.9th percentile {p999:.3f} (0-255 units)")
    assert mean < mean_limit and p999 < p999_limit


def test_pixels_at_another_size_are_resized_on_the_device(photographs):
    augmentation = DeviceAugmentation("none", 48)
    row = augmentation.draw(0)
    assert row[INDEX["scale"]] == 1 and torch.isnan(row[INDEX["brightness"]])  # "none" draws nothing
    views = augmentation.apply(photographs, row.expand(2, -1))
    expected = TF.normalize(
        TF.resize(photographs.permute(0, 3, 1, 2).float() / 255, [48, 48], antialias=True), augmentation.mean,
        augmentation.std,
    )  # fmt: skip
    torch.testing.assert_close(views, expected, rtol=0, atol=1e-5)
    assert len(PARAMETERS) == row.numel()


def test_a_pipeline_without_a_device_implementation_is_refused(monkeypatch):
    from aduni_hf.data import transforms

    monkeypatch.setitem(transforms.AUGMENTATIONS._entries, "blurry", lambda size: v2.Compose([v2.GaussianBlur(3)]))
    with pytest.raises(ValueError, match="augmentation 'blurry': no device implementation of GaussianBlur"):
        DeviceAugmentation("blurry", 32)
