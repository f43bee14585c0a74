"""dermamnist / retinamnist builders on .npz files in the medmnist package's format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aduni_hf.data import DataValidationError, build_dataset, check_source, dataset_metadata
from aduni_hf.data.sources.medmnist import DERMAMNIST_CLASS_NAMES
from tests.script_runs import run_script, run_script_here

REPO = Path(__file__).resolve().parents[2]
ZENODO = "https://zenodo.org/records/10519652"  # MedMNIST v2's files


def write_npz(path: Path, num_classes: int, size: int = 28, rgb: bool = True, sizes=(14, 4, 6)) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes, strict=True):
        shape = (n, size, size, 3) if rgb else (n, size, size)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % num_classes).reshape(n, 1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def test_dermamnist_classes_splits_and_folds(tmp_path):
    path = write_npz(tmp_path / "dermamnist.npz", 7)
    for data_dir in (path, tmp_path):
        ds = build_dataset("dermamnist", str(data_dir), num_folds=2)
        assert ds.features["label"].names == list(DERMAMNIST_CLASS_NAMES)
        assert ds.column_names == ["image", "label", "fold", "image_id", "split"]
        assert [ds["split"].count(s) for s in ("train", "val", "test")] == [14, 4, 6]
        assert ds[0]["image_id"] == "train_00000" and ds[0]["image"].size == (28, 28)
        assert set(ds["fold"]) == {0, 1}
    assert dataset_metadata(ds)["split_counts"] == {"train": 14, "val": 4, "test": 6}


def test_retinamnist_grayscale_and_resize(tmp_path):
    write_npz(tmp_path / "retinamnist_64.npz", 5, size=64, rgb=False)
    ds = build_dataset("retinamnist", str(tmp_path), num_folds=2, image_size=32)
    assert ds.features["label"].names == ["0", "1", "2", "3", "4"]
    assert ds[0]["image"].mode == "RGB" and ds[0]["image"].size == (32, 32)
    assert dataset_metadata(ds)["image_size"] == 32


def test_label_out_of_range(tmp_path):
    path = write_npz(tmp_path / "retinamnist.npz", 5)
    arrays = dict(np.load(path))
    arrays["val_labels"][2, 0] = 7
    np.savez(path, **arrays)
    with pytest.raises(
        DataValidationError, match=r"retinamnist.npz val_labels\[2\] \[val_00002\]: label 7 is outside 0..4"
    ):
        build_dataset("retinamnist", str(path), num_folds=2)
    ds = build_dataset("retinamnist", str(path), num_folds=2, skip_invalid=True)
    assert "val_00002" not in ds["image_id"] and len(ds) == 23
    assert dataset_metadata(ds)["invalid_items"][0]["image_id"] == "val_00002"


def test_bad_files(tmp_path):
    path = write_npz(tmp_path / "dermamnist.npz", 7)
    arrays = dict(np.load(path))
    del arrays["test_labels"]
    np.savez(path, **arrays)
    with pytest.raises(DataValidationError, match=r"missing array\(s\) \['test_labels'\]"):
        build_dataset("dermamnist", str(path))
    path.write_bytes(b"not a zip")
    with pytest.raises(DataValidationError, match="cannot read as a .npz"):
        build_dataset("dermamnist", str(path))


def test_a_missing_file_names_data_dir_and_where_the_file_comes_from(tmp_path):
    for data_dir, message in [
        (None, "dermamnist needs data_dir: the .npz file or its folder; the file is dermamnist.npz (28 px) or "
               "dermamnist_<size>.npz (64, 128, 224 px) of MedMNIST v2"),
        (tmp_path / "nowhere", f"dermamnist: data_dir {tmp_path / 'nowhere'} does not exist"),
        (tmp_path, f"dermamnist: no dermamnist.npz or dermamnist_<size>.npz in data_dir {tmp_path}"),
    ]:  # fmt: skip
        for refuse in (build_dataset, check_source):
            with pytest.raises(DataValidationError) as info:
                refuse("dermamnist", None if data_dir is None else str(data_dir))
            assert str(info.value).startswith(message) and ZENODO in str(info.value)
            assert "medmnist.DermaMNIST(split='train', size=224, download=True" in str(info.value)
    write_npz(tmp_path / "dermamnist_64.npz", 7)
    write_npz(tmp_path / "dermamnist_224.npz", 7)
    with pytest.raises(DataValidationError, match=r"found \['dermamnist_224.npz', 'dermamnist_64.npz'\]; give the one"):
        check_source("dermamnist", str(tmp_path))
    (tmp_path / "dermamnist.npz").write_bytes(b"not a zip")
    check_source("dermamnist", str(tmp_path))  # found where data_dir says: the check does not read it
    with pytest.raises(DataValidationError, match="cannot read as a .npz"):
        build_dataset("dermamnist", str(tmp_path))


@pytest.mark.parametrize(
    ("run", "command"),
    [
        (run_script_here, ["train.py", str(REPO / "configs" / "demo.yaml"), "--dataset", "dermamnist"]),
        (run_script_here, ["cross_validate.py", str(REPO / "configs" / "demo.yaml"), "--dataset", "dermamnist"]),
        (run_script, ["prepare_data.py", "--dataset", "dermamnist", "--output_dir", "prepared"]),
    ],
    ids=["train.py", "cross_validate.py", "prepare_data.py"],
)
@pytest.mark.slow
def test_every_script_refuses_a_missing_file_in_one_line(tmp_path, run, command):
    """The field train.py and prepare_data.py both accept (data_dir), the file name, and where it comes from;
    nothing written (prepare_data.py as a new process; train.py and cross_validate.py, whose checks are one, in this
    process: tests/script_runs.py)."""
    result = run(*command, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: ") and "dermamnist needs data_dir: the .npz file or its folder" in lines[0]
    assert "dermamnist.npz" in lines[0] and ZENODO in lines[0]
    assert list(tmp_path.iterdir()) == []
