"""The forward contract of `AdUniModel` / `AdUniForImageClassification`, in the spirit of transformers' common
model tests as ResNet runs them: signature, tuple outputs (`return_dict=False`), hidden states, problem types
and their agreement with the image-classification pipeline, gradient checkpointing and Trainer evaluation.

Real timm models, built from scratch, at tiny image sizes.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer, TrainingArguments, pipeline

from aduni_hf import AdUniForImageClassification, AdUniModel
from aduni_hf.hub import build_image_processor
from aduni_hf.modeling_aduni import AdUniImageClassifierOutput, AdUniModelOutput
from tests.model_helpers import IMAGE_SIZE, NUM_LABELS, build_model, images, make_image, tiny_config

RESNET18_STAGES = [(64, 16), (64, 8), (128, 4), (256, 2), (512, 1)]  # (channels, side) for 32x32 inputs


@pytest.fixture(scope="module")
def model() -> AdUniForImageClassification:
    return build_model().eval()


# ----------------------------------------------------------------------------------------------------------
# signature
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_class", "names"),
    [
        (AdUniModel, ["pixel_values", "output_hidden_states", "return_dict"]),
        (AdUniForImageClassification, ["pixel_values", "labels", "output_hidden_states", "return_dict"]),
    ],
)
def test__forward_signature(model_class, names):
    parameters = inspect.signature(model_class.forward).parameters
    assert list(parameters)[1:] == names
    assert model_class.main_input_name == names[0]
    assert not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in parameters.values())


@pytest.mark.parametrize("typo", ["lables", "label", "output_attentions", "num_items_in_batch"])
def test__unknown_forward_argument_raises_type_error_naming_it(model, typo):
    with pytest.raises(TypeError, match=typo):
        model(images(), **{typo: torch.tensor([0, 1, 2, 1])})
    with pytest.raises(TypeError, match=typo):
        model.aduni(images(), **{typo: True})


def test__trainer_does_not_pass_loss_kwargs(model):
    assert AdUniForImageClassification.accepts_loss_kwargs is False
    assert model.accepts_loss_kwargs is False


# ----------------------------------------------------------------------------------------------------------
# return_dict=False: tuples, in the order of the output dataclasses, without the fields that are None
# ----------------------------------------------------------------------------------------------------------


def test__return_dict_false_argument_gives_tuples(model):
    labels = torch.tensor([0, 1, 2, 1])
    x = images()
    with torch.no_grad():
        as_dict = model(x, labels=labels)
        as_tuple = model(x, labels=labels, return_dict=False)
        without_labels = model(x, return_dict=False)
    assert isinstance(as_dict, AdUniImageClassifierOutput)
    assert type(as_tuple) is tuple and type(without_labels) is tuple
    loss, logits, features, pooled = as_tuple  # unpacking gives tensors, not the field names
    assert all(isinstance(t, torch.Tensor) for t in as_tuple)
    assert torch.equal(loss, as_dict.loss) and torch.equal(logits, as_dict.logits)
    assert torch.equal(features, as_dict.features) and torch.equal(pooled, as_dict.pooler_output)
    assert len(without_labels) == 3 and torch.equal(without_labels[0], as_dict.logits)


def test__return_dict_false_in_the_config_gives_tuples():
    model = build_model(return_dict=False).eval()
    assert model.config.return_dict is False
    with torch.no_grad():
        out = model(images(), labels=torch.tensor([0, 1, 2, 1]))
        bare = model.aduni(images())
        explicit = model(images(), return_dict=True)  # the argument wins over the config
    assert type(out) is tuple and len(out) == 4 and out[0].shape == ()
    assert type(bare) is tuple and len(bare) == 3
    assert isinstance(explicit, AdUniImageClassifierOutput)


def test__bare_model_tuple_order(model):
    x = images()
    with torch.no_grad():
        as_dict = model.aduni(x, output_hidden_states=True)
        last, pooled, features, hidden = model.aduni(x, output_hidden_states=True, return_dict=False)
    assert isinstance(as_dict, AdUniModelOutput)
    assert torch.equal(last, as_dict.last_hidden_state) and torch.equal(pooled, as_dict.pooler_output)
    assert torch.equal(features, as_dict.features)
    assert len(hidden) == len(as_dict.hidden_states) == 5


# ----------------------------------------------------------------------------------------------------------
# hidden states and the default numbers
# ----------------------------------------------------------------------------------------------------------


def test__output_hidden_states_argument(model):
    x = images(batch=2)
    with torch.no_grad():
        plain = model(x)
        out = model(x, output_hidden_states=True)
        bare = model.aduni(x, output_hidden_states=True)
    assert plain.hidden_states is None
    assert isinstance(out.hidden_states, tuple)
    assert [tuple(h.shape) for h in out.hidden_states] == [(2, c, s, s) for c, s in RESNET18_STAGES]
    assert torch.equal(bare.hidden_states[-1], bare.last_hidden_state)
    assert torch.equal(out.logits, plain.logits) and torch.equal(out.features, plain.features)
    with torch.no_grad():
        stem = model.aduni.backbone.act1(model.aduni.backbone.bn1(model.aduni.backbone.conv1(x)))
    torch.testing.assert_close(out.hidden_states[0], stem, rtol=0, atol=0)


def test__output_hidden_states_in_the_config():
    model = build_model(output_hidden_states=True).eval()
    with torch.no_grad():
        out = model(images(batch=2))
        off = model(images(batch=2), output_hidden_states=False)
    assert len(out.hidden_states) == 5
    assert off.hidden_states is None


def test__last_hidden_state_is_the_feature_map_before_pooling(model):
    x = images(batch=2)
    with torch.no_grad():
        bare = model.aduni(x)
        expected = model.aduni.backbone.forward_features(x)
    assert bare.last_hidden_state.shape == (2, 512, 1, 1)
    assert torch.equal(bare.last_hidden_state, expected)
    assert bare.hidden_states is None


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["resnet18", "mobilenetv3_small_050"])
def test__pooled_feature_is_exactly_the_timm_forward(backbone):
    """forward_features + forward_head(pre_logits=True) gives exactly what the headless timm model returns,
    with and without hidden states; for MobileNetV3 that is the head_hidden_size feature after conv_head."""
    model = build_model(backbone=backbone).eval()
    x = images(batch=3, seed=5)
    with torch.no_grad():
        expected = model.aduni.backbone(x)
        out = model(x)
        with_hidden = model(x, output_hidden_states=True)
    assert expected.shape == (3, model.aduni.feature_dim)
    assert torch.equal(out.pooler_output, expected)
    assert torch.equal(with_hidden.pooler_output, expected)
    assert torch.equal(out.logits, model.classifier.dense(expected))
    if backbone.startswith("mobilenet"):
        assert (
            model.aduni.feature_dim
            == model.aduni.backbone.head_hidden_size
            != model.aduni.backbone.num_features
        )


def test__batching_equivalence(model):
    x = images(batch=4, seed=9)
    with torch.no_grad():
        batched = model(x, output_hidden_states=True)
        single = [model(x[i : i + 1], output_hidden_states=True) for i in range(4)]
    for key in ("logits", "features", "pooler_output"):
        torch.testing.assert_close(batched[key], torch.cat([s[key] for s in single]), atol=1e-5, rtol=1e-5)
    for level, hidden in enumerate(batched.hidden_states):
        stacked = torch.cat([s.hidden_states[level] for s in single])
        torch.testing.assert_close(hidden, stacked, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# problem types (as transformers' image classifiers) and the pipeline's scores
# ----------------------------------------------------------------------------------------------------------


def test__single_label_loss_is_cross_entropy_and_recorded():
    model = build_model().eval()
    assert model.config.problem_type is None
    labels = torch.tensor([2, 0, 1, 2])
    with torch.no_grad():
        out = model(images(), labels=labels)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels))
    assert model.config.problem_type == "single_label_classification"


def test__multi_label_loss_is_binary_cross_entropy():
    model = build_model(problem_type="multi_label_classification").eval()
    labels = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.long)  # even integers
    with torch.no_grad():
        out = model(images(), labels=labels)
    expected = F.binary_cross_entropy_with_logits(out.logits, labels.float())
    torch.testing.assert_close(out.loss, expected)
    assert not torch.allclose(out.loss, F.cross_entropy(out.logits, labels.float()))


def test__float_labels_infer_multi_label():
    model = build_model().eval()
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    with torch.no_grad():
        out = model(images(batch=2), labels=labels)
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(out.logits, labels))
    assert model.config.problem_type == "multi_label_classification"


@pytest.mark.parametrize("labels", [torch.tensor([0.5, -1.0, 2.0, 0.0]), torch.tensor([1, 0, 3, 2])])
def test__regression_loss_is_mean_squared_error(labels):
    model = build_model(id2label={0: "score"}).eval()
    assert model.config.num_labels == 1
    with torch.no_grad():
        out = model(images(), labels=labels)
    assert out.logits.shape == (4, 1)
    torch.testing.assert_close(out.loss, F.mse_loss(out.logits.squeeze(-1), labels.float()))
    assert model.config.problem_type == "regression"


def test__loss_is_float32_for_a_bfloat16_model():
    model = build_model().to(torch.bfloat16).eval()
    labels = torch.tensor([2, 0, 1, 2])
    with torch.no_grad():
        out = model(images().to(torch.bfloat16), labels=labels)
    assert out.logits.dtype == torch.bfloat16
    assert out.loss.dtype == torch.float32
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits.float(), labels))


def pipeline_scores(model, problem_type=None) -> tuple[np.ndarray, torch.Tensor]:
    """The pipeline's score per label for one image, and the model's logits for the same pixels."""
    processor = build_image_processor(IMAGE_SIZE)
    classifier = pipeline("image-classification", model=model, image_processor=processor)
    picture = make_image(3)
    result = classifier(picture, top_k=model.config.num_labels)
    scores = np.zeros(model.config.num_labels)
    for entry in result:
        scores[model.config.label2id[entry["label"]]] = entry["score"]
    with torch.no_grad():
        logits = model(processor(images=picture, return_tensors="pt")["pixel_values"]).logits[0]
    return scores, logits


@pytest.mark.parametrize(
    ("problem_type", "labels", "to_scores"),
    [
        ("single_label_classification", torch.tensor([0, 2]), lambda z: z.softmax(-1)),
        ("multi_label_classification", torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]), torch.sigmoid),
    ],
)
def test__pipeline_scores_match_the_loss(problem_type, labels, to_scores):
    """The loss the model trains with and the pipeline's scores read the logits the same way; the problem type
    here is inferred from the labels of a first forward, then saved with the config."""
    model = build_model().eval()
    with torch.no_grad():
        out = model(images(batch=2), labels=labels)
    assert model.config.problem_type == problem_type
    if problem_type == "multi_label_classification":
        torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(out.logits, labels))
    scores, logits = pipeline_scores(model)
    np.testing.assert_allclose(scores, to_scores(logits).numpy(), atol=1e-5)


def test__pipeline_gives_raw_scores_for_regression():
    model = build_model(id2label={0: "score"}, problem_type="regression").eval()
    scores, logits = pipeline_scores(model)
    np.testing.assert_allclose(scores, logits.numpy(), atol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# gradient checkpointing (timm's set_grad_checkpointing)
# ----------------------------------------------------------------------------------------------------------


def train_steps(checkpointing: bool, backbone: str = "resnet18", steps: int = 2):
    model = build_model(backbone=backbone, classifier_dropout=0.0).train()
    if checkpointing:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model.gradient_checkpointing_enable()
    losses = []
    for step in range(steps):
        model.zero_grad()
        out = model(images(seed=20 + step), labels=torch.tensor([0, 1, 2, 1]))
        (out.loss + out.features.sum()).backward()
        losses.append(out.loss.detach())
    return model, losses


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["resnet18", "mobilenetv3_small_050"])
def test__gradient_checkpointing_gives_the_same_loss_gradients_and_running_statistics(backbone):
    plain, plain_losses = train_steps(False, backbone)
    checkpointed, losses = train_steps(True, backbone)
    assert checkpointed.is_activation_checkpointing and not plain.is_activation_checkpointing
    assert checkpointed.aduni.backbone.grad_checkpointing
    for a, b in zip(plain_losses, losses, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    plain_params = dict(plain.named_parameters())
    for name, param in checkpointed.named_parameters():
        torch.testing.assert_close(param.grad, plain_params[name].grad, atol=1e-6, rtol=0, msg=name)
    # Recomputing a segment in the backward pass does not update BatchNorm running statistics a second time.
    plain_buffers = dict(plain.named_buffers())
    for name, buffer in checkpointed.named_buffers():
        torch.testing.assert_close(buffer, plain_buffers[name], atol=1e-6, rtol=0, msg=name)
    assert {bn.momentum for bn in batchnorms(checkpointed)} == {0.1}
    assert {bn.num_batches_tracked.item() for bn in batchnorms(checkpointed)} == {2}


@pytest.mark.slow
def test__gradient_checkpointing_can_be_turned_off():
    model, _ = train_steps(True, steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model.gradient_checkpointing_disable()
    assert not model.is_activation_checkpointing and not model.aduni.backbone.grad_checkpointing
    assert not any(bn._forward_pre_hooks or bn._forward_hooks for bn in batchnorms(model))
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing and model.aduni.backbone.grad_checkpointing


@pytest.mark.slow
def test__gradient_checkpointing_on_the_bare_model():
    torch.manual_seed(0)
    model = AdUniModel(tiny_config()).train()
    model.activation_checkpointing_enable()
    assert model.backbone.grad_checkpointing
    out = model(images())
    out.features.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


# ----------------------------------------------------------------------------------------------------------
# transformers.Trainer evaluation
# ----------------------------------------------------------------------------------------------------------


class TinyImages(torch.utils.data.Dataset):
    def __init__(self, count: int) -> None:
        self.pixels = images(batch=count, seed=30)
        self.labels = torch.arange(count) % NUM_LABELS

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.pixels[index], "labels": self.labels[index]}


@pytest.mark.slow
def test__trainer_evaluate_and_predict(tmp_path):
    model = build_model().eval()
    data = TinyImages(6)

    def accuracy(prediction) -> dict[str, float]:
        logits = prediction.predictions
        assert isinstance(logits, np.ndarray) and logits.shape == (6, NUM_LABELS)  # the logits alone
        return {"accuracy": float((logits.argmax(-1) == prediction.label_ids).mean())}

    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_eval_batch_size=4, report_to=[], use_cpu=True, disable_tqdm=True
    )
    trainer = Trainer(model=model, args=args, eval_dataset=data, compute_metrics=accuracy)
    metrics = trainer.evaluate()
    with torch.no_grad():
        logits = model(data.pixels).logits
    expected_loss = (
        F.cross_entropy(logits[:4], data.labels[:4]) * 4 + F.cross_entropy(logits[4:], data.labels[4:]) * 2
    ) / 6
    assert metrics["eval_loss"] == pytest.approx(expected_loss.item(), abs=1e-5)
    assert metrics["eval_accuracy"] == pytest.approx(float((logits.argmax(-1) == data.labels).float().mean()))
    predictions = trainer.predict(data).predictions
    np.testing.assert_allclose(predictions, logits.numpy(), atol=1e-5)
