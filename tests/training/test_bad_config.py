"""Bad configurations fail before any image is read, with a message naming the field and the valid values.

The data set here is a real `save_to_disk` folder whose every image is garbage bytes: a check that decoded an
image (or trained) would fail with an image error instead of the configuration error asserted here.
"""

import json
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from aduni_hf import AdUniConfig, AdUniForImageClassification
from aduni_hf.training import ARGUMENT_CLASSES, RecipeError, parse_recipe, run_training

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "configs" / "demo.yaml")
CLASSES = ["nevus", "melanoma", "keratosis"]


@pytest.fixture(scope="module")
def unreadable_data(tmp_path_factory):
    """A 5-fold data set in the prepared layout (image, ClassLabel label, fold, image_id; metadata) whose image
    bytes are not images."""
    path = tmp_path_factory.mktemp("data") / "prepared"
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=CLASSES),
            "fold": datasets.Value("int64"),
            "image_id": datasets.Value("string"),
        }
    )
    num_images = 15
    dataset = datasets.Dataset.from_dict(
        {
            "image": [{"bytes": b"these bytes are not an image", "path": None}] * num_images,
            "label": [i % 3 for i in range(num_images)],
            "fold": [i % 5 for i in range(num_images)],
            "image_id": [f"img_{i}" for i in range(num_images)],
        },
        features=features,
        info=datasets.DatasetInfo(description=json.dumps({"source": "test", "num_folds": 5}), features=features),
    )
    dataset.save_to_disk(str(path))
    return path


def train(tmp_path, data_path, *flags: str, output_dir: Path | None = None):
    output_dir = output_dir or tmp_path / "out"
    arguments = parse_recipe(
        ARGUMENT_CLASSES,
        [DEMO, "--dataset_path", str(data_path), "--output_dir", str(output_dir), "--num_train_epochs", "1", *flags],
    )
    return run_training(*arguments)


def assert_nothing_written(output_dir: Path) -> None:
    assert not output_dir.exists() or not any(output_dir.iterdir()), list(output_dir.iterdir())


def test_test_fold_that_does_not_exist(tmp_path, unreadable_data):
    with pytest.raises(RecipeError, match=r"test_fold=5 does not exist in .*prepared: its folds are 0\.\.4"):
        train(tmp_path, unreadable_data, "--test_fold", "5")
    assert_nothing_written(tmp_path / "out")


def test_test_fold_that_does_not_exist_in_a_built_data_set():
    with pytest.raises(RecipeError, match=r"test_fold=5 does not exist: digits_lt is split into num_folds=5 "
                                          r"folds, 0\.\.4"):  # fmt: skip
        parse_recipe(ARGUMENT_CLASSES, [DEMO, "--test_fold", "5"])


def test_dataset_path_that_is_not_a_prepared_data_set(tmp_path, unreadable_data):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "ISIC_0024306.jpg").write_bytes(b"\xff\xd8 a raw download")
    for path, why in ((raw, "is not a prepared data set"), (tmp_path / "nowhere", "no such folder")):
        with pytest.raises(RecipeError, match=rf"dataset_path='{path}'(:)? {why}.*prepare_data\.py --dataset "
                                              r"\{.*isic2018.*\}"):  # fmt: skip
            train(tmp_path, path)
    assert_nothing_written(tmp_path / "out")


def test_prepared_data_whose_classes_differ_from_the_start_model(tmp_path, unreadable_data):
    config = AdUniConfig(image_size=32, id2label=dict(enumerate(["benign", "malignant", "other"])))
    config.label2id = {name: i for i, name in config.id2label.items()}
    AdUniForImageClassification(config).save_pretrained(tmp_path / "model")
    with pytest.raises(RecipeError) as error:
        train(tmp_path, unreadable_data, "--model_name_or_path", str(tmp_path / "model"))
    message = str(error.value)
    assert "predicts ['benign', 'malignant', 'other']" in message and f"has classes {CLASSES}" in message
    assert "--ignore_mismatched_sizes true" in message
    assert_nothing_written(tmp_path / "out")


def test_load_best_model_at_end_without_a_validation_split(tmp_path, unreadable_data):
    with pytest.raises(RecipeError, match=r"load_best_model_at_end .* but val_fraction is 0"):
        train(tmp_path, unreadable_data, "--load_best_model_at_end", "true", "--save_strategy", "epoch",
              "--val_fraction", "0")  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_unwritable_output_dir(tmp_path, unreadable_data):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(RecipeError, match=r"output_dir='.*a_file/out' is not writable"):
        train(tmp_path, unreadable_data, output_dir=blocker / "out")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lr_scheduler_type", "cosine"], r"lr_scheduler_type configure the Trainer's optimiser and scheduler, "
                                            r"which optimizer_recipe 'official' replaces"),
        (["--optim", "adamw_torch", "--warmup_steps", "5"], r"optim, warmup_steps configure the Trainer's"),
        (["--optimizer_recipe", "trainer"], r"warmup_epochs configure optimizer_recipe 'official', but "
                                            r"optimizer_recipe is 'trainer'"),
    ],
)  # fmt: skip
def test_optimiser_fields_the_recipe_does_not_use(tmp_path, unreadable_data, flags, message):
    with pytest.raises(RecipeError, match=message):
        train(tmp_path, unreadable_data, *flags)  # the demo recipe sets warmup_epochs: 2
    assert not (tmp_path / "out").exists()


def test_train_script_reports_it_as_an_error_line(tmp_path, unreadable_data):
    result = subprocess.run(
        [sys.executable, "scripts/train.py", DEMO, "--dataset_path", str(unreadable_data), "--test_fold", "9",
         "--output_dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: test_fold=9 does not exist in")
    assert "Traceback" not in result.stderr
