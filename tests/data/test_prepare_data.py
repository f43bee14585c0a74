"""prepare_dataset and scripts/prepare_data.py: saved columns, metadata after load_from_disk, atomic writes."""

from __future__ import annotations

import csv
import runpy
import subprocess
from pathlib import Path

import datasets
import pytest

from aduni_hf.data import DataValidationError, dataset_metadata, prepare_dataset
from tests.data.layouts import write_truncated
from tests.script_runs import run_script_here

ROOT = Path(__file__).resolve().parents[2]


def prepare_data_script(*args: str) -> subprocess.CompletedProcess:
    return run_script_here("prepare_data.py", *args, cwd=ROOT)


def test_saved_dataset_and_metadata_survive_load(isic, tmp_path):
    raw = isic()
    out = tmp_path / "out"
    result = prepare_dataset("isic2018", str(raw.root), out, num_folds=3, seed=5, image_size=24)
    loaded = datasets.load_from_disk(str(out))
    assert isinstance(loaded, datasets.Dataset)
    assert loaded.column_names == ["image", "label", "fold", "image_id", "group", "pixels"]  # pixels: image_size given
    assert loaded.features["label"].names == ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    assert loaded[0]["image"].size == (24, 24)
    meta = dataset_metadata(loaded)
    assert meta["fold_seed"] == 5 and meta["num_folds"] == 3 and meta["image_size"] == 24
    assert meta["fold_method"] == "StratifiedGroupKFold"
    assert result.num_images == len(loaded) == len(raw.ids)
    assert sorted(p.name for p in tmp_path.iterdir()) == [raw.root.name, "out"]  # no temporary folder left
    assert (out / "prepare_config.json").is_file()


def test_failure_leaves_nothing_and_existing_output_is_kept(aptos, tmp_path):
    raw = aptos()
    write_truncated(raw.image(raw.ids[0]))
    out = tmp_path / "out"
    with pytest.raises(DataValidationError):
        prepare_dataset("aptos2019", str(raw.root), out, num_folds=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [raw.root.name]
    out.mkdir()
    (out / "keep.txt").write_text("previous run")
    with pytest.raises(FileExistsError, match="not empty; pass --overwrite"):
        prepare_dataset("aptos2019", str(raw.root), out, num_folds=3, skip_invalid=True)
    with pytest.raises(DataValidationError):
        prepare_dataset("aptos2019", str(raw.root), out, num_folds=3, overwrite=True)
    assert (out / "keep.txt").read_text() == "previous run"
    prepare_dataset("aptos2019", str(raw.root), out, num_folds=3, overwrite=True, skip_invalid=True)
    assert not (out / "keep.txt").exists() and len(datasets.load_from_disk(str(out))) == len(raw.ids) - 1
    with pytest.raises(ValueError, match="holds the raw data"):
        prepare_dataset("aptos2019", str(raw.root), raw.root.parent, overwrite=True)


def test_script_end_to_end(aptos, tmp_path):
    raw = aptos()
    raw.image(raw.ids[1]).write_bytes(b"not a png")
    out = tmp_path / "prepared"
    failed = prepare_data_script(
        "--dataset", "aptos2019", "--data_dir", str(raw.root), "--output_dir", str(out), "--num_folds", "3"
    )
    assert failed.returncode == 2
    assert f"{raw.image(raw.ids[1])} [{raw.ids[1]}]: cannot decode image" in failed.stderr
    assert not out.exists()

    args = [
        "--dataset",
        "aptos2019",
        "--data_dir",
        str(raw.root),
        "--output_dir",
        str(out),
        "--num_folds",
        "3",
        "--image_size",
        "32",
        "--skip_invalid",
    ]
    done = prepare_data_script(*args)
    assert done.returncode == 0, done.stderr
    assert "left out 1 invalid item(s)" in done.stdout and raw.ids[1] in done.stdout
    with open(out / "invalid_items.csv", newline="") as handle:
        (item,) = list(csv.DictReader(handle))
    assert item["image_id"] == raw.ids[1] and "cannot decode image" in item["reason"]
    loaded = datasets.load_from_disk(str(out))
    assert loaded.column_names == ["image", "label", "fold", "image_id", "pixels"] and len(loaded) == len(raw.ids) - 1
    assert {loaded[i]["image"].size for i in range(3)} == {(32, 32)}
    assert dataset_metadata(loaded)["image_size"] == 32


def test_script_refuses_to_overwrite(aptos, tmp_path, capsys):
    raw = aptos()
    out = tmp_path / "prepared"
    out.mkdir()
    (out / "old.txt").write_text("keep")
    script = runpy.run_path(
        str(ROOT / "scripts" / "prepare_data.py")
    )  # main() in-process: spares a slow start-up
    args = [
        "--dataset",
        "aptos2019",
        "--data_dir",
        str(raw.root),
        "--output_dir",
        str(out),
        "--num_folds",
        "3",
    ]
    assert script["main"](args) == 2
    assert "pass --overwrite" in capsys.readouterr().err and (out / "old.txt").exists()
    assert script["main"]([*args, "--overwrite", "--num_workers", "0"]) == 0
    assert not (out / "old.txt").exists() and len(datasets.load_from_disk(str(out))) == len(raw.ids)


def test_digits_lt_through_prepare(tmp_path):
    out = tmp_path / "digits"
    prepare_dataset("digits_lt", None, out, skip_invalid=True, num_workers=2)
    assert len(datasets.load_from_disk(str(out))) > 0
    with pytest.raises(ValueError, match="does not take option 'image_size'"):
        prepare_dataset("digits_lt", None, tmp_path / "other", image_size=32)
    assert not (tmp_path / "other").exists()
