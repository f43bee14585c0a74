"""Tests of `AdUniConfig`, in the spirit of transformers' ConfigTester: defaults (docs/method.md, "Model"), field
help texts, validation, keys it does not know (kept, as `PreTrainedConfig` keeps them; near misses warned
about) and round trips through dicts, JSON files and folders."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
from transformers import AutoConfig, PreTrainedConfig, ResNetConfig

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
    "backbone_pretrained": "timm/resnet10t.c3_in1k",
}

# The AdUni fields: name -> (type annotation, default). Another part of the project generates the recipe's
# ModelArguments from these, so names, types and defaults are part of the contract.
FIELDS = {
    "backbone": ("str", "resnet18"),
    "projection_dim": ("int", 128),
    "projection_hidden_dim": ("int | None", None),
    "classifier_dropout": ("float", 0.5),
    "classifier_type": ("str", "linear"),
    "image_size": ("int", 384),
    "zero_init_last": ("bool", False),
    "backbone_kwargs": ("dict | None", None),
    "backbone_pretrained": ("str | None", None),
}

# Attributes a `PreTrainedConfig` keeps whatever the model (legacy common attributes, text-model attributes,
# anything else), with a value for each that differs from any default.
BASE_KEYS = {
    "tie_word_embeddings": False,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "decoder_start_token_id": 3,
    "quantization_config": {"quant_method": "bitsandbytes", "load_in_8bit": True},
    "tokenizer_class": "BertTokenizer",
    "task_specific_params": {"classify": {"top_k": 3}},
    "finetuning_task": "isic2018",
    "prefix": "skin: ",
    "is_decoder": True,
    "add_cross_attention": True,
    "cross_attention_hidden_size": 32,
    "tie_encoder_decoder": True,
    "pruned_heads": {1: [0, 2]},
    "torchscript": True,
    "_attn_implementation_autoset": True,
    "some_future_attribute": [1, 2],
    "output_hidden_states": True,
    "return_dict": False,
    "problem_type": "multi_label_classification",
    "chunk_size_feed_forward": 4,
    "architectures": ["AdUniForImageClassification"],
    "label_smoothing": 0.1,
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
    assert loaded.to_diff_dict() == expected.to_diff_dict()


def through_json(config_class, config):
    return config_class.from_dict(json.loads(config.to_json_string()))


# ----------------------------------------------------------------------------------------------------------
# defaults, fields and identity
# ----------------------------------------------------------------------------------------------------------


def test__model_type_is_aduni():
    assert AdUniConfig.model_type == "aduni"
    assert AdUniConfig().model_type == "aduni"
    assert AdUniConfig().to_dict()["model_type"] == "aduni"


def test__init_without_params_gives_the_defaults():
    config = AdUniConfig()
    assert config.backbone == "resnet18"
    assert config.projection_dim == 128
    assert config.classifier_dropout == 0.5
    assert config.image_size == 384
    # docs/method.md, "Model": the official ResNet has no zero-init of the last BN of a block.
    assert config.zero_init_last is False
    assert config.projection_hidden_dim is None
    assert config.backbone_kwargs is None
    assert config.num_labels == 2 and config.problem_type is None
    assert config.return_dict is True and config.output_hidden_states is False


def test__fields_keep_names_types_and_defaults():
    base = {f.name for f in dataclasses.fields(PreTrainedConfig)}
    own = {f.name: f for f in dataclasses.fields(AdUniConfig) if f.name not in base}
    assert list(own) == list(FIELDS)
    assert AdUniConfig.aduni_field_names() == tuple(FIELDS)
    for name, (annotation, default) in FIELDS.items():
        assert own[name].type == annotation, name
        assert own[name].default == default, name
        assert own[name].default_factory is dataclasses.MISSING, name
        assert getattr(AdUniConfig, name) == default, name  # the class attribute is the plain default


def test__every_field_has_a_one_line_help_text():
    for field in dataclasses.fields(AdUniConfig):
        if field.name in FIELDS:
            text = field.metadata.get("help")
            assert isinstance(text, str) and text.strip(), field.name
            assert "\n" not in text and len(text) <= 100, field.name


def test__common_properties_can_be_set_by_keyword_and_attribute():
    config = AdUniConfig(**NON_DEFAULT_FIELDS)
    for name, value in NON_DEFAULT_FIELDS.items():
        assert getattr(config, name) == value, name
    config = AdUniConfig()
    for name, value in NON_DEFAULT_FIELDS.items():
        setattr(config, name, value)
        assert getattr(config, name) == value, name


def test__num_labels_and_label_maps():
    assert AdUniConfig(num_labels=7).num_labels == 7
    config = AdUniConfig(id2label=ID2LABEL, label2id=LABEL2ID)
    assert config.num_labels == 7
    assert config.id2label[3] == "df"
    assert config.label2id["nv"] == 5


def test__num_labels_rebuilds_id2label_and_label2id():
    config = AdUniConfig(num_labels=5)
    assert len(config.id2label) == 5 and len(config.label2id) == 5
    config.num_labels = 3
    assert len(config.id2label) == 3 and len(config.label2id) == 3
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    assert config.label2id == {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2}


def test__trainer_predictions_are_the_logits_alone():
    assert set(AdUniConfig.keys_to_ignore_at_inference) == {"features", "pooler_output", "hidden_states"}
    assert "keys_to_ignore_at_inference" not in AdUniConfig().to_dict()


# ----------------------------------------------------------------------------------------------------------
# keys AdUniConfig does not know, and validation
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typo", "field"),
    [
        ("projection_dims", "projection_dim"),
        ("classifier_drop_out", "classifier_dropout"),
        ("backbone_name", "backbone"),
        ("img_size", "image_size"),
        ("zero_init", "zero_init_last"),
    ],
)
def test__near_miss_of_a_field_is_kept_with_a_did_you_mean_warning(typo, field, caplog):
    with caplog.at_level(logging.WARNING, logger="aduni_hf.configuration_aduni"):
        config = AdUniConfig(**{typo: 1})
    assert getattr(config, typo) == 1
    assert getattr(config, field) == getattr(AdUniConfig, field)  # the field itself is untouched
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(typo in m and f"did you mean {field!r}" in m for m in messages), messages


@pytest.mark.parametrize("key", ["pad_token_id", "hidden_size", "backbone_config", "some_future_attribute"])
def test__other_unknown_keys_are_kept_silently(key, caplog):
    with caplog.at_level(logging.WARNING, logger="aduni_hf.configuration_aduni"):
        config = AdUniConfig(**{key: 5})
    assert getattr(config, key) == 5
    assert not [r for r in caplog.records if r.name == "aduni_hf.configuration_aduni"]


def test__config_json_with_an_unknown_key_loads(tmp_path, caplog):
    AdUniConfig(num_labels=3).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    data = json.loads(path.read_text())
    data["projection_dimm"] = 64
    data["tie_word_embeddings"] = False
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="aduni_hf.configuration_aduni"):
        config = AdUniConfig.from_pretrained(tmp_path)
    assert config.projection_dimm == 64 and config.projection_dim == 128
    assert config.tie_word_embeddings is False
    assert any("did you mean 'projection_dim'" in r.getMessage() for r in caplog.records)


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
        ({"classifier_dropout": "0.5"}, "classifier_dropout"),
        ({"image_size": 0}, "image_size"),
        ({"projection_hidden_dim": 0}, "projection_hidden_dim"),
        ({"zero_init_last": "yes"}, "zero_init_last"),
        ({"backbone_kwargs": ["in_chans", 1]}, "backbone_kwargs"),
    ],
)
def test__bad_values_raise_value_error_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        AdUniConfig(**kwargs)


def test__bad_value_in_config_json_raises(tmp_path):
    AdUniConfig().save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "image_size": -1}))
    with pytest.raises(ValueError, match="image_size"):
        AdUniConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("dropout", [0.0, 0.5, 0.99])
def test__dropout_range_is_half_open(dropout):
    assert AdUniConfig(classifier_dropout=dropout).classifier_dropout == dropout


# ----------------------------------------------------------------------------------------------------------
# round trips
# ----------------------------------------------------------------------------------------------------------


def test__to_json_string_holds_the_fields():
    saved = json.loads(non_default_config().to_json_string())
    for field, value in NON_DEFAULT_FIELDS.items():
        assert saved[field] == value, field
    assert saved["id2label"] == {str(k): v for k, v in ID2LABEL.items()}


def test__json_file_round_trip(tmp_path):
    config = non_default_config()
    path = tmp_path / "config.json"
    config.to_json_file(path)
    assert_same_config(AdUniConfig.from_json_file(path), config)
    assert_same_config(through_json(AdUniConfig, config), config)


def test__dict_round_trip():
    config = non_default_config()
    assert_same_config(AdUniConfig.from_dict(config.to_dict()), config)


def test__save_pretrained_round_trip(tmp_path):
    config = non_default_config()
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "aduni"
    for field, value in NON_DEFAULT_FIELDS.items():
        assert saved[field] == value, field
    assert_same_config(AdUniConfig.from_pretrained(tmp_path), config)


def test__save_pretrained_round_trip_in_a_subfolder(tmp_path):
    config = non_default_config()
    config.save_pretrained(tmp_path / "sub")
    assert_same_config(AdUniConfig.from_pretrained(tmp_path, subfolder="sub"), config)


@pytest.mark.parametrize("key", sorted(BASE_KEYS))
def test__base_keys_round_trip_as_for_resnet(key, tmp_path):
    """Set as an attribute or passed as a keyword, every key survives to_dict/from_dict, JSON and a folder, with
    the value ResNetConfig gives back."""
    value = BASE_KEYS[key]
    reference, config = ResNetConfig(), AdUniConfig()
    setattr(reference, key, value)
    setattr(config, key, value)
    expected_dict = getattr(ResNetConfig.from_dict(reference.to_dict()), key)
    expected_json = getattr(through_json(ResNetConfig, reference), key)
    assert getattr(AdUniConfig.from_dict(config.to_dict()), key) == expected_dict
    assert getattr(through_json(AdUniConfig, config), key) == expected_json
    config.save_pretrained(tmp_path)
    assert getattr(AdUniConfig.from_pretrained(tmp_path), key) == expected_json
    assert getattr(AdUniConfig(**{key: value}), key) == getattr(ResNetConfig(**{key: value}), key)


def test__all_base_keys_at_once_round_trip(tmp_path):
    config = AdUniConfig(**BASE_KEYS, **NON_DEFAULT_FIELDS)
    config.save_pretrained(tmp_path)
    loaded = AdUniConfig.from_pretrained(tmp_path)
    assert json.loads(loaded.to_json_string()) == json.loads(config.to_json_string())
    for field, value in NON_DEFAULT_FIELDS.items():
        assert getattr(loaded, field) == value, field


def test__auto_config_after_import(tmp_path):
    assert aduni_hf.AdUniConfig is AdUniConfig
    config = non_default_config()
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert_same_config(loaded, config)
    assert isinstance(AutoConfig.for_model("aduni"), AdUniConfig)
