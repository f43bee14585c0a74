"""`imagefolder`: one sub-folder per class (class names = sorted sub-folder names), as torchvision's ImageFolder.

```
data_dir/
  <class a>/img1.jpg, sub/img2.png, ...     (searched recursively; non-image files are ignored)
  <class b>/...
```
The image id is the path relative to data_dir (e.g. "melanoma/img1.jpg"). An image directly in data_dir
belongs to no class and is reported as invalid; so is an empty class folder (with skip_invalid it is left out
of the class names and listed in the report).
"""

from __future__ import annotations

from pathlib import Path

import datasets

from ..assemble import RawItem, assemble_dataset
from ..images import is_image_file
from ..validation import DataValidationError, InvalidItems, Location
from .builders import DATASETS


@DATASETS.register("imagefolder")
def build_imagefolder(
    data_dir: str | None = None,
    num_folds: int = 5,
    seed: int = 42,
    image_size: int | None = None,
    skip_invalid: bool = False,
    cache_dir: str | None = None,
    num_workers: int = 0,
) -> datasets.Dataset:
    """Image-folder data set from `data_dir` (module docstring); options as in `prepare_dataset`."""
    if data_dir is None:
        raise ValueError("imagefolder needs data_dir: a folder with one sub-folder per class")
    root = Path(data_dir)
    if not root.is_dir():
        raise DataValidationError(f"imagefolder: data_dir {root} is not a folder")
    invalid = InvalidItems(skip_invalid, source=f"imagefolder ({root})")
    for path in sorted(root.iterdir()):
        if path.is_file() and is_image_file(path):
            invalid.add(path.name, str(path), "image is not inside a class sub-folder")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files_by_class: dict[str, list[Path]] = {}
    for class_dir in class_dirs:
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and is_image_file(p))
        if files:
            files_by_class[class_dir.name] = files
        else:
            invalid.add("", str(class_dir), "class folder holds no image files (left out of the class names)")
    if not files_by_class:
        raise DataValidationError(f"imagefolder: no class sub-folder with images in {root}")
    class_names = sorted(files_by_class)
    items = [
        RawItem(path.relative_to(root).as_posix(), path, label, Location(str(path)))
        for label, name in enumerate(class_names)
        for path in files_by_class[name]
    ]
    return assemble_dataset(
        items,
        class_names,
        source="imagefolder",
        num_folds=num_folds,
        seed=seed,
        invalid=invalid,
        image_size=image_size,
        cache_dir=cache_dir,
        num_workers=num_workers,
    )
