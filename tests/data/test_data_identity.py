"""What identifies the data of a run on resume: ids, labels and folds, and the content of every image.

`datasets`' own fingerprint (state.json's `_fingerprint`, `Dataset._fingerprint` after `load_from_disk`) does not
serve: for a data set stored from the original files it hashes their paths, so other pixels under the same names
keep it, and for pre-resized images it hashes a temporary path, so preparing the same images twice changes it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from aduni_hf.data import prepare_dataset
from aduni_hf.recipes.arguments import DataArguments, ModelArguments
from aduni_hf.recipes.run_data import read_run_data
from aduni_hf.recipes.run_folder import EARLIER_DEFAULTS, RunFolderError, check_resume, run_record
from aduni_hf.training.checkpoints import RUN_RECORD_NAME
from tests.data.layouts import photo

# The same recipe in the checkpoint and now: only the data differ (fields added later take their earlier values).
RECIPE = {"DataArguments": {"test_fold": 0, "val_fraction": 0.0}, "AddedLater": dict(EARLIER_DEFAULTS)}


def data_record_of(prepared: Path) -> dict:
    """The data part of a run record, made by the run's own reader of a prepared folder."""
    data_args = DataArguments(dataset_path=str(prepared), test_fold=0, val_fraction=0.0)
    return read_run_data(data_args, ModelArguments(image_size=32)).record


def write_checkpoint(folder: Path, data: dict) -> Path:
    """A checkpoint folder holding only its run record (all `check_resume` reads)."""
    folder.mkdir(parents=True)
    (folder / RUN_RECORD_NAME).write_text(json.dumps(run_record(RECIPE, data, num_processes=1)))
    return folder


@pytest.mark.parametrize("image_size", [None, 24])  # originals stored as they are; pre-resized PNGs
def test_resume_refuses_other_pixels_under_the_same_file_names(isic, tmp_path, image_size):
    raw = isic()
    prepared = tmp_path / "prepared"
    prepare_dataset("isic2018", str(raw.root), prepared, num_folds=3, image_size=image_size)
    checkpoint = write_checkpoint(tmp_path / "run" / "checkpoint-4", data_record_of(prepared))

    moved = Path(shutil.copytree(prepared, tmp_path / "elsewhere"))
    assert check_resume(checkpoint, run_record(RECIPE, data_record_of(moved), 1)) == []
    prepare_dataset("isic2018", str(raw.root), prepared, num_folds=3, image_size=image_size, overwrite=True)
    assert check_resume(checkpoint, run_record(RECIPE, data_record_of(prepared), 1)) == []  # same images again

    for index, image_id in enumerate(raw.ids):  # other pixels under every file name
        photo(60, 45, seed=700 + index).save(raw.image(image_id), format="JPEG", quality=90)
    prepare_dataset("isic2018", str(raw.root), prepared, num_folds=3, image_size=image_size, overwrite=True)
    with pytest.raises(RunFolderError, match="data set: the content of its images differs from the checkpoint's"):
        check_resume(checkpoint, run_record(RECIPE, data_record_of(prepared), 1))


def test_a_checkpoint_recorded_before_the_content_fingerprint_resumes_with_a_warning(isic, tmp_path, caplog):
    """Such a checkpoint can only have been written on the data the folder then held; refusing it would strand
    every run interrupted before the upgrade, so it resumes, and the log says the images were not compared."""
    raw = isic()
    prepared = tmp_path / "prepared"
    prepare_dataset("isic2018", str(raw.root), prepared, num_folds=3)
    current = data_record_of(prepared)
    older = {key: value for key, value in current.items() if key != "content_fingerprint"}
    checkpoint = write_checkpoint(tmp_path / "run" / "checkpoint-4", older)
    with caplog.at_level("WARNING", logger="aduni_hf.recipes.run_folder"):
        assert check_resume(checkpoint, run_record(RECIPE, current, 1)) == []
    assert "records no content_fingerprint of the data set (written before it was recorded): not compared" in caplog.text
    with pytest.raises(RunFolderError, match="its digest differs"):  # what it does record is still compared
        check_resume(checkpoint, run_record(RECIPE, {**current, "digest": "other"}, 1))


def test_a_data_set_prepared_before_the_fingerprint_gets_the_same_one_from_its_images(isic, tmp_path):
    """The fingerprint of a prepared folder without one in its metadata is computed from the stored image bytes,
    and equals the one recorded when preparing."""
    raw = isic()
    prepared = tmp_path / "prepared"
    prepare_dataset("isic2018", str(raw.root), prepared, num_folds=3, image_size=24)
    recorded = data_record_of(prepared)["content_fingerprint"]
    info_path = prepared / "dataset_info.json"
    info = json.loads(info_path.read_text())
    metadata = json.loads(info["description"])
    del metadata["content_fingerprint"]
    info_path.write_text(json.dumps({**info, "description": json.dumps(metadata)}))
    assert data_record_of(prepared)["content_fingerprint"] == recorded
