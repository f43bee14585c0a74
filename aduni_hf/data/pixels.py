"""The raw uint8 pixels of a data set stored at one size: written once by `prepare_data.py --image_size N`, read in
batches for the augmentation on the training device, where a data-loader worker then does next to nothing.

`prepare_data.py --image_size N` stores, beside the lossless PNG of every image (the `image` column, which the
CPU path and evaluation decode), its (N, N, 3) uint8 pixels as raw bytes in a `pixels` column: reading a batch
is a memory-mapped copy, no decode. A data set without that column (prepared before, or built in memory) gives its
pixels by decoding the stored image bytes with torchvision's decoder, when every image has the same size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image

from ..image_utils import as_rgb

PIXELS_COLUMN = "pixels"


def add_pixel_column(dataset: datasets.Dataset, cache_file: str | Path) -> datasets.Dataset:
    """`dataset` with a `pixels` column: each image's uint8 RGB pixels, row-major (H, W, 3), as bytes. Written
    batch by batch to `cache_file` (no data set is held in memory); every image must have one size."""
    sizes: set[tuple[int, int]] = set()

    def raw(batch: dict) -> dict:
        pixels = []
        for image in batch["image"]:
            array = np.asarray(as_rgb(image), dtype=np.uint8)
            sizes.add(array.shape[:2])
            pixels.append(array.tobytes())
        return {PIXELS_COLUMN: pixels}

    features = datasets.Features({**dataset.features, PIXELS_COLUMN: datasets.Value("binary")})
    with_pixels = dataset.map(
        raw, batched=True, batch_size=64, features=features, cache_file_name=str(cache_file), desc="raw pixels"
    )
    if len(sizes) > 1:
        raise ValueError(f"the images have {len(sizes)} sizes ({sorted(sizes)[:3]}...): raw pixels need one size")
    return with_pixels


class PixelReader:
    """Batches of uint8 pixels (B, H, W, 3) from rows of `dataset`: the stored raw bytes, else the stored image
    bytes decoded (torchvision's decoder, no PIL). Raises ValueError when the images differ in size."""

    def __init__(self, dataset: datasets.Dataset) -> None:
        self.raw = PIXELS_COLUMN in dataset.column_names
        if self.raw:  # square images of the prepared size: (side, side, 3) bytes each
            self.dataset = dataset.select_columns([PIXELS_COLUMN])
        else:
            self.dataset = dataset.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))

    def __call__(self, rows: Sequence[int]) -> torch.Tensor:
        if self.raw:
            blob = b"".join(self.dataset[int(row)][PIXELS_COLUMN] for row in rows)
            side = math.isqrt(len(blob) // (3 * max(len(rows), 1)))
            return torch.frombuffer(bytearray(blob), dtype=torch.uint8).view(len(rows), side, side, 3)
        images = [self._decode(self.dataset[int(row)]["image"]) for row in rows]
        sizes = {tuple(image.shape) for image in images}
        if len(sizes) > 1:
            raise ValueError(
                f"augmentation on the device needs images of one size, got {sorted(sizes)[:3]}: prepare the data "
                "with prepare_data.py --image_size N"
            )
        return torch.stack(images)

    @staticmethod
    def _decode(stored: dict) -> torch.Tensor:
        data = stored["bytes"] if stored.get("bytes") is not None else Path(stored["path"]).read_bytes()
        image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        return image.permute(1, 2, 0)  # (H, W, 3)


__all__ = ["PIXELS_COLUMN", "PixelReader", "add_pixel_column"]
