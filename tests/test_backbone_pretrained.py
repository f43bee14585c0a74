"""Encoder weights to start from (`backbone_pretrained`), loaded by timm itself: a local file through
`pretrained_cfg_overlay=dict(file=...)`, a local timm folder or a Hub id through timm's `local-dir:` / `hf-hub:`
sources. A load timm could do only in part is refused; the weights survive transformers' initialisation; a saved model
never loads them again; the normalisation is the weights' own (timm's pretrained_cfg).

No ImageNet weights can be downloaded here: a seeded timm resnet18 saved to a file (its BatchNorm statistics set to
other values than timm's initial ones) stands in for them. The Hub is unreachable (HF_HUB_OFFLINE=1, empty cache).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
from timm.models import save_for_hf
from transformers import AutoModelForImageClassification

from aduni_hf import AdUniConfig, AdUniForImageClassification
from aduni_hf.hub.processor import backbone_normalization, build_image_processor
from aduni_hf.image_utils import IMAGENET_MEAN, IMAGENET_STD
from aduni_hf.modeling_aduni import pretrained_backbone_cfg
from tests.model_helpers import images, tiny_config

HUB_ID = "timm/resnet18.a1_in1k"
CLASSIFIER = ("fc.weight", "fc.bias")


def timm_weights(name: str = "resnet18", seed: int = 123) -> dict[str, torch.Tensor]:
    """A timm model's state dict (1000-class classifier included, as published weights have it), with BatchNorm
    running statistics and counts that differ from timm's initial ones, so that a buffer left as built shows."""
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False)
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
            module.num_batches_tracked.fill_(1000)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    return timm_weights()


@pytest.fixture(scope="module")
def weights_file(weights, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "resnet18_in1k.safetensors"
    safetensors.torch.save_file(weights, str(path))
    return path


def pretrained_model(source, seed: int = 0, **kwargs) -> AdUniForImageClassification:
    torch.manual_seed(seed)
    return AdUniForImageClassification(tiny_config(backbone_pretrained=str(source), **kwargs))


def assert_encoder_equals(model: AdUniForImageClassification, weights: dict[str, torch.Tensor]) -> None:
    encoder = model.aduni.backbone.state_dict()
    assert set(encoder) == set(weights) - set(CLASSIFIER)
    for key, value in encoder.items():
        assert torch.equal(value, weights[key]), key


# ---- a local file -------------------------------------------------------------------------------------------
def test_a_local_file_is_loaded_by_timm_into_every_encoder_tensor(weights, weights_file):
    model = pretrained_model(weights_file)
    assert not torch.equal(model.aduni.backbone.conv1.weight, weights["conv1.weight"])  # built from scratch first
    heads = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("aduni.backbone.")}
    model.load_pretrained_backbone()
    assert_encoder_equals(model, weights)
    for key, value in model.state_dict().items():
        if key in heads:
            assert torch.equal(value, heads[key]), key  # the heads keep their initialisation


def test_transformers_initialisation_after_the_load_keeps_the_weights(weights, weights_file):
    """The trap of docs/hf_stack.md, "Weight initialisation": the weights are loaded after `post_init`, and a later
    `init_weights` / `post_init` leaves them as loaded."""
    model = pretrained_model(weights_file)
    model.load_pretrained_backbone()
    model.init_weights()
    model.post_init()
    assert_encoder_equals(model, weights)


def test_a_pth_checkpoint_wrapped_and_prefixed_as_training_scripts_save_it_loads_the_same(weights, tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in weights.items()}}, path)
    model = pretrained_model(path)
    model.load_pretrained_backbone()
    assert_encoder_equals(model, weights)


def test_weights_missing_an_encoder_tensor_are_refused_naming_it_and_nothing_changes(weights, tmp_path):
    path = tmp_path / "partial.safetensors"
    safetensors.torch.save_file({k: v for k, v in weights.items() if k != "layer3.0.bn1.running_var"}, str(path))
    model = pretrained_model(path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"backbone_pretrained=.*partial.safetensors.*Missing keys \(layer3.0.bn1.running_var\)"):
        model.load_pretrained_backbone()
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_weights_of_a_deeper_network_are_refused_naming_the_extra_tensors(tmp_path):
    path = tmp_path / "resnet34.safetensors"
    safetensors.torch.save_file(timm_weights("resnet34"), str(path))
    with pytest.raises(ValueError, match=r"only in part .*Unexpected keys \(.*layer1\.2\.conv1\.weight"):
        pretrained_model(path).load_pretrained_backbone()


def test_a_tensor_of_another_shape_is_refused_naming_it(weights, tmp_path):
    path = tmp_path / "wide_stem.safetensors"
    safetensors.torch.save_file({**weights, "conv1.weight": torch.zeros(32, 3, 7, 7)}, str(path))
    with pytest.raises(ValueError, match=r"backbone_pretrained=.*could not build the encoder.*conv1.weight"):
        pretrained_model(path).load_pretrained_backbone()


