"""The paper recipes train on a data set prepared from the official layout."""

from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml

from aduni_hf.data import prepare_dataset
from aduni_hf.recipes import ARGUMENT_CLASSES, parse_recipe, run_training
from tests.data.layouts import make_aptos, make_isic

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.slow
@pytest.mark.parametrize(
    ("recipe", "make_raw", "name", "per_class"),
    [
        ("isic2018_aduni.yaml", make_isic, "isic2018", (10, 16, 8, 6, 8, 6, 6)),
        ("aptos2019_aduni.yaml", make_aptos, "aptos2019", (16, 8, 10, 6, 6)),
    ],
)
def test_recipe_trains_on_a_prepared_dataset(tmp_path, recipe, make_raw, name, per_class):
    make_raw(tmp_path / "raw", per_class=per_class)
    prepared = prepare_dataset(name, str(tmp_path / "raw"), str(tmp_path / "prepared"), image_size=32)
    output_dir = tmp_path / "run"
    arguments = parse_recipe(
        ARGUMENT_CLASSES,
        [str(REPO / "configs" / recipe), "--dataset_path", str(prepared.output_dir), "--test_fold", "2",
         "--image_size", "32", "--num_train_epochs", "1", "--per_device_train_batch_size", "16",
         "--dataloader_num_workers", "0", "--output_dir", str(output_dir)],
    )  # fmt: skip
    results = run_training(*arguments)
    assert 0 <= results["test_macro_f1"] <= 1

    run_config = yaml.safe_load((output_dir / "run_config.yaml").read_text())["data"]
    dataset = datasets.load_from_disk(str(prepared.output_dir))
    folds, labels = np.asarray(dataset["fold"]), np.asarray(dataset["label"])
    sizes = run_config["num_images"]
    assert sizes["test"] == int((folds == 2).sum())
    assert sizes["train"] + sizes["val"] == int((folds != 2).sum())
    counts = np.asarray(run_config["train_class_counts"])
    assert counts.sum() == sizes["train"]  # only the training images: no test fold, no validation images
    assert (counts <= np.bincount(labels[folds != 2], minlength=len(per_class))).all()
    assert run_config["class_names"] == dataset.features["label"].names
