"""Torch datasets over a fold of a `datasets.Dataset`: several augmented views for training, one for eval."""

from __future__ import annotations

import functools
from typing import NamedTuple

import datasets
import torch
from torch.utils.data import Dataset

from .images import as_rgb
from .pixels import PixelReader
from .transforms import ImageTransform, seeded, view_seed


class DrawKey(NamedTuple):
    """What a training sampler yields: the epoch, the position of the draw in the epoch, the sample index."""

    epoch: int
    draw: int
    index: int


class MultiViewDataset(Dataset):
    """`num_views` independently augmented views of every image, seeded by (seed, epoch, draw, index, view).

    Items are `{"pixel_values": (V, 3, H, W), "labels": int}`. Indexed by the `DrawKey`s of a training sampler;
    a plain int index is taken as draw `index` of epoch 0.
    """

    def __init__(
        self, dataset: datasets.Dataset, transform: ImageTransform, num_views: int = 2, seed: int = 0
    ):
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        self.dataset = dataset.select_columns(["image", "label"])
        self.transform = transform
        self.num_views = num_views
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: DrawKey | int) -> dict[str, torch.Tensor | int]:
        if not isinstance(key, tuple):
            key = DrawKey(0, int(key), int(key))
        epoch, draw, index = key
        row = self.dataset[int(index)]
        image = as_rgb(row["image"])
        views = [
            seeded(self.transform, image, view_seed(self.seed, epoch, draw, index, v))
            for v in range(self.num_views)
        ]
        return {"pixel_values": torch.stack(views), "labels": row["label"]}

    @property
    def labels(self) -> list[int]:
        return self.dataset["label"]


class PixelViewsDataset(Dataset):
    """Training items for the augmentation on the training device (`DeviceAugmentation`): each image's stored uint8
    pixels and the random parameters of its `num_views` views, drawn on the host with the seeds `MultiViewDataset`
    gives them, (seed, epoch, draw, index, view). The views themselves are made on the device, a batch at a time.

    Items are `{"pixels": (H, W, 3) uint8, "view_parameters": (V, P) float32, "labels": int}`; a batch
    (`__getitems__`, what a DataLoader asks for) is read at once: `{"pixels": (B, H, W, 3), "view_parameters":
    (B, V, P), "labels": (B,)}`, which `collate_views` passes through.
    """

    def __init__(self, dataset: datasets.Dataset, augmentation, num_views: int = 2, seed: int = 0):
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        self.dataset = dataset
        self.read_pixels = PixelReader(dataset)
        self.augmentation, self.num_views, self.seed = augmentation, num_views, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def _keys(self, keys) -> list[DrawKey]:
        return [key if isinstance(key, tuple) else DrawKey(0, int(key), int(key)) for key in keys]

    def __getitems__(self, keys) -> dict[str, torch.Tensor]:
        keys = self._keys(keys)
        parameters = [
            torch.stack([self.augmentation.draw(view_seed(self.seed, *key, v)) for v in range(self.num_views)])
            for key in keys
        ]
        labels = [self.labels[key.index] for key in keys]
        return {
            "pixels": self.read_pixels([key.index for key in keys]),
            "view_parameters": torch.stack(parameters),
            "labels": torch.tensor(labels, dtype=torch.long),
        }

    def __getitem__(self, key: DrawKey | int) -> dict[str, torch.Tensor | int]:
        batch = self.__getitems__([key])
        return {"pixels": batch["pixels"][0], "view_parameters": batch["view_parameters"][0],
                "labels": int(batch["labels"][0])}  # fmt: skip

    @functools.cached_property
    def labels(self) -> list[int]:
        return self.dataset["label"]


class SingleViewDataset(Dataset):
    """One deterministic (evaluation) view per image: `{"pixel_values": (3, H, W), "labels": int}`."""

    def __init__(self, dataset: datasets.Dataset, transform: ImageTransform):
        self.dataset = dataset.select_columns(["image", "label"])
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        row = self.dataset[int(index)]
        return {"pixel_values": self.transform(as_rgb(row["image"])), "labels": row["label"]}

    @property
    def labels(self) -> list[int]:
        return self.dataset["label"]


def collate_views(items: list[dict[str, torch.Tensor | int]] | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stack items: pixel_values (B, V, 3, H, W) for training items, (B, 3, H, W) for evaluation items, or the
    stored pixels and view parameters of `PixelViewsDataset` items; a batch already read as one (its
    `__getitems__`) passes through."""
    if isinstance(items, dict):
        return items
    stacked = {key: torch.stack([item[key] for item in items]) for key in items[0] if key != "labels"}
    return {**stacked, "labels": torch.tensor([item["labels"] for item in items], dtype=torch.long)}


def view_major(
    pixel_values: torch.Tensor, memory_format: torch.memory_format = torch.contiguous_format
) -> torch.Tensor:
    """Training views (B, V, 3, H, W) as one batch of V*B rows, view 0 of every image first (the official
    `torch.cat([views[0], views[1]])` order), laid out in `memory_format`, in a single copy."""
    batch, views, channels, height, width = pixel_values.shape
    if memory_format is torch.channels_last:  # (V, B, H, W, 3) in memory, seen as (V*B, 3, H, W)
        rows = pixel_values.permute(1, 0, 3, 4, 2).reshape(views * batch, height, width, channels)
        return rows.permute(0, 3, 1, 2)
    return (
        pixel_values.transpose(0, 1)
        .reshape(views * batch, channels, height, width)
        .contiguous(memory_format=memory_format)
    )
