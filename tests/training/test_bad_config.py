"""Bad configurations fail before any image is read, with a message naming the field and the valid values.

The data set here is a real `save_to_disk` folder whose every image is garbage bytes: a check that decoded an
image (or trained) would fail with an image error instead of the configuration error asserted here.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest

from aduni_hf import AdUniConfig, AdUniForImageClassification
from aduni_hf.recipes import ARGUMENT_CLASSES, RecipeError, parse_recipe, run_training
from tests.script_runs import run_script_here

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
    result = run_script_here(
        "train.py", DEMO, "--dataset_path", str(unreadable_data), "--test_fold", "9", "--output_dir",
        str(tmp_path / "out"), cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: test_fold=9 does not exist in")
    assert "Traceback" not in result.stderr


# ---- cross-field checks that used to fail only after training had started ------------------------------------------
def refused_in(seconds: float, recipe: str, data_path: Path, output_dir: Path, *flags: str) -> str:
    """Run `recipe` (a recipe that would otherwise read the data and train first) and return its RecipeError's
    message, asserting it came within `seconds` of calling `run_training` (the imports are done by then) and that
    nothing was written. The data set's images are garbage: reading one would fail with another error."""
    arguments = parse_recipe(
        ARGUMENT_CLASSES, [str(REPO / "configs" / recipe), "--dataset_path", str(data_path), "--output_dir",
                           str(output_dir), *flags],
    )  # fmt: skip
    start = time.monotonic()
    with pytest.raises(RecipeError) as error:
        run_training(*arguments)
    elapsed = time.monotonic() - start
    print(f"{recipe} {' '.join(flags)}: refused after {elapsed:.2f} s")
    assert elapsed < seconds, f"refused only after {elapsed:.1f} s"
    assert_nothing_written(output_dir)
    return str(error.value)


@pytest.mark.parametrize(
    "recipe, flags, fragments",
    [
        ("demo_balms.yaml", ["--gradient_accumulation_steps", "2"],
         ["method 'balms', stage 2", "gradient_accumulation_steps=2"]),
        ("demo_paco.yaml", ["--contrast_chunk_size", "8"], ["contrast_chunk_size=8", "method 'paco'"]),
        ("demo_paco_aduc.yaml", ["--contrast_chunk_size", "8"], ["contrast_chunk_size=8", "method 'paco_aduc'"]),
    ],
    ids=["balms x gradient accumulation", "paco x chunks", "paco_aduc x chunks"],
)  # fmt: skip
def test_a_method_that_cannot_train_as_asked_is_refused_before_the_data_is_read(
    tmp_path, unreadable_data, recipe, flags, fragments
):
    message = refused_in(10, recipe, unreadable_data, tmp_path / "out", *flags)
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.slow
def test_balms_with_several_processes_is_refused_before_stage_1_trains(tmp_path, unreadable_data):
    """Two real processes (torchrun): both refuse with the message before stage 1 trains (the demo's stage 1, 30
    epochs, takes minutes here), and nothing is written."""
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
         "scripts/train.py", str(REPO / "configs" / "demo_balms.yaml"), "--dataset_path", str(unreadable_data),
         "--output_dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    elapsed = time.monotonic() - start
    print(f"balms under torchrun x2: refused after {elapsed:.1f} s, starting the processes included")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0 and len(errors) == 2, result.stderr[-3000:]  # each process says why
    assert all("method 'balms', stage 2" in line and "this run has 2" in line for line in errors), errors
    assert elapsed < 60
    assert_nothing_written(tmp_path / "out")


@pytest.fixture(scope="module")
def prepared_at_16(tmp_path_factory, unreadable_data):
    """The unreadable data set, as prepare_data.py --image_size 16 records it in the metadata."""
    path = tmp_path_factory.mktemp("data16") / "prepared"
    dataset = datasets.load_from_disk(str(unreadable_data))
    metadata = {**json.loads(dataset.info.description), "image_size": 16}
    dataset.info.description = json.dumps(metadata)
    dataset.save_to_disk(str(path))
    return path


def test_data_prepared_at_another_image_size_is_refused_unless_the_recipe_resizes(tmp_path, prepared_at_16):
    message = refused_in(10, "demo.yaml", prepared_at_16, tmp_path / "out")  # the demo trains at 32 px
    for fragment in ("was prepared at image_size 16", "the recipe's image_size is 32", "up-sampled",
                     "--image_size 32", "resize_prepared_images: true"):  # fmt: skip
        assert fragment in message, message
    # Asked to resize, or at the prepared size, the run goes on to read the data (and meets its garbage images).
    for flags in (["--resize_prepared_images", "true"], ["--image_size", "16"]):
        with pytest.raises(Exception) as error:
            train(tmp_path / flags[0].strip("-"), prepared_at_16, *flags)
        assert "image_size" not in str(error.value), error.value
