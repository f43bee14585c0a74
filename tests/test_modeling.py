"""Tests of `AdUniModel` / `AdUniForImageClassification`: the architecture of docs/method.md, "Model" (Cong et al.
2022), its initialisation (docs/hf_stack.md, "Weight initialisation") and save/load (encoder weights to start from:
test_backbone_pretrained.py).

Real timm models, built from scratch (no download), at tiny image sizes.
"""

from __future__ import annotations

import ast
import json
import math

import pytest
import safetensors.torch
import timm
import torch
import torch.nn.functional as F
from timm.models.resnet import BasicBlock
from torch import nn
from transformers import AutoModel, AutoModelForImageClassification

from aduni_hf import AdUniForImageClassification, AdUniModel
from aduni_hf.modeling_aduni import AdUniClassificationHead, AdUniProjectionHead, create_backbone
from tests.model_helpers import ID2LABEL, NUM_LABELS, build_model, images, tiny_config


@pytest.fixture(scope="module")
def model() -> AdUniForImageClassification:
    return build_model().eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A model trained for one step (so BN buffers are not at their initial values), saved to disk."""
    model = build_model(seed=3)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    out = model(images(seed=4), labels=torch.tensor([0, 1, 2, 1]))
    (out.loss + out.features.sum()).backward()
    optimizer.step()
    model.eval()
    directory = tmp_path_factory.mktemp("aduni-model")
    model.save_pretrained(directory)
    return model, directory


# ----------------------------------------------------------------------------------------------------------
# outputs
# ----------------------------------------------------------------------------------------------------------


def test__output_shapes_and_unit_features(model):
    with torch.no_grad():
        out = model(images(batch=5))
    assert out.logits.shape == (5, NUM_LABELS)
    assert out.features.shape == (5, 128)
    assert out.pooler_output.shape == (5, 512)
    torch.testing.assert_close(out.features.norm(dim=1), torch.ones(5))
    assert out.loss is None


def test__loss_is_cross_entropy_of_logits(model):
    labels = torch.tensor([2, 0, 1, 2])
    with torch.no_grad():
        out = model(images(), labels=labels)
    assert out.loss.shape == ()
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels))


def test__classifier_is_on_the_unnormalised_pooled_feature(model):
    with torch.no_grad():
        out = model(images())
        assert torch.equal(out.logits, model.classifier.dense(out.pooler_output))
        # the pooled feature is not L2-normalised
        assert not torch.allclose(out.pooler_output.norm(dim=1), torch.ones(4))
        head = model.aduni.projection_head
        expected = F.normalize(head.projection(torch.relu(head.dense(out.pooler_output))), dim=1)
    torch.testing.assert_close(out.features, expected)


def test__bare_model_outputs(model):
    with torch.no_grad():
        bare = model.aduni(images())
        full = model(images())
    assert isinstance(model.aduni, AdUniModel)
    assert torch.equal(bare.features, full.features)
    assert torch.equal(bare.pooler_output, full.pooler_output)


def test__dropout_only_in_classifier_branch():
    """In train mode the features do not depend on the dropout draw; the logits do."""
    model = build_model().train()
    x = images(batch=8)
    torch.manual_seed(10)
    first = model(x)
    torch.manual_seed(11)
    second = model(x)
    assert torch.equal(first.features, second.features)
    assert torch.equal(first.pooler_output, second.pooler_output)
    assert not torch.equal(first.logits, second.logits)


# ----------------------------------------------------------------------------------------------------------
# architecture (docs/method.md, "Model")
# ----------------------------------------------------------------------------------------------------------


def test__classifier_is_dropout_then_linear(model):
    head = model.classifier
    assert isinstance(head, AdUniClassificationHead)
    layers = list(head.children())
    assert [type(layer) for layer in layers] == [nn.Dropout, nn.Linear]
    assert layers[0].p == 0.5
    assert (layers[1].in_features, layers[1].out_features) == (512, NUM_LABELS)


def test__projection_head_is_linear_relu_linear_without_batchnorm(model):
    head = model.aduni.projection_head
    assert isinstance(head, AdUniProjectionHead)
    assert [type(layer) for layer in head.children()] == [nn.Linear, nn.ReLU, nn.Linear]
    dense, _, projection = head.children()
    assert (dense.in_features, dense.out_features) == (512, 512)
    assert (projection.in_features, projection.out_features) == (512, 128)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in head.modules())


def test__backbone_is_headless_resnet18(model):
    backbone = model.aduni.backbone
    assert backbone.num_features == 512
    assert isinstance(backbone.fc, nn.Identity)
    assert backbone.drop_rate == 0.0  # no dropout on the feature that feeds the projection head
    assert [len(getattr(backbone, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]


def test__custom_projection_sizes():
    model = build_model(projection_dim=32, projection_hidden_dim=64, classifier_dropout=0.1).eval()
    with torch.no_grad():
        out = model(images(batch=2))
    assert out.features.shape == (2, 32)
    assert model.aduni.projection_head.dense.out_features == 64
    assert model.classifier.dropout.p == 0.1


# ----------------------------------------------------------------------------------------------------------
# initialisation of a model built from scratch: timm's encoder init survives post_init; heads use torch's default
# ----------------------------------------------------------------------------------------------------------


def test__backbone_convs_keep_kaiming_normal_fan_out(model):
    convs = [(n, m) for n, m in model.aduni.backbone.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 20
    for name, conv in convs:
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        expected = math.sqrt(2.0 / fan_out)
        assert conv.weight.std().item() == pytest.approx(expected, rel=0.1), name
        assert abs(conv.weight.mean().item()) < 0.1 * expected, name
    conv1 = model.aduni.backbone.conv1
    # 64 * 7 * 7 = 3136 -> 0.02525; the HF default init would give 0.02, wiping timm's.
    assert conv1.weight.std().item() == pytest.approx(math.sqrt(2.0 / 3136), rel=0.03)


def test__batchnorm_init_has_no_zero_init_of_last_bn(model):
    backbone = model.aduni.backbone
    blocks = [m for m in backbone.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 8
    for block in blocks:
        assert torch.equal(block.bn2.weight, torch.ones_like(block.bn2.weight))
    for bn in (m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)):
        assert torch.equal(bn.weight, torch.ones_like(bn.weight))
        assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
        assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))


def test__zero_init_last_true_zeroes_last_bn():
    model = build_model(zero_init_last=True)
    blocks = [m for m in model.aduni.backbone.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 8
    for block in blocks:
        assert torch.equal(block.bn2.weight, torch.zeros_like(block.bn2.weight))
        assert torch.equal(block.bn1.weight, torch.ones_like(block.bn1.weight))


def test__heads_use_torch_default_linear_init(model):
    linears = {
        "projection.dense": model.aduni.projection_head.dense,
        "projection.projection": model.aduni.projection_head.projection,
        "classifier.dense": model.classifier.dense,
    }
    for name, linear in linears.items():
        bound = 1.0 / math.sqrt(linear.in_features)
        weight, bias = linear.weight.detach(), linear.bias.detach()
        assert weight.abs().max().item() <= bound, name
        assert bias.abs().max().item() <= bound, name
        assert weight.abs().max().item() > 0.9 * bound, name  # spread over the whole interval
        assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1), name
        assert bias.abs().sum().item() > 0, name  # not zero-initialised


def test__initialisation_is_seeded():
    a, b = build_model(seed=5), build_model(seed=5)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name


# ----------------------------------------------------------------------------------------------------------
# gradients
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test__every_parameter_gets_a_finite_gradient():
    model = build_model().train()
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    out = model(images(batch=6), labels=labels)
    targets = F.normalize(torch.randn(6, 128, generator=torch.Generator().manual_seed(2)), dim=1)
    loss = out.loss - (out.features * targets).sum()
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


# ----------------------------------------------------------------------------------------------------------
# other timm backbones
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backbone", "size", "dim"), [("resnet10t", 32, 512), ("vit_tiny_patch16_224", 224, 192)]
)
def test__other_backbones_build_and_run(backbone, size, dim):
    model = build_model(backbone=backbone).eval()
    assert model.aduni.feature_dim == dim
    with torch.no_grad():
        out = model(images(batch=2, size=size), labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, NUM_LABELS)
    assert out.pooler_output.shape == (2, dim)
    assert out.features.shape == (2, 128)
    assert torch.isfinite(out.loss)


def test__backbone_with_head_hidden_size_runs():
    model = build_model(backbone="mobilenetv3_small_050").eval()
    with torch.no_grad():
        out = model(images(batch=2))
    assert out.logits.shape == (2, NUM_LABELS)
    assert out.pooler_output.shape[1] == model.aduni.feature_dim


# ----------------------------------------------------------------------------------------------------------
# save_pretrained / from_pretrained
# ----------------------------------------------------------------------------------------------------------


def test__save_pretrained_writes_weights_config_and_remote_code(saved):
    _, directory = saved
    names = {p.name for p in directory.iterdir()}
    assert {"model.safetensors", "config.json", "configuration_aduni.py", "modeling_aduni.py"} <= names
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == "aduni"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_aduni.AdUniConfig",
        "AutoModel": "modeling_aduni.AdUniModel",
        "AutoModelForImageClassification": "modeling_aduni.AdUniForImageClassification",
    }
    assert config["id2label"] == {str(k): v for k, v in ID2LABEL.items()}
    # the remote-code files must not import the package (docs/hf_stack.md, "Remote code")
    for name in ("configuration_aduni.py", "modeling_aduni.py"):
        assert not any(module.startswith("aduni_hf") for module in imported_modules(directory / name)), name


def imported_modules(path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            modules.add("." * node.level + (node.module or ""))
    return modules


def test__auto_model_for_image_classification_round_trip(saved):
    model, directory = saved
    loaded = AutoModelForImageClassification.from_pretrained(directory).eval()
    assert type(loaded) is AdUniForImageClassification
    assert loaded.config.id2label == ID2LABEL
    x = images(seed=7)
    with torch.no_grad():
        expected, got = model(x), loaded(x)
    assert torch.equal(expected.logits, got.logits)
    assert torch.equal(expected.features, got.features)
    buffers = dict(model.named_buffers())
    assert len(buffers) == 60  # 20 BN layers x (running_mean, running_var, num_batches_tracked)
    for name, buffer in loaded.named_buffers():
        assert torch.equal(buffer, buffers[name]), name
    assert not torch.equal(buffers["aduni.backbone.bn1.running_mean"], torch.zeros(64))  # really trained
    for name, param in loaded.named_parameters():
        assert torch.equal(param, model.state_dict()[name]), name


def test__auto_model_round_trip_gives_the_bare_model(saved):
    model, directory = saved
    bare = AutoModel.from_pretrained(directory).eval()
    assert type(bare) is AdUniModel
    x = images(seed=8)
    with torch.no_grad():
        expected, got = model(x), bare(x)
    assert torch.equal(expected.features, got.features)
    assert torch.equal(expected.pooler_output, got.pooler_output)


# ----------------------------------------------------------------------------------------------------------
# tensors that from_pretrained has to create (missing from the checkpoint, or of another size): initialised as
# timm would, never left as uninitialised memory; loaded tensors stay as loaded
# ----------------------------------------------------------------------------------------------------------


def assert_default_linear_init(linear: nn.Linear) -> None:
    bound = 1.0 / math.sqrt(linear.in_features)
    weight, bias = linear.weight.detach(), linear.bias.detach()
    assert torch.isfinite(weight).all() and torch.isfinite(bias).all()
    assert weight.abs().max().item() <= bound and bias.abs().max().item() <= bound
    assert weight.abs().max().item() > 0.9 * bound
    assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.15)


def assert_kaiming_fan_out(conv: nn.Conv2d, rel: float = 0.1) -> None:
    """timm's (and the official ResNet's) conv rule: N(0, 2 / fan_out), fan_out = out_channels * kh * kw."""
    weight = conv.weight.detach()
    expected = math.sqrt(2.0 / (conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]))
    assert torch.isfinite(weight).all()
    assert weight.std().item() == pytest.approx(expected, rel=rel)
    assert abs(weight.mean().item()) < 0.1 * expected
    assert conv.bias is None or torch.equal(conv.bias, torch.zeros_like(conv.bias))


def assert_initial_batchnorm(bn: nn.BatchNorm2d) -> None:
    assert torch.equal(bn.weight, torch.ones_like(bn.weight))
    assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))
    assert bn.num_batches_tracked.item() == 0


def assert_rest_as_saved(loaded: nn.Module, model: nn.Module, created: set[str]) -> None:
    """Every tensor of `loaded` except the `created` ones equals the checkpoint's (the saved `model`)."""
    expected = model.state_dict()
    got = loaded.state_dict()
    assert created <= set(got)
    for key, value in got.items():
        if key not in created:
            assert torch.equal(value, expected[key]), key


