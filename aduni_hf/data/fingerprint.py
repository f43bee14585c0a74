"""The content fingerprint of a data set: a SHA-256 over the bytes of every stored image, in row order.

A resume compares it with the checkpoint's (`aduni_hf.recipes.run_data.data_record`), so a data set prepared
again from other images under the same file names is refused. `datasets`' own fingerprint cannot serve (checked
with datasets 5.2): `Dataset._fingerprint`, kept in state.json by `save_to_disk`, is a hash of the in-memory table
when the data set is built, which holds the *paths* of original files (other pixels under the same names keep it)
and of pre-resized PNGs in a temporary folder (the same images prepared twice change it).

`assemble_dataset` records the fingerprint in the metadata while it still has the images at hand; for a data set
saved without one (prepared by an earlier version) it is computed here from the embedded bytes, which are the same
bytes, so both ways give the same value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import datasets

FINGERPRINT_KEY = "content_fingerprint"
_BATCH = 256  # rows read at once from a saved data set


def stored_bytes(stored: str | dict[str, Any]) -> bytes:
    """The bytes of a stored image: its `bytes`, else the file at its path (a path string is a file)."""
    if isinstance(stored, dict):
        if stored.get("bytes") is not None:
            return stored["bytes"]
        stored = stored["path"]
    return Path(stored).read_bytes()


def content_fingerprint(images: Iterable[str | dict[str, Any]]) -> str:
    """SHA-256 over the SHA-256 of each image's bytes, in order (so the image boundaries count)."""
    total = hashlib.sha256()
    for stored in images:
        total.update(hashlib.sha256(stored_bytes(stored)).digest())
    return total.hexdigest()


def dataset_content_fingerprint(dataset: datasets.Dataset, metadata: dict[str, Any]) -> str:
    """The fingerprint recorded in `metadata` (`dataset_metadata(dataset)`), else computed from the image column's
    stored bytes (one read of every image, no decoding)."""
    if metadata.get(FINGERPRINT_KEY):
        return metadata[FINGERPRINT_KEY]
    raw = dataset.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
    return content_fingerprint(
        stored for start in range(0, len(raw), _BATCH) for stored in raw[start : start + _BATCH]["image"]
    )
