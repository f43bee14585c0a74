"""Decode every raw image once at build time: detect corrupt or truncated files, convert to RGB, pre-resize.

What a builder stores in the `image` column for each file:

- the original file (its path; `save_to_disk` embeds the bytes) when it is already 8-bit RGB, needs no EXIF
  rotation and no pre-resizing, so JPEGs are not re-encoded;
- otherwise a lossless PNG of the decoded image: EXIF-rotated, converted to 8-bit RGB by `as_rgb`
  (grayscale, palette, RGBA, CMYK and 16-bit images are converted, not rejected) and, with `image_size=N`,
  resized to exactly (N, N) by `resize_like_transform`. The PNG goes to `cache_dir` when one is given
  (`prepare_dataset` uses a scratch folder next to the output, so a large data set is never held in memory),
  else it is kept in memory as bytes.

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

from .views import as_rgb

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm"})
# Below this many images a process pool costs more than it saves.
MIN_IMAGES_FOR_POOL = 64
_EXIF_ORIENTATION = 0x0112


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


def resize_like_transform(image: Image.Image, image_size: int) -> Image.Image:
    """Resize to exactly (image_size, image_size) as the transforms' first `v2.Resize((s, s))` does."""
    return F.resize(image, [image_size, image_size], interpolation=InterpolationMode.BILINEAR, antialias=True)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def stored_image(image: Image.Image, name: str, cache_path: Path | None) -> str | dict[str, Any]:
    """`image` as a lossless PNG, written to `cache_path` (returns the path) or held as bytes."""
    data = png_bytes(image)
    if cache_path is None:
        return {"bytes": data, "path": name}
    cache_path.write_bytes(data)
    return str(cache_path)


@dataclass(frozen=True)
class ImageResult:
    """What to store in the image column (`value`), or why the file is unusable (`error`)."""

    value: str | dict[str, Any] | None
    error: str | None = None
    size: tuple[int, int] | None = None
    missing: bool = False


def prepare_image(path: str, image_size: int | None, cache_path: str | None) -> ImageResult:
    """Decode `path` once and decide what to store (module docstring). Never raises for a bad file."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; truncated images would pass unnoticed"
        )
    file = Path(path)
    if not file.is_file():
        return ImageResult(None, f"image file {path} does not exist", missing=True)
    try:
        with Image.open(file) as raw:
            raw.load()
            needs_rotation = raw.getexif().get(_EXIF_ORIENTATION, 1) != 1
            original_is_rgb = raw.mode == "RGB"
            image = ImageOps.exif_transpose(raw) if needs_rotation else raw.copy()
        size = image.size
        if image_size is None and original_is_rgb and not needs_rotation:
            return ImageResult(str(file), size=size)
        image = as_rgb(image)
    except Exception as error:  # noqa: BLE001  (PIL raises OSError, SyntaxError, ValueError, ... for bad files)
        return ImageResult(None, f"cannot decode image: {type(error).__name__}: {error}")
    if image_size is not None:
        image = resize_like_transform(image, image_size)
    return ImageResult(
        stored_image(image, file.stem + ".png", Path(cache_path) if cache_path else None), size=size
    )


def _prepare_star(args: tuple[str, int | None, str | None]) -> ImageResult:
    return prepare_image(*args)


def cache_name(index: int, image_id: str) -> str:
    """A unique, file-system-safe PNG name for item `index`."""
    return f"{index:06d}_{re.sub(r'[^A-Za-z0-9._-]', '_', image_id)}.png"


def prepare_images(
    paths: Sequence[str | Path],
    image_ids: Sequence[str],
    image_size: int | None = None,
    cache_dir: str | Path | None = None,
    num_workers: int = 0,
) -> list[ImageResult]:
    """`prepare_image` for every file, in order; `num_workers > 0` decodes in a process pool (same result)."""
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    if cache_dir is not None:
        os.makedirs(cache_dir, exist_ok=True)
    jobs = [
        (
            str(path),
            image_size,
            str(Path(cache_dir) / cache_name(i, image_id)) if cache_dir is not None else None,
        )
        for i, (path, image_id) in enumerate(zip(paths, image_ids, strict=True))
    ]
    if num_workers <= 0 or len(jobs) < MIN_IMAGES_FOR_POOL:
        return [_prepare_star(job) for job in jobs]
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context(method)) as pool:
        return list(pool.map(_prepare_star, jobs, chunksize=8))
