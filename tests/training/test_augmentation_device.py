"""`augmentation_device`: training with the views made on the device, through the training script's code path;
the resolved choice in run_config.yaml and the card; the recipes it refuses before reading any data."""

import json

import pytest
import yaml
from safetensors.torch import load_file

from aduni_hf.recipes import ARGUMENT_CLASSES, RecipeError, parse_recipe, run_training
from aduni_hf.recipes.run_folder import check_resume
from tests.training.test_bad_config import unreadable_data  # noqa: F401  (the fixture)
from tests.training.test_cli import DEMO

QUICK = ["--image_size", "16", "--max_steps", "3", "--per_device_train_batch_size", "16", "--eval_strategy", "no",
         "--logging_strategy", "steps", "--logging_steps", "1", "--figures", "false"]  # fmt: skip


def train(output_dir, *flags):
    return run_training(*parse_recipe(ARGUMENT_CLASSES, [str(DEMO), *QUICK, "--output_dir", str(output_dir), *flags]))


@pytest.mark.slow
def test_views_made_on_the_device_train_alike_with_any_number_of_workers(tmp_path):
    """The views' parameters come from the sampler's keys, never from the worker: 0 and 2 workers train to the same
    weights, bit for bit."""
    for workers in (0, 2):
        train(tmp_path / str(workers), "--augmentation_device", "device", "--dataloader_num_workers", str(workers))
    a, b = load_file(tmp_path / "0" / "model.safetensors"), load_file(tmp_path / "2" / "model.safetensors")
    assert all((a[k] == b[k]).all() for k in a)
    config = yaml.safe_load((tmp_path / "0" / "run_config.yaml").read_text())
    assert config["DataArguments"]["augmentation_device"] == "device"
    assert "digits (on the training device)" in (tmp_path / "0" / "README.md").read_text()
    steps = [e for e in json.loads((tmp_path / "0" / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert len(steps) == 3


@pytest.mark.slow
def test_auto_resolves_to_the_loader_on_the_cpu_and_is_recorded(tmp_path):
    train(tmp_path / "auto")
    config = yaml.safe_load((tmp_path / "auto" / "run_config.yaml").read_text())
    assert config["DataArguments"]["augmentation_device"] == "loader"  # no GPU here
    assert "digits (on the data-loader workers)" in (tmp_path / "auto" / "README.md").read_text()


def test_a_checkpoint_written_before_the_field_existed_resumes_on_the_loader(tmp_path):
    fields = {"method": "aduni", "augmentation": "digits"}
    old = {"fields": fields, "data": {"class_names": ["a"], "digest": "d"}, "num_processes": 1}
    (tmp_path / "aduni_run.json").write_text(json.dumps(old))
    now = {**old, "fields": {**fields, "augmentation_device": "loader", "resize_prepared_images": False}}
    assert check_resume(tmp_path, now) == []
    with pytest.raises(RecipeError, match="augmentation_device: 'loader' in the checkpoint, 'device' now"):
        check_resume(tmp_path, {**now, "fields": {**now["fields"], "augmentation_device": "device"}})


def test_the_device_is_refused_for_data_not_stored_at_one_size(tmp_path, unreadable_data):  # noqa: F811
    with pytest.raises(RecipeError, match=r"augmentation_device: device needs images stored at one size.*"
                                          r"--image_size 16"):  # fmt: skip
        train(tmp_path / "out", "--dataset_path", str(unreadable_data), "--augmentation_device", "device")
    with pytest.raises(RecipeError, match=r"augmentation_device must be one of \['auto', 'loader', 'device'\]"):
        parse_recipe(ARGUMENT_CLASSES, [str(DEMO), "--augmentation_device", "gpu"])