def drop_keys(directory, tmp_path, prefix: str):
    """A copy of the saved folder whose weights lack the keys starting with `prefix`; returns it and them."""
    state = safetensors.torch.load_file(str(directory / "model.safetensors"))
    dropped = {k for k in state if k.startswith(prefix)}
    assert dropped
    for name in ("config.json", "configuration_aduni.py", "modeling_aduni.py"):
        (tmp_path / name).write_bytes((directory / name).read_bytes())
    kept = {k: v for k, v in state.items() if k not in dropped}
    safetensors.torch.save_file(kept, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    return tmp_path, dropped


def test__fresh_model_keeps_timm_init_bit_for_bit():
    """`AdUniForImageClassification(config)` after a seed: the encoder exactly as timm.create_model makes it,
    then the heads as nn.Linear followed by PyTorch's default rule, drawing from the same random stream."""
    model = build_model(seed=11, num_labels=5, id2label={i: str(i) for i in range(5)})
    after_model = torch.rand(3)

    torch.manual_seed(11)
    encoder = timm.create_model(
        "resnet18", pretrained=False, num_classes=0, global_pool="avg", zero_init_last=False
    )

    def torch_default(linear: nn.Linear) -> nn.Linear:
        nn.init.kaiming_uniform_(linear.weight, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(linear.in_features)
        nn.init.uniform_(linear.bias, -bound, bound)
        return linear

    # AdUniModel builds both projection Linears, then its post_init re-initialises them; the classifier follows.
    dense, projection = nn.Linear(512, 512), nn.Linear(512, 128)
    dense, projection = torch_default(dense), torch_default(projection)
    classifier = torch_default(nn.Linear(512, 5))
    expected = {f"aduni.backbone.{k}": v for k, v in encoder.state_dict().items()}
    for prefix, layer in (
        ("aduni.projection_head.dense", dense),
        ("aduni.projection_head.projection", projection),
        ("classifier.dense", classifier),
    ):
        expected.update({f"{prefix}.{k}": v for k, v in layer.state_dict().items()})
    got = model.state_dict()
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype and torch.equal(got[key], value), key
    assert torch.equal(torch.rand(3), after_model)  # the same random numbers were consumed
    assert not any(hasattr(t, "_is_hf_initialized") for t in [*model.parameters(), *model.buffers()])


def test__grey_scale_fine_tune_from_an_rgb_checkpoint(saved):
    model, directory = saved
    torch.manual_seed(0)
    loaded = AdUniForImageClassification.from_pretrained(
        directory, backbone_kwargs={"in_chans": 1}, ignore_mismatched_sizes=True
    ).eval()
    conv1 = loaded.aduni.backbone.conv1
    assert conv1.weight.shape == (64, 1, 7, 7)
    assert_kaiming_fan_out(conv1, rel=0.05)  # sqrt(2 / 3136) = 0.0253
    assert_rest_as_saved(loaded, model, {"aduni.backbone.conv1.weight"})
    with torch.no_grad():
        out = loaded(images(channels=1))
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.features).all()


def test__checkpoint_missing_encoder_keys(saved, tmp_path):
    model, directory = saved
    folder, dropped = drop_keys(directory, tmp_path, "aduni.backbone.layer2.")
    loaded = AdUniForImageClassification.from_pretrained(folder).eval()
    layer2 = loaded.aduni.backbone.layer2
    for module in layer2.modules():
        if isinstance(module, nn.Conv2d):
            assert_kaiming_fan_out(module, rel=0.1)
        elif isinstance(module, nn.BatchNorm2d):
            assert_initial_batchnorm(module)
    assert_rest_as_saved(loaded, model, dropped)
    with torch.no_grad():
        assert torch.isfinite(loaded(images()).logits).all()


def test__zero_init_last_applies_to_missing_keys(tmp_path):
    model = build_model(zero_init_last=True)
    model.save_pretrained(tmp_path / "saved")
    folder, _ = drop_keys(tmp_path / "saved", tmp_path, "aduni.backbone.layer3.")
    loaded = AdUniForImageClassification.from_pretrained(folder)
    for block in loaded.aduni.backbone.layer3:
        assert torch.equal(block.bn2.weight, torch.zeros_like(block.bn2.weight))
        assert torch.equal(block.bn1.weight, torch.ones_like(block.bn1.weight))


def test__classifier_from_a_bare_checkpoint_is_initialised(saved, tmp_path):
    model, _ = saved
    model.aduni.save_pretrained(tmp_path)  # an AdUniModel checkpoint: no classifier
    config = tiny_config(id2label={i: f"class{i}" for i in range(6)})  # a size no other test uses
    loaded = AdUniForImageClassification.from_pretrained(tmp_path, config=config)
    for key, value in model.aduni.state_dict().items():
        assert torch.equal(loaded.aduni.state_dict()[key], value), key
    assert_default_linear_init(loaded.classifier.dense)


def test__classifier_of_another_size_is_initialised(saved):
    model, directory = saved
    loaded = AutoModelForImageClassification.from_pretrained(
        directory,
        id2label={i: f"class{i}" for i in range(5)},
        label2id={f"class{i}": i for i in range(5)},
        ignore_mismatched_sizes=True,
    )
    assert loaded.classifier.dense.weight.shape == (5, 512)
    assert_default_linear_init(loaded.classifier.dense)
    assert_rest_as_saved(loaded, model, {"classifier.dense.weight", "classifier.dense.bias"})


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["resnet18", "mobilenetv3_small_050", "vit_tiny_patch16_224"])
def test__every_tensor_is_initialised_from_an_empty_checkpoint(backbone):
    """`from_pretrained` with nothing to load initialises every tensor by the rules of `_init_weights`: the
    encoder exactly as timm builds it from the same random state (timm's rule for each family: Kaiming fan_out
    convolutions in ResNet, fan_out per group in MobileNetV3, PyTorch's default patch embedding and truncated
    normal Linears in ViT), the heads by PyTorch's default Linear rule."""
    config = tiny_config(backbone=backbone)
    torch.manual_seed(0)
    model = AdUniForImageClassification.from_pretrained(None, config=config, state_dict={})
    for name, tensor in model.state_dict().items():
        assert tensor.device.type == "cpu", name
        if tensor.is_floating_point():
            assert torch.isfinite(tensor).all() and tensor.abs().max() < 10, name
    torch.manual_seed(0)
    expected = create_backbone(config).state_dict()
    got = model.aduni.backbone.state_dict()
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    for module in model.aduni.backbone.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            assert_initial_batchnorm(module)
    for linear in (
        model.classifier.dense,
        model.aduni.projection_head.dense,
        model.aduni.projection_head.projection,
    ):
        assert_default_linear_init(linear)
    if backbone == "resnet18":  # timm's ResNet rule, the official ResNet's
        for module in model.aduni.backbone.modules():
            if isinstance(module, nn.Conv2d) and module.weight.numel() >= 2048:
                assert_kaiming_fan_out(module, rel=0.15)
    if backbone.startswith("vit"):
        assert model.aduni.backbone.cls_token.abs().max().item() < 1e-5  # N(0, 1e-6), as timm's ViT
        assert model.aduni.backbone.pos_embed.std().item() == pytest.approx(0.02, rel=0.1)


