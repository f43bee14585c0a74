"""imagefolder builder: class names from sub-folders, recursive ids, empty classes, stray and corrupt images."""

from __future__ import annotations

from pathlib import Path

import pytest

from aduni_hf.data import DataValidationError, build_dataset, dataset_metadata
from tests.data.layouts import photo


def make_folder(root: Path, counts: dict[str, int]) -> Path:
    for index, (name, count) in enumerate(counts.items()):
        (root / name / "sub").mkdir(parents=True)
        for k in range(count):
            folder = root / name / ("sub" if k % 2 else "")
            photo(20, 16, seed=10 * index + k).save(folder / f"img{k}.png")
        (root / name / "notes.txt").write_text("not an image\n")
    return root


def test_imagefolder_classes_are_sorted_folder_names(tmp_path):
    root = make_folder(tmp_path / "raw", {"nevus": 4, "melanoma": 3, "bcc": 3})
    ds = build_dataset("imagefolder", str(root), num_folds=3)
    assert ds.features["label"].names == ["bcc", "melanoma", "nevus"]
    assert sorted(ds["label"]) == [0] * 3 + [1] * 3 + [2] * 4
    assert "melanoma/sub/img1.png" in ds["image_id"] and "melanoma/img0.png" in ds["image_id"]


def test_imagefolder_empty_class_and_stray_image(tmp_path):
    root = make_folder(tmp_path / "raw", {"a": 3, "b": 3})
    (root / "empty").mkdir()
    photo(20, 16, 0).save(root / "stray.png")
    with pytest.raises(DataValidationError) as error:
        build_dataset("imagefolder", str(root), num_folds=3)
    assert f"{root / 'empty'}: class folder holds no image files" in str(error.value)
    assert f"{root / 'stray.png'} [stray.png]: image is not inside a class sub-folder" in str(error.value)
    ds = build_dataset("imagefolder", str(root), num_folds=3, skip_invalid=True)
    assert ds.features["label"].names == ["a", "b"]
    assert len(dataset_metadata(ds)["invalid_items"]) == 2


def test_imagefolder_corrupt_image(tmp_path):
    root = make_folder(tmp_path / "raw", {"a": 4, "b": 3})
    (root / "a" / "img2.png").write_bytes(b"broken")
    with pytest.raises(DataValidationError, match="a/img2.png.*cannot decode image"):
        build_dataset("imagefolder", str(root), num_folds=3)
    ds = build_dataset("imagefolder", str(root), num_folds=3, skip_invalid=True)
    assert "a/img2.png" not in ds["image_id"] and len(ds) == 6
