"""Tiny raw data sets written in the exact official layouts, with real image files (PIL), for the builders.

Imported by the tests as `tests.data.layouts`; the fixtures that use them are in conftest.py.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ISIC_CLASSES = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
ISIC_INPUT = "ISIC2018_Task3_Training_Input"
ISIC_GT_DIR = "ISIC2018_Task3_Training_GroundTruth"
ISIC_GT_CSV = "ISIC2018_Task3_Training_GroundTruth.csv"
ISIC_GROUPINGS = "ISIC2018_Task3_Training_LesionGroupings.csv"


def photo(width: int, height: int, seed: int) -> Image.Image:
    """A smooth RGB image with some noise: compresses like a photograph, distinct per seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)), np.full_like(x, seed % 256)], -1
    )
    noise = rng.integers(0, 40, size=(height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), mode="RGB")


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Write a CSV with `header` and `rows`, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


@dataclass
class IsicRaw:
    """An ISIC2018 Task 3 download: `labels[i]` is the class index of `ids[i]`, `lesions[i]` its lesion."""

    root: Path
    ids: list[str]
    labels: list[int]
    lesions: list[str] = field(default_factory=list)

    @property
    def input_dir(self) -> Path:
        return self.root / ISIC_INPUT

    @property
    def ground_truth(self) -> Path:
        return self.root / ISIC_GT_DIR / ISIC_GT_CSV

    def image(self, image_id: str) -> Path:
        return self.input_dir / f"{image_id}.jpg"

    def gt_rows(self) -> list[list[str]]:
        return [
            [image_id] + ["1.0" if c == label else "0.0" for c in range(len(ISIC_CLASSES))]
            for image_id, label in zip(self.ids, self.labels, strict=True)
        ]

    def write_ground_truth(self, rows: Sequence[Sequence[object]] | None = None) -> None:
        write_csv(self.ground_truth, ["image", *ISIC_CLASSES], self.gt_rows() if rows is None else rows)


def make_isic(
    root: Path,
    per_class: Sequence[int] = (4, 6, 3, 3, 3, 3, 3),
    images_per_lesion: int = 2,
    groupings: str | None = "root",
    size: tuple[int, int] = (60, 45),
) -> IsicRaw:
    """Write an ISIC2018 Task 3 training set: JPEGs, ATTRIBUTION/LICENSE files, one-hot CSV (0.0/1.0), and the
    lesion groupings CSV at the root (`groupings="root"`), in the GroundTruth folder ("gt"), or none (None)."""
    raw = IsicRaw(root=root, ids=[], labels=[])
    raw.input_dir.mkdir(parents=True)
    (raw.input_dir / "ATTRIBUTION.txt").write_text("Images by the ISIC archive, CC-BY-NC.\n")
    (raw.input_dir / "LICENSE.txt").write_text("CC-BY-NC 4.0\n")
    index = 0
    for label, count in enumerate(per_class):
        for k in range(count):
            image_id = f"ISIC_{24306 + index:07d}"
            photo(*size, seed=index).save(raw.image(image_id), format="JPEG", quality=90)
            raw.ids.append(image_id)
            raw.labels.append(label)
            raw.lesions.append(f"HAM_{label:02d}{k // images_per_lesion:05d}")
            index += 1
    raw.write_ground_truth()
    if groupings is not None:
        folder = root if groupings == "root" else root / ISIC_GT_DIR
        rows = [[i, lesion, "histopathology"] for i, lesion in zip(raw.ids, raw.lesions, strict=True)]
        write_csv(folder / ISIC_GROUPINGS, ["image", "lesion_id", "diagnosis_confirm_type"], rows)
    return raw


@dataclass
class AptosRaw:
    """An APTOS2019 download: train.csv and train_images/<id_code>.png."""

    root: Path
    ids: list[str]
    labels: list[int]

    @property
    def csv(self) -> Path:
        return self.root / "train.csv"

    def image(self, image_id: str) -> Path:
        return self.root / "train_images" / f"{image_id}.png"

    def write_csv(self, rows: Sequence[Sequence[object]] | None = None) -> None:
        rows = [[i, y] for i, y in zip(self.ids, self.labels, strict=True)] if rows is None else rows
        write_csv(self.csv, ["id_code", "diagnosis"], rows)


def make_aptos(
    root: Path, per_class: Sequence[int] = (6, 4, 5, 4, 4), sizes: Sequence[tuple[int, int]] | None = None
) -> AptosRaw:
    """Write an APTOS2019 training set with PNGs of varying sizes."""
    sizes = sizes or [(64, 48), (50, 50), (80, 60), (45, 70)]
    raw = AptosRaw(root=root, ids=[], labels=[])
    (root / "train_images").mkdir(parents=True)
    index = 0
    for label, count in enumerate(per_class):
        for _ in range(count):
            image_id = f"{(index * 2654435761) % 16**12:012x}"
            photo(*sizes[index % len(sizes)], seed=100 + index).save(raw.image(image_id), format="PNG")
            raw.ids.append(image_id)
            raw.labels.append(label)
            index += 1
    raw.write_csv()
    return raw


def write_truncated(path: Path) -> None:
    """Keep the first half of an image file: PIL opens it but cannot decode it fully."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