# ---- a local timm folder --------------------------------------------------------------------------------------
def timm_folder(path: Path, name: str = "resnet18", mean=None, std=None) -> Path:
    """A timm model saved as the Hub holds it (config.json with its pretrained_cfg, model.safetensors), the
    normalisation in its config.json optionally replaced."""
    torch.manual_seed(7)
    save_for_hf(timm.create_model(name, pretrained=False), str(path), safe_serialization=True)
    if mean is not None:
        config = json.loads((path / "config.json").read_text())
        config["pretrained_cfg"].update(mean=list(mean), std=list(std))
        (path / "config.json").write_text(json.dumps(config))
    return path


def test_a_timm_folder_gives_its_weights_and_its_normalisation(tmp_path):
    folder = timm_folder(tmp_path / "resnet18.custom", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    model = pretrained_model(folder)
    model.load_pretrained_backbone()
    assert_encoder_equals(model, safetensors.torch.load_file(str(folder / "model.safetensors")))
    assert backbone_normalization(model.config) == {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}


def test_a_timm_folder_of_another_architecture_is_refused_naming_it(tmp_path):
    folder = timm_folder(tmp_path / "resnet34.a1_in1k", name="resnet34")
    with pytest.raises(ValueError, match=r"holds a timm 'resnet34', but backbone is 'resnet18': set backbone: resnet34"):
        pretrained_model(folder).load_pretrained_backbone()


# ---- the Hub ---------------------------------------------------------------------------------------------------
def test_a_hub_id_without_network_says_how_to_use_a_local_copy():
    model = pretrained_model(HUB_ID)
    with pytest.raises(OSError) as raised:
        model.load_pretrained_backbone()
    message = str(raised.value)
    assert f"backbone_pretrained={HUB_ID!r}: timm could not fetch this Hub model" in message
    assert f"hf download {HUB_ID} --local-dir resnet18.a1_in1k" in message
    assert "backbone_pretrained: resnet18.a1_in1k/model.safetensors" in message


@pytest.mark.parametrize("source", ["weights/missing.safetensors", "./missing", "resnet18.a1_in1k", "a/b/c"])
def test_a_path_that_does_not_exist_is_named_as_such(source):
    with pytest.raises(FileNotFoundError, match=rf"backbone_pretrained={source!r}: no such file or folder"):
        pretrained_model(source).load_pretrained_backbone()


def test_an_empty_source_is_refused_by_the_config():
    with pytest.raises(ValueError, match="backbone_pretrained must be a weights file, a timm model folder or a Hub id"):
        AdUniConfig(backbone_pretrained=" ")


# ---- a saved model ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("recorded", [HUB_ID, "file"])
def test_a_saved_model_loads_its_own_weights_without_fetching_the_pretrained_ones(recorded, weights_file, tmp_path):
    """config.json records where the encoder started; from_pretrained (and the Auto classes) never load it: the
    Hub id here cannot be fetched (offline) and the file is gone."""
    source = HUB_ID
    if recorded == "file":
        source = tmp_path / "copy.safetensors"
        source.write_bytes(weights_file.read_bytes())
    model = pretrained_model(source).eval()
    if recorded == "file":
        model.load_pretrained_backbone()
    model.save_pretrained(tmp_path / "saved")
    if recorded == "file":
        source.unlink()
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["backbone_pretrained"] == str(source)
    for loader in (AdUniForImageClassification, AutoModelForImageClassification):
        loaded = loader.from_pretrained(tmp_path / "saved").eval()
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
        with torch.no_grad():
            assert torch.equal(loaded(images()).logits, model(images()).logits)


# ---- the normalisation ------------------------------------------------------------------------------------------
def test_from_scratch_the_normalisation_is_imagenets():
    assert backbone_normalization(tiny_config()) == {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}


def test_a_file_takes_the_normalisation_of_the_backbones_timm_weights(weights_file):
    """timm's pretrained_cfg of `backbone` (its default tag, or the tag it names): resnet18's is ImageNet's; a ViT
    trained on ImageNet-21k (augreg) normalises by 0.5. Resolved without reading the file."""
    assert backbone_normalization(tiny_config(backbone_pretrained=str(weights_file))) == {
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
    }
    vit = AdUniConfig(backbone="vit_tiny_patch16_224.augreg_in21k", backbone_pretrained=str(weights_file))
    assert pretrained_backbone_cfg(vit)["mean"] == (0.5, 0.5, 0.5)
    assert backbone_normalization(vit) == {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


def test_the_image_processor_records_the_normalisation_it_is_given(tmp_path):
    build_image_processor(32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert (saved["image_mean"], saved["image_std"]) == ([0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    build_image_processor(32).save_pretrained(tmp_path)  # the default: ImageNet's, as before
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert (saved["image_mean"], saved["image_std"]) == (list(IMAGENET_MEAN), list(IMAGENET_STD))