@pytest.mark.parametrize(("backbone", "size"), [("resnet18", 32), ("test_vit_relpos", 64)])
def test__meta_device_build_then_init_weights(backbone, size):
    """Built on the meta device, materialised with `to_empty` and initialised by `init_weights`: buffers equal
    those of a normal build (including non-persistent ones, like the relative-position index of a ViT) and the
    forward pass works."""
    config = tiny_config(
        backbone=backbone, image_size=size, backbone_kwargs={"img_size": size} if "vit" in backbone else None
    )
    reference = AdUniForImageClassification(config)
    with torch.device("meta"):
        model = AdUniForImageClassification(config)
    model.to_empty(device="cpu")
    model.init_weights()
    expected = dict(reference.named_buffers())
    assert expected
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, expected[name]), name
    with torch.no_grad():
        out = model.eval()(images(batch=2, size=size))
    assert torch.isfinite(out.logits).all()


def test__non_persistent_encoder_buffers_after_from_pretrained(tmp_path):
    config = tiny_config(backbone="test_vit_relpos", image_size=64, backbone_kwargs={"img_size": 64})
    model = build_model(backbone="test_vit_relpos", image_size=64, backbone_kwargs={"img_size": 64}).eval()
    assert any(module._non_persistent_buffers_set for module in model.modules())
    model.save_pretrained(tmp_path)
    before = torch.get_rng_state()
    loaded = AdUniForImageClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.backbone == config.backbone
    # nothing random to draw: every tensor is loaded or computed
    assert torch.equal(torch.get_rng_state(), before)
    for name, buffer in loaded.named_buffers():
        assert torch.equal(buffer, dict(model.named_buffers())[name]), name
    x = images(batch=2, size=64)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)
