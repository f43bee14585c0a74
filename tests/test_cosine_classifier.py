"""The cosine classifier of `AdUniConfig(classifier_type="cosine")`: LDAM-DRW's normalised linear layer (Cao et
al. 2019; kaidic/LDAM-DRW, models/resnet_cifar.py, `NormedLinear`), its initialisation, save/load, Auto classes
and the pipeline; and the linear classifier, the default, unchanged.

Real timm models, built from scratch, at tiny image sizes (tests/model_helpers.py).
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForImageClassification, pipeline
from transformers.dynamic_module_utils import get_class_from_dynamic_module

from aduni_hf import AdUniConfig, AdUniForImageClassification
from aduni_hf.hub import build_image_processor
from aduni_hf.modeling_aduni import AdUniClassificationHead
from tests.model_helpers import IMAGE_SIZE, NUM_LABELS, build_model, images, make_image, tiny_config

FEATURE_DIM = 512  # resnet18


@pytest.fixture(scope="module")
def cosine_model() -> AdUniForImageClassification:
    return build_model(seed=5, classifier_type="cosine").eval()


@pytest.fixture(scope="module")
def saved_cosine(tmp_path_factory):
    """A cosine model trained for one step (BatchNorm buffers and classifier rows off their initial values),
    saved with its image processor."""
    model = build_model(seed=6, classifier_type="cosine").train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    out = model(images(seed=7), labels=torch.tensor([0, 1, 2, 1]))
    (30.0 * out.loss).backward()
    optimizer.step()
    model.eval()
    directory = tmp_path_factory.mktemp("aduni-cosine")
    model.save_pretrained(directory)
    build_image_processor(IMAGE_SIZE).save_pretrained(directory)
    return model, directory


def normalised_dot_product(pooled: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """cos(h, w_c) for every image and class, written out: (h . w_c) / (|h| |w_c|)."""
    dots = pooled.double() @ weight.double().T  # (B, C)
    norms = pooled.double().norm(dim=1)[:, None] * weight.double().norm(dim=1)[None, :]
    return dots / norms


def assert_official_init(weight: torch.Tensor) -> None:
    """Rows of unit norm whose entries are spread as uniform(-1, 1) divided by the row norm: |w| <= 1/norm_i
    of the raw row (about sqrt(3/d)), standard deviation 1/sqrt(d). PyTorch's default Linear rule gives rows of
    norm 1/sqrt(3)."""
    weight = weight.detach()
    d = weight.shape[1]
    torch.testing.assert_close(weight.norm(dim=1), torch.ones(weight.shape[0]), rtol=0, atol=1e-5)
    assert weight.abs().max().item() <= 1.1 * math.sqrt(3.0 / d)
    assert weight.abs().max().item() >= 0.9 * math.sqrt(3.0 / d)  # spread over the interval, not normal
    assert weight.std().item() == pytest.approx(1.0 / math.sqrt(d), rel=0.1)


# ----------------------------------------------------------------------------------------------------------
# the config field
# ----------------------------------------------------------------------------------------------------------


def test__classifier_type_defaults_to_linear_with_a_help_text():
    field = {f.name: f for f in dataclasses.fields(AdUniConfig)}["classifier_type"]
    assert field.default == "linear" and field.type == "str"
    assert "classifier_type" in AdUniConfig.aduni_field_names()
    help_text = field.metadata["help"]
    assert "linear" in help_text and "cosine" in help_text and "\n" not in help_text and len(help_text) <= 100
    assert AdUniConfig().classifier_type == "linear"
    assert AdUniConfig(classifier_type="cosine").classifier_type == "cosine"


@pytest.mark.parametrize("value", ["normed", "Cosine", "", None, ["cosine"]])
def test__unknown_classifier_type_raises_naming_the_field_and_the_choices(value):
    with pytest.raises(ValueError, match=r"classifier_type must be one of 'linear', 'cosine'"):
        AdUniConfig(classifier_type=value)


def test__config_json_without_the_field_loads_as_linear(tmp_path):
    AdUniConfig(num_labels=3).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    assert saved["classifier_type"] == "linear"
    del saved["classifier_type"]  # a config.json written before the field existed
    path.write_text(json.dumps(saved))
    assert AdUniConfig.from_pretrained(tmp_path).classifier_type == "linear"


def test__classifier_type_round_trips(tmp_path):
    AdUniConfig(classifier_type="cosine").save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["classifier_type"] == "cosine"
    assert AdUniConfig.from_pretrained(tmp_path).classifier_type == "cosine"


# ----------------------------------------------------------------------------------------------------------
# the cosine head
# ----------------------------------------------------------------------------------------------------------


def test__cosine_head_is_dropout_then_a_weight_without_bias(cosine_model):
    head = cosine_model.classifier
    assert isinstance(head, AdUniClassificationHead)
    assert isinstance(head.dropout, nn.Dropout) and head.dropout.p == 0.5
    assert not isinstance(head.dense, nn.Linear)
    assert [name for name, _ in head.named_parameters()] == ["dense.weight"]
    assert head.dense.weight.shape == (NUM_LABELS, FEATURE_DIM)
    assert [k for k in cosine_model.state_dict() if k.startswith("classifier.")] == [
        "classifier.dense.weight"
    ]
    assert not any("bias" in name for name, _ in head.named_parameters())


def test__cosine_logits_are_the_normalised_dot_product_in_minus_one_to_one(saved_cosine):
    model, _ = saved_cosine  # trained one step: the class rows are no longer of unit norm
    weight = model.classifier.dense.weight.detach()
    assert (weight.norm(dim=1) - 1).abs().max() > 1e-3
    with torch.no_grad():
        out = model(images(batch=5, seed=8))
    expected = normalised_dot_product(out.pooler_output, weight)
    torch.testing.assert_close(out.logits.double(), expected, rtol=0, atol=1e-6)
    assert out.logits.abs().max().item() <= 1.0 + 1e-6
    # the same pooled feature gives other logits through a linear layer: this is not Linear(h)
    assert not torch.allclose(out.logits, F.linear(out.pooler_output, weight))


def test__cosine_logits_of_aligned_rows_reach_the_ends_of_the_range(cosine_model):
    with torch.no_grad():
        pooled = cosine_model(images(batch=3, seed=9)).pooler_output
        head = cosine_model.classifier.dense
        saved = head.weight.clone()
        try:
            head.weight.copy_(torch.stack([3.0 * pooled[0], -0.5 * pooled[0], pooled[1]]))
            logits = cosine_model.classifier(pooled)
        finally:
            head.weight.copy_(saved)
    torch.testing.assert_close(logits[0, :2], torch.tensor([1.0, -1.0]), rtol=0, atol=1e-6)


def test__cosine_logits_stay_in_range_under_dropout():
    model = build_model(seed=5, classifier_type="cosine").train()
    out = model(images(batch=4, seed=10))
    assert out.logits.abs().max().item() <= 1.0 + 1e-6
    (out.logits * torch.randn(4, NUM_LABELS, generator=torch.Generator().manual_seed(0))).sum().backward()
    weight_grad = model.classifier.dense.weight.grad
    assert torch.isfinite(weight_grad).all() and weight_grad.abs().sum() > 0
    assert model.aduni.backbone.conv1.weight.grad.abs().sum() > 0  # no stop-gradient to the encoder


def test__fresh_cosine_classifier_follows_the_official_rule_bit_for_bit():
    """After a seed: the encoder as timm makes it, the projection Linears with PyTorch's default rule, then the
    classifier rows drawn uniform in [-1, 1] and scaled to unit norm, once by the layer and once by post_init."""
    model = build_model(seed=11, classifier_type="cosine")
    after_model = torch.rand(3)

    torch.manual_seed(11)
    timm.create_model("resnet18", pretrained=False, num_classes=0, global_pool="avg", zero_init_last=False)
    dense, projection = nn.Linear(FEATURE_DIM, FEATURE_DIM), nn.Linear(FEATURE_DIM, 128)
    for linear in (dense, projection):  # post_init of the encoder's model redraws them
        nn.init.kaiming_uniform_(linear.weight, a=math.sqrt(5))
        nn.init.uniform_(linear.bias, -1 / math.sqrt(FEATURE_DIM), 1 / math.sqrt(FEATURE_DIM))
    rows = torch.empty(NUM_LABELS, FEATURE_DIM)
    for _ in range(2):
        rows.uniform_(-1.0, 1.0)
        expected = rows / rows.norm(dim=1, keepdim=True)
    torch.testing.assert_close(model.classifier.dense.weight.detach(), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(
        model.aduni.projection_head.projection.weight.detach(), projection.weight.detach()
    )
    assert torch.equal(torch.rand(3), after_model)  # the same random numbers were consumed
    assert_official_init(model.classifier.dense.weight)


def test__reset_parameters_redraws_by_the_official_rule():
    head = AdUniForImageClassification(tiny_config(classifier_type="cosine")).classifier.dense
    before = head.weight.detach().clone()
    head.reset_parameters()  # what a new classifier for other class names gets
    assert not torch.equal(head.weight, before)
    assert_official_init(head.weight)


def test__meta_device_build_then_init_weights():
    config = tiny_config(classifier_type="cosine")
    with torch.device("meta"):
        model = AdUniForImageClassification(config)
    model.to_empty(device="cpu")
    model.init_weights()
    assert_official_init(model.classifier.dense.weight)
    with torch.no_grad():
        assert torch.isfinite(model.eval()(images(batch=2)).logits).all()


# ----------------------------------------------------------------------------------------------------------
# save / load, Auto classes and the pipeline
# ----------------------------------------------------------------------------------------------------------


def test__save_pretrained_from_pretrained_round_trip(saved_cosine):
    model, directory = saved_cosine
    assert json.loads((directory / "config.json").read_text())["classifier_type"] == "cosine"
    loaded = AdUniForImageClassification.from_pretrained(directory).eval()
    assert loaded.config.classifier_type == "cosine"
    x = images(seed=12)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test__auto_model_for_image_classification_loads_it(saved_cosine):
    model, directory = saved_cosine
    loaded = AutoModelForImageClassification.from_pretrained(directory).eval()
    assert type(loaded) is AdUniForImageClassification
    assert type(loaded.classifier.dense) is type(model.classifier.dense)
    x = images(seed=13)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)


def test__remote_code_copy_has_the_cosine_head(saved_cosine):
    """The self-contained modeling file saved next to the weights builds the cosine head too. In this process the
    Auto classes prefer the registered aduni_hf class, so the copy is imported as transformers imports remote code
    (tests/test_remote_code.py runs the copy in a process without aduni_hf)."""
    model, directory = saved_cosine
    assert (directory / "modeling_aduni.py").exists() and (directory / "configuration_aduni.py").exists()
    remote_class = get_class_from_dynamic_module("modeling_aduni.AdUniForImageClassification", str(directory))
    assert remote_class.__module__.startswith("transformers_modules"), remote_class.__module__
    loaded = remote_class.from_pretrained(directory).eval()
    assert loaded.config.classifier_type == "cosine"
    assert [k for k in loaded.state_dict() if k.startswith("classifier.")] == ["classifier.dense.weight"]
    assert type(loaded.classifier.dense).__module__ == remote_class.__module__
    x = images(seed=14)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)


def test__pipeline_scores_are_the_softmax_of_the_cosines(saved_cosine):
    model, directory = saved_cosine
    classifier = pipeline("image-classification", model=str(directory))
    assert type(classifier.model) is AdUniForImageClassification
    assert classifier.model.config.classifier_type == "cosine"
    picture = make_image(4)
    result = classifier(picture, top_k=NUM_LABELS)
    processor = build_image_processor(IMAGE_SIZE)
    with torch.no_grad():
        logits = model(processor(images=picture, return_tensors="pt")["pixel_values"]).logits[0]
    probabilities = logits.softmax(-1)
    assert result[0]["label"] == model.config.id2label[int(logits.argmax())]
    for entry in result:
        label = model.config.label2id[entry["label"]]
        assert entry["score"] == pytest.approx(probabilities[label].item(), abs=1e-5)


def test__missing_classifier_keys_get_the_official_rule(saved_cosine, tmp_path):
    model, _ = saved_cosine
    model.aduni.save_pretrained(tmp_path)  # an AdUniModel checkpoint: no classifier
    config = tiny_config(id2label={i: f"class{i}" for i in range(4)}, classifier_type="cosine")
    loaded = AdUniForImageClassification.from_pretrained(tmp_path, config=config)
    for key, value in model.aduni.state_dict().items():
        assert torch.equal(loaded.aduni.state_dict()[key], value), key
    assert loaded.classifier.dense.weight.shape == (4, FEATURE_DIM)
    assert_official_init(loaded.classifier.dense.weight)


def test__classifier_of_another_size_gets_the_official_rule(saved_cosine):
    model, directory = saved_cosine
    loaded = AutoModelForImageClassification.from_pretrained(
        directory,
        id2label={i: f"class{i}" for i in range(5)},
        label2id={f"class{i}": i for i in range(5)},
        ignore_mismatched_sizes=True,
    )
    assert loaded.classifier.dense.weight.shape == (5, FEATURE_DIM)
    assert_official_init(loaded.classifier.dense.weight)
    assert torch.equal(loaded.aduni.backbone.conv1.weight, model.aduni.backbone.conv1.weight)


# ----------------------------------------------------------------------------------------------------------
# the linear head, the default, unchanged
# ----------------------------------------------------------------------------------------------------------


def test__linear_default_is_dropout_then_linear_with_bias_and_the_same_keys():
    default = build_model(seed=3)
    explicit = build_model(seed=3, classifier_type="linear")
    assert type(default.classifier.dense) is nn.Linear and default.classifier.dense.bias is not None
    encoder = timm.create_model("resnet18", pretrained=False, num_classes=0, global_pool="avg")
    expected_keys = [f"aduni.backbone.{k}" for k in encoder.state_dict()] + [
        "aduni.projection_head.dense.weight",
        "aduni.projection_head.dense.bias",
        "aduni.projection_head.projection.weight",
        "aduni.projection_head.projection.bias",
        "classifier.dense.weight",
        "classifier.dense.bias",
    ]
    assert list(default.state_dict()) == expected_keys
    assert list(explicit.state_dict()) == expected_keys
    for key, value in default.state_dict().items():
        assert torch.equal(explicit.state_dict()[key], value), key
    x = images(seed=15)
    with torch.no_grad():
        out = default.eval()(x)
        torch.testing.assert_close(out.logits, default.classifier.dense(out.pooler_output), rtol=0, atol=0)
