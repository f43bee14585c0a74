"""Helpers shared by the model tests (test_modeling.py, test_model_contract.py, test_remote_code.py): tiny
configs, seeded models built from scratch, and deterministic inputs."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from aduni_hf import AdUniConfig, AdUniForImageClassification

IMAGE_SIZE = 32
ID2LABEL = {0: "benign", 1: "malignant", 2: "other"}
NUM_LABELS = len(ID2LABEL)


def tiny_config(id2label: dict[int, str] | None = None, **kwargs) -> AdUniConfig:
    """An AdUniConfig for 32x32 inputs (resnet18 unless `backbone` is given), labelled by `id2label`."""
    id2label = ID2LABEL if id2label is None else id2label
    kwargs.setdefault("image_size", IMAGE_SIZE)
    return AdUniConfig(id2label=id2label, label2id={v: k for k, v in id2label.items()}, **kwargs)


def build_model(seed: int = 0, **kwargs) -> AdUniForImageClassification:
    """`AdUniForImageClassification(tiny_config(**kwargs))` after `torch.manual_seed(seed)`."""
    torch.manual_seed(seed)
    return AdUniForImageClassification(tiny_config(**kwargs))


def images(batch: int = 4, size: int = IMAGE_SIZE, seed: int = 1, channels: int = 3) -> torch.Tensor:
    """A seeded batch of standard-normal pixel values, drawn without touching the global random state."""
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def make_image(seed: int, height: int = 45, width: int = 60) -> Image.Image:
    """A smooth RGB image (gradients plus a seeded offset): real pixels, deterministic."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    a, b, c = rng.uniform(0.5, 4.0, size=3)
    offset = rng.integers(0, 128, size=3)
    array = np.stack([xx * a + offset[0], yy * b + offset[1], (xx + yy) * c + offset[2]], axis=-1)
    return Image.fromarray((array % 256).astype(np.uint8), mode="RGB")
