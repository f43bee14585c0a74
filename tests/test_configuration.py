"""Tests of `AdUniConfig`: defaults (design.md), strict keyword arguments, validation and round trips."""

from __future__ import annotations

import json

import pytest
from transformers import AutoConfig

import aduni_hf
from aduni_hf import AdUniConfig

CLASS_NAMES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
ID2LABEL = dict(enumerate(CLASS_NAMES))
LABEL2ID = {name: i for i, name in ID2LABEL.items()}

# Every AdUni field set to a non-default value, so a round trip that drops one is caught.
NON_DEFAULT_FIELDS = {
    "backbone": "resnet10t",
    "projection_dim": 64,
    "projection_hidden_dim": 256,
    "classifier_dropout": 0.25,
    "image_size": 96,
    "zero_init_last": True,
    "backbone_kwargs": {"drop_path_rate": 0.1},
}


def non_default_config() -> AdUniConfig:
    return AdUniConfig(id2label=ID2LABEL, label2id=LABEL2ID, **NON_DEFAULT_FIELDS)


def assert_same_config(loaded: AdUniConfig, expected: AdUniConfig) -> None:
    assert type(loaded) is type(expected)
    for field, value in NON_DEFAULT_FIELDS.items():
        assert getattr(loaded, field) == getattr(expected, field) == value, field
    assert loaded.id2label == ID2LABEL  # int keys again, not the JSON strings
    assert loaded.label2id == LABEL2ID
    assert loaded.num_labels == len(CLASS_NAMES)


# ----------------------------------------------------------------------------------------------------------
# defaults and identity
# ----------------------------------------------------------------------------------------------------------


def test__model_type_is_aduni():
    assert AdUniConfig.model_type == "aduni"
    assert AdUniConfig().model_type == "aduni"
    assert AdUniConfig().to_dict()["model_type"] == "aduni"


def test__defaults_match_design():
    config = AdUniConfig()
    assert config.backbone == "resnet18"
    assert config.projection_dim == 128
    assert config.classifier_dropout == 0.5
    assert config.image_size == 384
    # methods.md 2.1: the official ResNet has no zero-init of the last BN of a block.
    assert config.zero_init_last is False
    assert config.projection_hidden_dim is None
    assert config.backbone_kwargs is None


def test__num_labels_and_label_maps():
    assert AdUniConfig(num_labels=7).num_labels == 7
    config = AdUniConfig(id2label=ID2LABEL, label2id=LABEL2ID)
    assert config.num_labels == 7
    assert config.id2label[3] == "df"
    assert config.label2id["nv"] == 5


# ----------------------------------------------------------------------------------------------------------
# strict keyword arguments and validation
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("typo", ["projection_dims", "classifier_drop_out", "backbone_name", "img_size"])
def test__unknown_keyword_raises_type_error_naming_it(typo):
    with pytest.raises(TypeError, match=typo):
        AdUniConfig(**{typo: 1})


def test__unknown_key_in_config_json_raises(tmp_path):
    AdUniConfig(num_labels=3).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    data = json.loads(path.read_text())
    data["projection_dimm"] = 64
    path.write_text(json.dumps(data))
    with pytest.raises(TypeError, match="projection_dimm"):
        AdUniConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"backbone": "not_a_timm_model_xyz"}, "backbone"),
        ({"backbone": "resnet18x"}, "backbone"),
        ({"projection_dim": 0}, "projection_dim"),
        ({"projection_dim": -4}, "projection_dim"),
        ({"projection_dim": 12.5}, "projection_dim"),
        ({"classifier_dropout": 1.0}, "classifier_dropout"),
        ({"classifier_dropout": 1.5}, "classifier_dropout"),
        ({"classifier_dropout": -0.1}, "classifier_dropout"),
        ({"image_size": 0}, "image_size"),
        ({"projection_hidden_dim": 0}, "projection_hidden_dim"),
    ],
)
def test__bad_values_raise_value_error_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        AdUniConfig(**kwargs)


@pytest.mark.parametrize("dropout", [0.0, 0.5, 0.99])
def test__dropout_range_is_half_open(dropout):
    assert AdUniConfig(classifier_dropout=dropout).classifier_dropout == dropout


# ----------------------------------------------------------------------------------------------------------
# round trips
# ----------------------------------------------------------------------------------------------------------


def test__json_round_trip(tmp_path):
    config = non_default_config()
    path = tmp_path / "config.json"
    config.to_json_file(path)
    assert_same_config(AdUniConfig.from_json_file(path), config)
    assert_same_config(AdUniConfig.from_dict(json.loads(config.to_json_string())), config)


def test__save_pretrained_round_trip(tmp_path):
    config = non_default_config()
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "aduni"
    for field, value in NON_DEFAULT_FIELDS.items():
        assert saved[field] == value, field
    assert_same_config(AdUniConfig.from_pretrained(tmp_path), config)


def test__auto_config_after_import(tmp_path):
    assert aduni_hf.AdUniConfig is AdUniConfig
    config = non_default_config()
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert_same_config(loaded, config)
    assert isinstance(AutoConfig.for_model("aduni"), AdUniConfig)
