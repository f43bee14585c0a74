"""Images at build time: find a layout's image files, decode every image once, and decide what to store.

What the `image` column holds for each item:

- an image file that is already 8-bit RGB, needs no EXIF rotation and no pre-resizing: the original file (its
  path; `save_to_disk` embeds the bytes), so JPEGs are not re-encoded;
- any other image file: a lossless PNG of the decoded image, EXIF-rotated, converted to 8-bit RGB by `as_rgb`
  (grayscale, palette, RGBA, CMYK and 16-bit images are converted, not rejected) and, with `image_size=N`,
  resized to exactly (N, N) by `resize_like_transform`. A file that is missing, corrupt or truncated is an
  `ImageResult` with an error, never an exception;
- an in-memory image (MedMNIST arrays, the embedded digits): a lossless PNG of it as its reader made it (the
  reader chose its mode), resized with `image_size=N` like a file.

A PNG goes to `cache_dir` when one is given (`prepare_dataset` uses a scratch folder next to the output, so a
large data set is never held in memory), else it is kept in memory as bytes.

Pre-resizing uses the interpolation of the transforms' first step (`v2.Resize((N, N))` on a PIL image: PIL
bilinear with antialiasing), and resizing an (N, N) image to (N, N) is the identity, so training or evaluating
at image_size N on pre-resized data gives the same pixels as on the original files.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageFile, ImageOps
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from ..image_utils import as_rgb
from .validation import NOT_UTF8_NAME, InvalidItems, Location, is_utf8

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm"})
# Below this many images a process pool costs more than it saves.
MIN_IMAGES_FOR_POOL = 64
_EXIF_ORIENTATION = 0x0112

ImageSource = Path | Image.Image
StoredImage = str | dict[str, Any]


def is_image_file(path: Path) -> bool:
    """An image by its extension, and not a hidden file (macOS `._ISIC_...jpg` resource forks)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def images_by_stem(folder: Path) -> dict[str, list[Path]]:
    """The image files directly in `folder`, keyed by file name without extension (sorted, so deterministic).

    Non-image files (ATTRIBUTION.txt, LICENSE.txt, Thumbs.db, ...) and hidden files are not listed.
    """
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and is_image_file(path):
            found.setdefault(path.stem, []).append(path)
    return found


def match_image_files(
    declared: Sequence[tuple[str, Location]],
    all_ids: set[str],
    folder: Path,
    suffix: str,
    declared_in: str,
    invalid: InvalidItems,
) -> dict[str, Path]:
    """Image file of every declared (image_id, location) in a folder of files named by id.

    The file is `folder/<image_id>.*`, else `folder/<image_id><suffix>` (reported as missing when it is
    decoded). Records ids with several files, and image files whose name is neither in `all_ids` (the ids of
    every row, valid or not) nor already reported as invalid (a name that is not UTF-8 as such).
    """
    files = images_by_stem(folder)
    paths: dict[str, Path] = {}
    for image_id, location in declared:
        candidates = files.get(image_id, [])
        if len(candidates) > 1:
            invalid.add(
                image_id, location, f"several image files for this id: {[str(p) for p in candidates]}"
            )
            continue
        paths[image_id] = candidates[0] if candidates else folder / f"{image_id}{suffix}"
    reported = {item.image_id for item in invalid}
    for stem, candidates in files.items():
        if stem not in all_ids and stem not in reported:
            for path in candidates:
                reason = f"image file has no row in {declared_in}" if is_utf8(stem) else NOT_UTF8_NAME
                invalid.add(stem, str(path), reason)
    return paths


def resize_like_transform(image: Image.Image, image_size: int) -> Image.Image:
    """Resize to exactly (image_size, image_size) as the transforms' first `v2.Resize((s, s))` does."""
    return F.resize(image, [image_size, image_size], interpolation=InterpolationMode.BILINEAR, antialias=True)


def stored_image(image: Image.Image, name: str, cache_path: Path | None) -> StoredImage:
    """`image` as a lossless PNG, written to `cache_path` (returns the path) or held as bytes named `name`."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    if cache_path is None:
        return {"bytes": buffer.getvalue(), "path": name}
    cache_path.write_bytes(buffer.getvalue())
    return str(cache_path)


@dataclass(frozen=True)
class ImageResult:
    """What to store in the image column (`value`), or why the image is unusable (`error`, and whether the
    file is `missing` rather than unreadable)."""

    value: StoredImage | None
    error: str | None = None
    missing: bool = False


def prepare_image(
    source: ImageSource, image_id: str, image_size: int | None, cache_path: Path | None
) -> ImageResult:
    """Decode `source` once and decide what to store (module docstring). Never raises for a bad file."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; truncated images would pass unnoticed"
        )
    if isinstance(source, Image.Image):
        image = source if image_size is None else resize_like_transform(source, image_size)
        return ImageResult(stored_image(image, f"{image_id}.png", cache_path))
    if not source.is_file():
        return ImageResult(None, f"image file {source} does not exist", missing=True)
    try:
        with Image.open(source) as raw:
            raw.load()
            needs_rotation = raw.getexif().get(_EXIF_ORIENTATION, 1) != 1
            original_is_rgb = raw.mode == "RGB"
            image = ImageOps.exif_transpose(raw) if needs_rotation else raw.copy()
        if image_size is None and original_is_rgb and not needs_rotation:
            return ImageResult(str(source))
        image = as_rgb(image)
    except Exception as error:  # noqa: BLE001  (PIL raises OSError, SyntaxError, ValueError, ... for bad files)
        return ImageResult(None, f"cannot decode image: {type(error).__name__}: {error}")
    if image_size is not None:
        image = resize_like_transform(image, image_size)
    return ImageResult(stored_image(image, source.stem + ".png", cache_path))


def cache_name(index: int, image_id: str) -> str:
    """A unique, file-system-safe PNG name for item `index`."""
    return f"{index:06d}_{re.sub(r'[^A-Za-z0-9._-]', '_', image_id)}.png"


def prepare_images(
    sources: Sequence[ImageSource],
    image_ids: Sequence[str],
    image_size: int | None = None,
    cache_dir: str | Path | None = None,
    num_workers: int = 0,
) -> list[ImageResult]:
    """`prepare_image` for every image, in order; `num_workers > 0` runs them in a process pool (same result)."""
    if len(sources) != len(image_ids):
        raise ValueError(f"{len(sources)} images but {len(image_ids)} image ids")
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    if cache_dir is not None:
        os.makedirs(cache_dir, exist_ok=True)
    cache_paths = [
        Path(cache_dir) / cache_name(index, image_id) if cache_dir is not None else None
        for index, image_id in enumerate(image_ids)
    ]
    sizes = [image_size] * len(sources)
    if num_workers <= 0 or len(sources) < MIN_IMAGES_FOR_POOL:
        return list(map(prepare_image, sources, image_ids, sizes, cache_paths))
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context(method)) as pool:
        return list(pool.map(prepare_image, sources, image_ids, sizes, cache_paths, chunksize=8))
