"""The data registries: data sets, samplers and augmentations by name, and the script that offers them."""

import runpy
from pathlib import Path

import pytest

from aduni_hf.data import AUGMENTATIONS, DATASETS, SAMPLERS, build_augmentation, build_dataset, build_sampler
from aduni_hf.registry import Registry

ROOT = Path(__file__).resolve().parents[2]


def test_one_registry_idiom():
    assert all(isinstance(registry, Registry) for registry in (DATASETS, SAMPLERS, AUGMENTATIONS))
    assert DATASETS.names() == [
        "aptos2019", "csv", "dermamnist", "digits_lt", "imagefolder", "isic2018", "retinamnist",
    ]  # fmt: skip
    assert "none" in SAMPLERS and AUGMENTATIONS.names() == ["digits", "kaggle", "none"]


def test_unknown_dataset_names_the_choices():
    with pytest.raises(ValueError, match="digits_lt"):
        build_dataset("no_such_set")


def test_unknown_augmentation_names_the_choices():
    with pytest.raises(ValueError, match="kaggle"):
        build_augmentation("mixup", 32)


def test_unknown_sampler_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown sampler 'balanced'; choose one of \['class_aware', 'none', 'progressive', 'sqrt', 'upsample'\]"):
        build_sampler("balanced", [0, 1], seed=0)


def test_prepare_script_offers_the_registered_datasets(capsys):
    script = runpy.run_path(str(ROOT / "scripts" / "prepare_data.py"))
    with pytest.raises(SystemExit):
        script["parse_args"](["--dataset", "no_such_set", "--output_dir", "out"])
    message = capsys.readouterr().err
    assert all(repr(name) in message for name in DATASETS.names())
