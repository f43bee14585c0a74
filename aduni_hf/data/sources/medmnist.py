"""`dermamnist` and `retinamnist`: MedMNIST .npz files as the medmnist package writes them.

An npz holds train_images, train_labels, val_images, val_labels, test_images, test_labels: images uint8
(N, H, W, 3) or (N, H, W), H = W from 28 to 224; labels (N, 1). `data_dir` is the .npz file, or a folder with
`<name>.npz` (or one `<name>_<size>.npz`, or `medmnist_file`). Images are stored as 8-bit RGB. The official
split is kept as a `split` column (train / val / test) and the folds are assigned over all images. No
download: the file must be on disk (`where_to_download` says where it comes from).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from ..assemble import RawItem, assemble_dataset
from ..images import as_rgb
from ..validation import DataValidationError, InvalidItems, Location
from .builders import DATASETS, SOURCE_CHECKS, SOURCE_METRICS

SPLITS = ("train", "val", "test")
# MedMNIST's label order (INFO["dermamnist"]["label"]); the same 7 classes as ISIC2018 / HAM10000.
DERMAMNIST_CLASS_NAMES = (
    "actinic keratoses and intraepithelial carcinoma",
    "basal cell carcinoma",
    "benign keratosis-like lesions",
    "dermatofibroma",
    "melanoma",
    "melanocytic nevi",
    "vascular lesions",
)
RETINAMNIST_CLASS_NAMES = ("0", "1", "2", "3", "4")  # diabetic retinopathy grades, as MedMNIST names them


MEDMNIST_RECORD = "https://zenodo.org/records/10519652"  # MedMNIST v2's .npz files, every data set and size
SIZES = (28, 64, 128, 224)  # <name>.npz holds 28x28 images; <name>_<size>.npz the larger ones


def where_to_download(name: str, python_class: str) -> str:
    """Where the npz of MedMNIST data set `name` comes from, and the file names the reader accepts."""
    return (
        f"the file is {name}.npz (28 px) or {name}_<size>.npz ({', '.join(map(str, SIZES[1:]))} px) of MedMNIST v2 "
        f"(Yang et al., Scientific Data 2023): download it from {MEDMNIST_RECORD}, or pip install medmnist and run "
        f"python -c \"import medmnist; medmnist.{python_class}(split='train', size=224, download=True, root='.')\""
    )


def find_npz(data_dir: Path, name: str, python_class: str, medmnist_file: str | None) -> Path:
    """The npz: data_dir itself, data_dir/medmnist_file, data_dir/<name>.npz or the only data_dir/<name>_*.npz."""
    if data_dir.is_file():
        return data_dir
    if medmnist_file is not None:
        path = Path(medmnist_file)
        path = path if path.is_absolute() or path.is_file() else data_dir / path
        if not path.is_file():
            raise DataValidationError(
                f"{name}: MedMNIST file {path} does not exist; {where_to_download(name, python_class)}"
            )
        return path
    if not data_dir.is_dir():
        raise DataValidationError(
            f"{name}: data_dir {data_dir} does not exist (give the .npz file or its folder); "
            f"{where_to_download(name, python_class)}"
        )
    if (data_dir / f"{name}.npz").is_file():
        return data_dir / f"{name}.npz"
    candidates = sorted(data_dir.glob(f"{name}_*.npz"))
    if not candidates:
        raise DataValidationError(
            f"{name}: no {name}.npz or {name}_<size>.npz in data_dir {data_dir}; {where_to_download(name, python_class)}"
        )
    if len(candidates) > 1:
        raise DataValidationError(
            f"{name}: expected one {name}.npz (or {name}_<size>.npz) in {data_dir}, found "
            f"{[p.name for p in candidates]}; give the one to train on as data_dir"
        )
    return candidates[0]


def locate_npz(name: str, python_class: str, data_dir: str | None, medmnist_file: str | None) -> Path:
    """The npz of data set `name` that `data_dir` (or `medmnist_file`) names (`find_npz`), not read yet."""
    if data_dir is None and medmnist_file is None:
        raise DataValidationError(
            f"{name} needs data_dir: the .npz file or its folder; {where_to_download(name, python_class)}"
        )
    return find_npz(Path(data_dir) if data_dir is not None else Path("."), name, python_class, medmnist_file)


def read_medmnist(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """split -> (images (N, H, W, C) uint8, labels (N,) int64), with the layout checked."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DataValidationError(f"{path}: cannot read as a .npz file ({error})") from error
    with archive:
        missing = [
            f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in archive.files
        ]
        if missing:
            raise DataValidationError(f"{path}: missing array(s) {missing} (found {sorted(archive.files)})")
        splits = {}
        for split in SPLITS:
            images, labels = archive[f"{split}_images"], archive[f"{split}_labels"]
            if (
                images.dtype != np.uint8
                or images.ndim not in (3, 4)
                or (images.ndim == 4 and images.shape[-1] != 3)
            ):
                raise DataValidationError(
                    f"{path}: {split}_images must be uint8 (N, H, W) or (N, H, W, 3), got {images.dtype} {images.shape}"
                )
            if labels.ndim == 2 and labels.shape[1] == 1:
                labels = labels[:, 0]
            if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
                raise DataValidationError(
                    f"{path}: {split}_labels must be integers of shape ({len(images)}, 1), got {labels.dtype} "
                    f"{labels.shape}"
                )
            splits[split] = (images, labels.astype(np.int64))
    return splits


