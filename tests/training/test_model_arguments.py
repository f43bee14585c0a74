"""The model part of a recipe: every `AdUniConfig` field, validated by `AdUniConfig`, and `model_name_or_path`."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

from aduni_hf import AdUniConfig, AdUniForImageClassification
from aduni_hf.methods import METHODS
from aduni_hf.recipes import ARGUMENT_CLASSES, ModelArguments, RecipeError, parse_recipe
from aduni_hf.recipes.run import build_model
from tests.script_runs import run_script_here

REPO = Path(__file__).resolve().parents[2]
CLASSES = [str(c) for c in range(10)]


def model_arguments(*flags: str) -> ModelArguments:
    return parse_recipe(ARGUMENT_CLASSES, list(flags))[0]


def test_every_config_field_is_a_recipe_field_with_its_default_and_help():
    recipe_fields = {f.name: f for f in dataclasses.fields(ModelArguments)}
    config_fields = {f.name: f for f in dataclasses.fields(AdUniConfig)}
    for name in AdUniConfig.aduni_field_names():
        assert recipe_fields[name].default == config_fields[name].default, name
        assert recipe_fields[name].metadata["help"] == config_fields[name].metadata["help"], name


def test_recipe_values_reach_the_config():
    args = model_arguments(
        "--backbone", "resnet10t", "--projection_dim", "64", "--projection_hidden_dim", "96",
        "--classifier_dropout", "0.2", "--image_size", "48", "--zero_init_last", "true",
        "--backbone_kwargs", '{"in_chans": 1}',
    )  # fmt: skip
    assert args.config_fields() == {
        "backbone": "resnet10t",
        "projection_dim": 64,
        "projection_hidden_dim": 96,
        "classifier_dropout": 0.2,
        "image_size": 48,
        "zero_init_last": True,
        "backbone_kwargs": {"in_chans": 1},
        "backbone_pretrained": None,
        "classifier_type": "linear",
    }
    model = build_model(args, METHODS["aduni"], CLASSES)
    assert model.aduni.backbone.conv1[0].in_channels == 1 and model.classifier.dense.out_features == 10
    assert model.aduni.projection_head.dense.out_features == 96 and model.config.image_size == 48


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--projection_dim", "0"], "projection_dim must be a positive int"),
        (["--backbone", "resnet_nope"], "backbone='resnet_nope' is not a timm model"),
        (["--classifier_dropout", "1.5"], "classifier_dropout must be a number in [0, 1)"),
        (["--backbone_kwargs", "{in_chans: 1}"], "backbone_kwargs must be a JSON object"),
    ],
)
def test_values_are_checked_by_the_config(flags, message):
    with pytest.raises(RecipeError, match=re.escape(message)):
        model_arguments(*flags)


def test_a_misspelt_model_field_in_a_recipe_is_refused(tmp_path):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text("projecton_dim: 64\n")
    with pytest.raises(RecipeError, match="unknown field 'projecton_dim'; did you mean projection_dim"):
        parse_recipe(ARGUMENT_CLASSES, [str(recipe)])


@pytest.fixture(scope="module")
def saved_three_class_model(tmp_path_factory) -> tuple[Path, AdUniForImageClassification]:
    torch.manual_seed(0)
    config = AdUniConfig(id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2}, image_size=32)
    model = AdUniForImageClassification(config)
    folder = tmp_path_factory.mktemp("saved")
    model.save_pretrained(folder)
    return folder, model


def test_model_name_or_path_keeps_the_encoder_and_re_initialises_a_resized_classifier(saved_three_class_model):
    folder, saved = saved_three_class_model
    args = model_arguments("--model_name_or_path", str(folder), "--image_size", "32", "--classifier_dropout", "0.1")
    model = build_model(args, METHODS["aduni"], CLASSES)
    loaded, original = model.state_dict(), saved.state_dict()
    for key, value in original.items():
        if key.startswith("classifier."):
            continue
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0, msg=key)
    weight = model.classifier.dense.weight
    assert weight.shape == (10, saved.aduni.feature_dim) and torch.isfinite(weight).all()
    bound = 1.0 / saved.aduni.feature_dim**0.5  # PyTorch's default Linear rule
    assert weight.abs().max() <= bound and weight.std() > bound / 3
    assert model.config.id2label[9] == "9" and model.config.classifier_dropout == 0.1


def test_model_name_or_path_with_another_architecture_is_refused(saved_three_class_model):
    folder, _ = saved_three_class_model
    args = model_arguments("--model_name_or_path", str(folder), "--projection_dim", "64")
    with pytest.raises(ValueError, match="projection_dim: 64 in the recipe, 128 in the model"):
        build_model(args, METHODS["aduni"], CLASSES)


@pytest.mark.slow
def test_train_script_starts_from_a_saved_model(saved_three_class_model, tmp_path):
    folder, _ = saved_three_class_model
    output_dir = tmp_path / "out"
    result = run_script_here(
        "train.py", str(REPO / "configs" / "demo.yaml"), "--model_name_or_path", str(folder),
        "--ignore_mismatched_sizes", "true", "--max_steps", "1", "--eval_strategy", "no", "--output_dir",
        str(output_dir), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"starting from {folder} (10 classes now)" in result.stdout
    config = json.loads((output_dir / "config.json").read_text())
    assert len(config["id2label"]) == 10
