"""Every registered method trains a few steps through the training script's code path, saves one model folder,
and that folder loads with AutoModelForImageClassification and predicts through the pipeline."""

import json

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageClassification, pipeline

from aduni_hf.hub import build_image_processor
from aduni_hf.methods import METHODS
from aduni_hf.recipes import ARGUMENT_CLASSES, parse_recipe, run_training
from tests.tiny_run import TINY_RUN
from tests.training.test_cli import DEMO as DEMO_PATH

DEMO = str(DEMO_PATH)

# Small enough for a few CPU seconds per method (the tiny encoder: every method's mechanics are tested, not the
# model); PaCo's queue must be a multiple of the batch.
QUICK = [*TINY_RUN, "--max_steps", "3", "--per_device_train_batch_size", "16", "--eval_strategy", "no",
         "--logging_strategy", "steps", "--logging_steps", "1", "--queue_size", "32"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_trains_saves_loads_and_predicts(tmp_path, method):
    output_dir = tmp_path / method
    arguments = parse_recipe(
        ARGUMENT_CLASSES, [DEMO, "--method", method, "--alpha_max", "0.3", *QUICK, "--output_dir", str(output_dir)]
    )
    metrics = run_training(*arguments)
    assert 0 <= metrics["test_accuracy"] <= 1

    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    steps = [entry for entry in history if "loss" in entry]
    assert len(steps) == 3 and all(torch.isfinite(torch.tensor(entry["loss"])) for entry in steps)
    if method == "aduni_fixed":  # AdUni w/o AduC: alpha stays alpha_max
        assert [entry["alpha"] for entry in steps] == [0.3, 0.3, 0.3]
    if "alpha_schedule" not in METHODS[method].fields and method != "aduni_fixed":  # no alpha, none logged
        assert all("alpha" not in entry for entry in steps)

    model = AutoModelForImageClassification.from_pretrained(output_dir)
    assert model.config.classifier_type == METHODS[method].classifier_type  # LDAM: cosine
    classify = pipeline("image-classification", model=model, image_processor=build_image_processor(16))
    predictions = classify(Image.new("RGB", (8, 8), (200, 30, 30)), top_k=3)
    assert len(predictions) == 3 and {p["label"] for p in predictions} <= set(model.config.id2label.values())
    assert not list(output_dir.glob("checkpoint-*")) and (output_dir / "test_results.json").is_file()
    assert METHODS[method].description in (output_dir / "README.md").read_text()  # the card says what was trained