def build_medmnist(
    name: str,
    python_class: str,
    class_names: Sequence[str],
    *,
    data_dir: str | None,
    num_folds: int,
    seed: int,
    image_size: int | None,
    skip_invalid: bool,
    medmnist_file: str | None,
    cache_dir: str | None,
    num_workers: int,
) -> datasets.Dataset:
    """MedMNIST data set `name` (the medmnist package's `python_class`) with labels 0..len(class_names)-1 (module
    docstring)."""
    path = locate_npz(name, python_class, data_dir, medmnist_file)
    invalid = InvalidItems(skip_invalid, source=f"{name} ({path})")
    items = []
    for split, (pixels, labels) in read_medmnist(path).items():
        for index, (array, label) in enumerate(zip(pixels, labels, strict=True)):
            image_id, location = f"{split}_{index:05d}", Location(f"{path.name} {split}_labels[{index}]")
            if not 0 <= label < len(class_names):
                invalid.add(image_id, location, f"label {label} is outside 0..{len(class_names) - 1}")
            else:
                image = as_rgb(Image.fromarray(array))
                items.append(RawItem(image_id, image, int(label), location, extras={"split": split}))
    return assemble_dataset(
        items,
        class_names,
        source=name,
        metrics=SOURCE_METRICS[name],
        num_folds=num_folds,
        seed=seed,
        invalid=invalid,
        image_size=image_size,
        cache_dir=cache_dir,
        num_workers=num_workers,
        extra_metadata={
            "medmnist_file": path.name,
            "split_counts": {s: sum(item.extras["split"] == s for item in items) for s in SPLITS},
        },
    )


def register_medmnist(name: str, python_class: str, class_names: tuple[str, ...], description: str) -> None:
    """Register the MedMNIST data set `name` (the medmnist package's `python_class`) with its class names (the
    reader's options stay named parameters, as `prepare_dataset` reads them from the signature)."""

    def build(
        data_dir: str | None = None,
        num_folds: int = 5,
        seed: int = 42,
        image_size: int | None = None,
        skip_invalid: bool = False,
        medmnist_file: str | None = None,
        cache_dir: str | None = None,
        num_workers: int = 0,
    ) -> datasets.Dataset:
        return build_medmnist(
            name,
            python_class,
            class_names,
            data_dir=data_dir,
            num_folds=num_folds,
            seed=seed,
            image_size=image_size,
            skip_invalid=skip_invalid,
            medmnist_file=medmnist_file,
            cache_dir=cache_dir,
            num_workers=num_workers,
        )

    def check(data_dir: str | None = None, medmnist_file: str | None = None, **_: object) -> None:
        locate_npz(name, python_class, data_dir, medmnist_file)

    build.__name__ = build.__qualname__ = f"build_{name}"
    build.__doc__ = f"{description} (module docstring); options as in `prepare_dataset`."
    DATASETS.register(name)(build)
    SOURCE_CHECKS.register(name)(check)


register_medmnist("dermamnist", "DermaMNIST", DERMAMNIST_CLASS_NAMES, "DermaMNIST: the 7 HAM10000 classes")
register_medmnist("retinamnist", "RetinaMNIST", RETINAMNIST_CLASS_NAMES, "RetinaMNIST: 5 diabetic retinopathy grades")
