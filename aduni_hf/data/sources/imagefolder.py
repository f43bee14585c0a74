"""`imagefolder`: one sub-folder per class (class names = sorted sub-folder names), as torchvision's ImageFolder.

```
data_dir/
  <class a>/img1.jpg, sub/img2.png, ...     (searched recursively; non-image files are ignored)
  <class b>/...
```
The image id is the path relative to data_dir (e.g. "melanoma/img1.jpg"). An image directly in data_dir
belongs to no class and is reported as invalid; so is an empty class folder (with skip_invalid it is left out
of the class names and listed in the report). `class_names` declares the classes: the images of any other folder
are invalid. Without it, a folder whose name looks like a misspelling of another's is refused
(`aduni_hf.data.classes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import datasets

from ..assemble import RawItem, assemble_dataset
from ..classes import Labelled, class_names_of, parse_class_names
from ..images import is_image_file
from ..validation import NOT_UTF8_NAME, DataValidationError, InvalidItems, Location, is_utf8
from .builders import DATASETS


@DATASETS.register("imagefolder")
def build_imagefolder(
    data_dir: str | None = None,
    num_folds: int = 5,
    seed: int = 42,
    image_size: int | None = None,
    skip_invalid: bool = False,
    class_names: str | Sequence[str] | None = None,
    cache_dir: str | None = None,
    num_workers: int = 0,
) -> datasets.Dataset:
    """Image-folder data set from `data_dir` (module docstring); options as in `prepare_dataset`; `class_names`
    declares the classes ("a,b,c" or a list; `aduni_hf.data.classes`)."""
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
        if not is_utf8(class_dir.name):
            invalid.add("", str(class_dir), f"class folder name: {NOT_UTF8_NAME} (left out of the class names)")
        elif files:
            files_by_class[class_dir.name] = files
        else:
            invalid.add("", str(class_dir), "class folder holds no image files (left out of the class names)")
    if not files_by_class:
        raise DataValidationError(f"imagefolder: no class sub-folder with images in {root}")
    labelled = [
        Labelled(path.relative_to(root).as_posix(), folder, Location(str(path)))
        for folder, files in files_by_class.items()
        for path in files
    ]
    names = class_names_of(labelled, parse_class_names(class_names), invalid, what="class folder")
    label_index = {name: index for index, name in enumerate(names)}
    items = [
        RawItem(item.image_id, root / item.image_id, label_index[item.label], item.location)
        for item in labelled
        if item.label in label_index
    ]
    return assemble_dataset(
        items,
        names,
        source="imagefolder",
        num_folds=num_folds,
        seed=seed,
        invalid=invalid,
        image_size=image_size,
        cache_dir=cache_dir,
        num_workers=num_workers,
    )
