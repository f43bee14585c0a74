"""AdUni model: a timm encoder, a projection head for contrastive features and a linear classifier.

Architecture of the official `SupConResNet_ClassCenter` (Cong et al. 2022; docs/method.md, "Model"):
encoder -> pooled feature h (d); features = normalise(Linear(d, d) - ReLU - Linear(d, 128))(h);
logits = Linear(Dropout(0.5)(h)). Both heads branch from the same un-normalised pooled feature with no
stop-gradient. With `config.classifier_type = "cosine"` the classifier is LDAM-DRW's normalised linear layer
instead (Cao et al. 2019; kaidic/LDAM-DRW, models/resnet_cifar.py, `NormedLinear`):
logits = normalise(Dropout(0.5)(h)) . normalise(w_c), one cosine in [-1, 1] per class, no bias.

Self-contained on purpose: copied next to saved weights for `trust_remote_code` loading (docs/hf_stack.md,
"Remote code"), so it imports only the standard library, torch, timm, transformers and the configuration file
beside it.
"""

from __future__ import annotations

import logging
import math
import os
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.utils import ModelOutput

from .configuration_aduni import AdUniConfig

logger = logging.getLogger(__name__)


@dataclass
class AdUniModelOutput(ModelOutput):
    """Output of [`AdUniModel`] (with `return_dict=False`, the tuple of the fields that are not `None`).

    Args:
        last_hidden_state (`torch.FloatTensor`, e.g. `(batch_size, d, h, w)` for a CNN): the encoder's last
            feature map before pooling (timm's `forward_features`).
        pooler_output (`torch.FloatTensor` of shape `(batch_size, d)`): the un-normalised pooled encoder feature.
        features (`torch.FloatTensor` of shape `(batch_size, projection_dim)`): L2-normalised projections.
        hidden_states (`tuple(torch.FloatTensor)`, returned with `output_hidden_states=True`): the encoder's
            feature maps, the stem first and then the output of every stage (timm's `forward_intermediates`).
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    features: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class AdUniImageClassifierOutput(ModelOutput):
    """Output of [`AdUniForImageClassification`] (with `return_dict=False`, the tuple of the fields that are not
    `None`).

    Args:
        loss (`torch.FloatTensor` of shape `()`, returned when `labels` are given): float32 loss of the logits,
            chosen by `config.problem_type` (see [`AdUniForImageClassification.forward`]).
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`): raw classifier scores (no prior).
        features (`torch.FloatTensor` of shape `(batch_size, projection_dim)`): L2-normalised projections.
        pooler_output (`torch.FloatTensor` of shape `(batch_size, d)`): the pooled encoder feature.
        hidden_states (`tuple(torch.FloatTensor)`, returned with `output_hidden_states=True`): as in
            [`AdUniModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    features: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


def create_backbone(config: AdUniConfig, pretrained: bool = False) -> nn.Module:
    """Build the timm encoder, headless, with one pooled feature per image: from scratch, or (`pretrained=True`)
    with the weights `config.backbone_pretrained` names, loaded by timm itself (`pretrained_backbone_source`).

    A pretrained load that timm could only do in part (keys of the encoder missing from the weights, or keys of the
    weights the encoder lacks: timm loads a headless model with `strict=False` and only logs them) is refused with
    a `ValueError` naming the field and the keys, as is a Hub model of another architecture than `backbone`.
    """
    if not pretrained:
        return _create_timm(config, config.backbone, pretrained=False)
    source = config.backbone_pretrained
    if not source:
        raise ValueError("backbone_pretrained is not set: there are no encoder weights to load")
    name, overlay = pretrained_backbone_source(config.backbone, source)
    with _timm_load_report() as unmatched:
        try:
            backbone = _create_timm(config, name, pretrained=True, overlay=overlay)
        except Exception as err:
            raise _pretrained_error(source, name, err) from err
    if unmatched:
        raise ValueError(
            f"backbone_pretrained={source!r}: timm could load these weights only in part into the {config.backbone} "
            f"encoder (built headless with global_pool 'avg' and backbone_kwargs {config.backbone_kwargs or {}}): "
            f"{' '.join(unmatched)} Give weights of a timm {config.backbone}, or set backbone (and backbone_kwargs) "
            "as the weights were trained"
        )
    _check_architecture(config, source, backbone)
    return backbone


def _create_timm(config: AdUniConfig, name: str, pretrained: bool, overlay: dict | None = None) -> nn.Module:
    kwargs = {"num_classes": 0, "global_pool": "avg", "zero_init_last": config.zero_init_last}
    kwargs.update(config.backbone_kwargs or {})
    if overlay:
        kwargs["pretrained_cfg_overlay"] = overlay
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as err:
        # Only residual families know `zero_init_last`; leave it out for the others when it is off.
        if "zero_init_last" not in str(err) or config.zero_init_last:
            raise
        kwargs.pop("zero_init_last")
        return timm.create_model(name, pretrained=pretrained, **kwargs)


# Suffixes of weight files: a `backbone_pretrained` ending so that is not on disk is a missing file, not a Hub id.
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".tar")
_HUB_PREFIXES = ("hf-hub:", "hf_hub:")


def pretrained_backbone_source(backbone: str, source: str) -> tuple[str, dict | None]:
    """The model name and `pretrained_cfg_overlay` with which `timm.create_model(..., pretrained=True)` loads
    `source`:

    - a local file: `backbone` with `pretrained_cfg_overlay=dict(file=...)`; its normalisation is that of
      `backbone`'s timm weights (its default tag, or the tag `backbone` names, e.g. `resnet18.tv_in1k`);
    - a local folder holding a timm model (`config.json` and weights, as `hf download` leaves a Hub model):
      timm's `local-dir:` source, which reads the architecture and normalisation from its config.json;
    - otherwise a Hub id (`timm/resnet18.a1_in1k`, optionally prefixed `hf-hub:`): timm's `hf-hub:` source,
      which downloads config.json and the weights into the Hugging Face cache.

    Raises `FileNotFoundError` for a path that does not exist (a weights suffix, a leading `/`, `.` or `~`, or
    not of the Hub's `owner/name` form).
    """
    path = Path(source).expanduser()
    if path.is_file():
        return backbone, {"file": str(path)}
    if path.is_dir():
        return f"local-dir:{path}", None
    hub_id = source.split(":", 1)[1] if source.startswith(_HUB_PREFIXES) else source
    if (
        source.startswith(("/", ".", "~"))
        or source.lower().endswith(_WEIGHT_SUFFIXES)
        or hub_id.count("/") != 1
        or (os.sep != "/" and os.sep in source)
    ):
        raise FileNotFoundError(
            f"backbone_pretrained={source!r}: no such file or folder, and not a Hub id (owner/name). Give a local "
            "weights file (.safetensors, .pth), a local timm model folder, or a Hub id such as "
            "timm/resnet18.a1_in1k"
        )
    return f"hf-hub:{hub_id}", None


def pretrained_backbone_cfg(config: AdUniConfig) -> dict:
    """timm's `pretrained_cfg` of `config.backbone_pretrained` (its `mean` and `std` above all), as the encoder loaded
    from it would carry it, without loading any weights (built on the meta device; a Hub model's config.json is
    fetched into the cache)."""
    source = config.backbone_pretrained
    name, overlay = pretrained_backbone_source(config.backbone, source)
    try:
        with torch.device("meta"):
            backbone = _create_timm(config, name, pretrained=False, overlay=overlay)
    except Exception as err:
        raise _pretrained_error(source, name, err) from err
    _check_architecture(config, source, backbone)
    return dict(backbone.pretrained_cfg)


def _check_architecture(config: AdUniConfig, source: str, backbone: nn.Module) -> None:
    """A Hub model or timm folder brings its own architecture: it must be the recipe's `backbone`."""
    found = backbone.pretrained_cfg.get("architecture")
    expected = timm.models.split_model_name_tag(config.backbone)[0]
    if found is not None and found != expected:
        raise ValueError(
            f"backbone_pretrained={source!r} holds a timm {found!r}, but backbone is {config.backbone!r}: set "
            f"backbone: {found}, or give weights of a {expected}"
        )


def _pretrained_error(source: str, name: str, err: Exception) -> Exception:
    """`err` (raised while timm built or loaded `source`) as an error naming the field; for the Hub, how to use a
    local copy instead (without network only what the cache holds loads)."""
    text = " ".join(str(err).split()) or type(err).__name__
    what = text if len(text) <= 600 else text[:600] + " ..."
    from_hub = name.startswith("hf-hub:") and (
        isinstance(err, OSError) or type(err).__module__.split(".")[0] in ("huggingface_hub", "httpx")
    )
    if not from_hub:
        return ValueError(f"backbone_pretrained={source!r}: timm could not build the encoder from it: {what}")
    hub_id = name.removeprefix("hf-hub:")
    folder = hub_id.split("/")[-1]
    return OSError(
        f"backbone_pretrained={source!r}: timm could not fetch this Hub model ({type(err).__name__}: {what}). "
        "Without network (HF_HUB_OFFLINE=1, or no connection) only a model already in the Hugging Face cache loads. "
        f"Use a local copy: where there is network run `hf download {hub_id} --local-dir {folder}`, bring the folder "
        f"here and set backbone_pretrained: {folder} (the folder; timm reads its config.json) or backbone_pretrained: "
        f"{folder}/model.safetensors (the file alone, with the normalisation of backbone's timm weights)"
    )


@contextmanager
def _timm_load_report():
    """Collect what timm reports about a pretrained load it could not match key for key. timm loads a model whose
    classifier it drops (`num_classes=0`, ours) with `strict=False` and only logs the missing keys (at info level)
    and the unexpected ones (timm.models._builder, `load_pretrained`); here both are kept, to be refused. The
    logger lets its records through as before (an info record only where info was enabled)."""
    unmatched: list[str] = []
    log = logging.getLogger("timm.models._builder")
    shown_from = log.getEffectiveLevel()

    def collect(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(("Missing keys", "Unexpected keys")):
            keys = message.split(" discovered")[0].split(" found")[0]
            unmatched.append((keys if len(keys) <= 600 else keys[:600] + " ...") + ".")
        return record.levelno >= shown_from

    level = log.level
    log.addFilter(collect)
    log.setLevel(min(shown_from, logging.INFO))
    try:
        yield unmatched
    finally:
        log.removeFilter(collect)
        log.setLevel(level)


def head_linear(in_features: int, out_features: int) -> nn.Linear:
    """A Linear layer of our heads, flagged so that `_init_weights` gives it PyTorch's default rule."""
    layer = nn.Linear(in_features, out_features)
    layer.is_aduni_head = True
    return layer


def backbone_feature_dim(backbone: nn.Module) -> int:
    """Size of the pooled feature a headless timm model returns (`head_hidden_size` where a pre-logits layer
    follows the pooling, as in MobileNetV3; `num_features` otherwise)."""
    return getattr(backbone, "head_hidden_size", None) or backbone.num_features


def _is_initialised(tensor: torch.Tensor | None) -> bool:
    return tensor is None or getattr(tensor, "_is_hf_initialized", False)


def _default_device() -> torch.device:
    """The device new tensors get here (the innermost `with torch.device(...)`, else the global default)."""
    return torch.empty(0).device


def _random_state_kept(device: torch.device):
    """A context in which random draws on the CPU and on `device` are undone at the end (`fork_rng`)."""
    if device.type in ("cpu", "meta"):
        return torch.random.fork_rng(devices=[])
    index = device.index
    if index is None:
        backend = getattr(torch, device.type)
        index = backend.current_device() if hasattr(backend, "current_device") else 0
    return torch.random.fork_rng(devices=[index], device_type=device.type)


def _timm_supports_checkpointing(backbone: nn.Module) -> bool:
    """Whether timm can checkpoint this encoder: it has `set_grad_checkpointing`, and turning it on does not raise
    (timm models without support assert that it stays off). Called before checkpointing is turned on; leaves it
    off."""
    toggle = getattr(backbone, "set_grad_checkpointing", None)
    if not callable(toggle):
        return False
    try:
        toggle(True)
        return True
    except Exception:
        return False
    finally:
        try:
            toggle(False)
        except Exception:
            pass


def _in_backward_pass() -> bool:
    """True while autograd executes a backward pass (where activation checkpointing recomputes forwards)."""
    task_id = getattr(torch._C, "_current_graph_task_id", None)
    return task_id is not None and task_id() != -1


def _freeze_running_stats_in_recomputation(module: nn.Module, args) -> None:
    """Forward pre-hook of a BatchNorm layer while checkpointing. A recomputation in the backward pass normalises
    with the batch statistics as the first forward did, but must not update the running statistics (nor count the
    batch) a second time: momentum 0 keeps them as they are, and the post-hook restores the momentum and the
    count. The layer still receives its running-statistics buffers, so the recomputation saves the same tensors
    as the forward did (which non-reentrant checkpointing checks)."""
    if module.training and module.track_running_stats and _in_backward_pass():
        count = module.num_batches_tracked
        module._aduni_frozen = (module.momentum, None if count is None else int(count))
        module.momentum = 0.0


def _unfreeze_running_stats(module: nn.Module, args, output) -> None:
    # Registered with always_call=True: non-reentrant checkpointing stops a recomputation with an exception
    # raised inside the forward of the last layer it needs, and this must still run then.
    frozen = module.__dict__.pop("_aduni_frozen", None)
    if frozen is not None:
        module.momentum, count = frozen
        if count is not None:
            module.num_batches_tracked.fill_(count)


def _classification_loss(logits: torch.Tensor, labels: torch.Tensor, config: AdUniConfig) -> torch.Tensor:
    """Loss of the logits, in float32, chosen by `config.problem_type` as transformers' image classifiers choose
    it (and, as they do, recorded in the config when it was unset, so the saved config and the pipeline agree):
    regression (MSE) when `num_labels == 1`, single-label cross-entropy for integer labels, multi-label
    binary cross-entropy with logits otherwise."""
    logits = logits.float()
    labels = labels.to(logits.device)
    if config.problem_type is None:
        if config.num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "regression":
        if config.num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.float().squeeze())
        return F.mse_loss(logits, labels.float())
    if config.problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, config.num_labels), labels.view(-1).long())
    if config.problem_type == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    raise ValueError(f"unknown problem_type {config.problem_type!r}")


class AdUniProjectionHead(nn.Module):
    """Linear(d, h) - ReLU - Linear(h, projection_dim), no BatchNorm, then L2 normalisation."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int) -> None:
        super().__init__()
        self.dense = head_linear(in_features, hidden_features)
        self.activation = nn.ReLU(inplace=True)
        self.projection = head_linear(hidden_features, out_features)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:  # (B, d) -> (B, projection_dim)
        return F.normalize(self.projection(self.activation(self.dense(pooled))), dim=1)


class AdUniCosineLinear(nn.Module):
    """Cosine classifier: the cosine similarity between the input and every class weight row, no bias.

    LDAM-DRW's `NormedLinear` (kaidic/LDAM-DRW, models/resnet_cifar.py) with the weight laid out as in
    nn.Linear, one row per class: (num_labels, d) here, (d, num_labels) there. Shapes: (B, d) -> (B, num_labels),
    every entry in [-1, 1].
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official rule (what `_init_weights` applies too): every entry uniform in [-1, 1], then every class
        row rescaled to unit L2 norm (the official code clips each class vector's norm to 1e-5 with `renorm_` and
        multiplies by 1e5)."""
        with torch.no_grad():
            _unit_rows_(self.weight.uniform_(-1.0, 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(x, dim=-1), F.normalize(self.weight, dim=-1))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias=False"


def _unit_rows_(weight: torch.Tensor) -> torch.Tensor:
    """Rescale every row of a (C, d) weight to L2 norm 1 in place, as the official `renorm_(2, dim, 1e-5)` then
    `mul_(1e5)` of the class vectors does."""
    return weight.renorm_(2, 0, 1e-5).mul_(1e5)


class AdUniClassificationHead(nn.Module):
    """Dropout then the classifier on the un-normalised pooled feature: Linear(d, num_labels) with bias
    (`classifier_type="linear"`), or the cosine classifier `AdUniCosineLinear` (`"cosine"`). Either way the layer
    is `dense`, so the state dict keys are `classifier.dense.weight` (and `classifier.dense.bias` for linear)."""

    def __init__(
        self, in_features: int, num_labels: int, dropout: float, classifier_type: str = "linear"
    ) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        if classifier_type == "linear":
            self.dense = head_linear(in_features, num_labels)
        elif classifier_type == "cosine":
            self.dense = AdUniCosineLinear(in_features, num_labels)
        else:
            raise ValueError(f"classifier_type must be 'linear' or 'cosine', got {classifier_type!r}")

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:  # (B, d) -> (B, C)
        return self.dense(self.dropout(pooled))


class AdUniPreTrainedModel(PreTrainedModel):
    config: AdUniConfig
    config_class = AdUniConfig
    base_model_prefix = "aduni"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    # Keeps Trainer from passing `num_items_in_batch` into forward and mis-scaling the loss under gradient
    # accumulation (docs/hf_stack.md).
    accepts_loss_kwargs = False
    # Activation checkpointing is timm's own (`set_grad_checkpointing`), as in transformers' TimmWrapper
    # models: the class does not claim transformers' `GradientCheckpointingLayer` contract (no module of the
    # model is one), and `post_init` sets the instance attribute to whether the timm encoder supports it
    # (docs/hf_stack.md, "Activation checkpointing").
    supports_gradient_checkpointing = False
    _no_split_modules = []

    def post_init(self):
        base = self.base_model
        if base is self:
            self.supports_gradient_checkpointing = _timm_supports_checkpointing(self.backbone)
        else:
            self.supports_gradient_checkpointing = base.supports_gradient_checkpointing
        super().post_init()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save as usual; config.json's auto_map also names `AdUniModel` for `AutoModel` (remote code).

        safetensors writes its files with mode 0600; they get the mode any other new file gets (0666 less the
        umask), so a saved model is as readable as its config.json.
        """
        auto_map = dict(getattr(self.config, "auto_map", None) or {})
        auto_map.setdefault("AutoModel", "modeling_aduni.AdUniModel")
        self.config.auto_map = auto_map
        result = super().save_pretrained(save_directory, *args, **kwargs)
        umask = os.umask(0)
        os.umask(umask)
        for weights in Path(save_directory).glob("*.safetensors"):
            os.chmod(weights, 0o666 & ~umask)
        return result

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise `module`'s tensors that still need it (docs/hf_stack.md, "Weight initialisation";
        docs/method.md, "Model").

        transformers calls this for every module: from `post_init` after `__init__`, from `init_weights` (a model
        built on the meta device), and in `from_pretrained` for the tensors the checkpoint did not provide (missing
        keys, sizes changed with `ignore_mismatched_sizes` such as a grey-scale `conv1` or a classifier for other
        labels, non-persistent buffers). Loaded tensors are flagged `_is_hf_initialized`; the
        `transformers.initialization` functions used here leave them as they are.

        Rules: our head Linears, PyTorch's default nn.Linear rule (the official code); the cosine classifier,
        LDAM-DRW's `NormedLinear` rule (uniform in [-1, 1], then every class row rescaled to unit norm); the timm
        encoder as a whole, at its root module (`AdUniModel._init_encoder`): every tensor of it that needs it is
        copied from an encoder that timm builds from the config at that moment, so it is exactly what
        `timm.create_model` gives from the current random state, for any timm family (`zero_init_last` as
        configured). The encoder's submodules have no rule of their own.
        """
        if isinstance(module, nn.Linear) and getattr(module, "is_aduni_head", False):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            bound = 1.0 / math.sqrt(module.in_features)
            init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, AdUniCosineLinear):
            if not _is_initialised(module.weight):  # a loaded weight stays as loaded
                init.uniform_(module.weight, -1.0, 1.0)
                with torch.no_grad():
                    _unit_rows_(module.weight)
        elif module is getattr(self.base_model, "backbone", None):
            self.base_model._init_encoder()

    def _initialize_weights(self, module: nn.Module, is_custom_code: bool = False) -> None:
        # transformers treats a model class defined outside the library as "custom code" and then skips every
        # module whose own tensors are all flagged as initialised, including modules with no tensors of their
        # own (the timm encoder's root module, AdUniModel itself), in case `_init_weights` overwrites loaded
        # tensors. Ours only writes through the flag-aware `transformers.initialization` functions, so every
        # module gets `_init_weights`.
        super()._initialize_weights(module, is_custom_code=False)

    def _set_gradient_checkpointing(
        self, enable: bool = True, gradient_checkpointing_func=None, every_n_layers=1
    ):
        """Called by `gradient_checkpointing_enable` / `activation_checkpointing_enable` (and `..._disable`)."""
        self.base_model._set_gradient_checkpointing(enable, gradient_checkpointing_func, every_n_layers)


class AdUniModel(AdUniPreTrainedModel):
    """Encoder and projection head: `pixel_values` -> `features`, `pooler_output`, `last_hidden_state` (and,
    with `output_hidden_states=True`, `hidden_states`).

    Gradient checkpointing (`model.gradient_checkpointing_enable()`) is timm's `set_grad_checkpointing`: timm
    chooses the segments (blocks or stages) and its own checkpoint function, so `gradient_checkpointing_kwargs`
    and `every_n_layers` have no effect. As in transformers' TimmWrapper models, the class attribute
    `supports_gradient_checkpointing` is False (no module is a transformers `GradientCheckpointingLayer`) and
    `post_init` sets the instance's to whether the timm encoder supports it (docs/hf_stack.md, "Activation
    checkpointing"). Recomputing a segment in the backward pass would run its BatchNorm layers a second time in
    train mode and update their running statistics twice per step (and count the batch twice); while
    checkpointing is on, forward hooks on the encoder's BatchNorm layers stop that second update, so running
    statistics match training without checkpointing.
    """

    def __init__(self, config: AdUniConfig) -> None:
        super().__init__(config)
        device = _default_device()
        if device.type == "meta":  # from_pretrained: loading and `_init_weights` fill the encoder
            self.backbone = create_backbone(config)
        else:
            # A complete encoder (its buffers as timm computes them) whose random draws are undone; then the
            # encoder's `_init_weights` replaces its tensors with those of the encoder timm builds from the
            # random state the model started from. The model's encoder is thus exactly `timm.create_model`'s,
            # drawing the same random numbers, and it is initialised by `_init_weights` as on the meta device.
            with _random_state_kept(device):
                self.backbone = create_backbone(config)
            if not is_deepspeed_zero3_enabled():  # ZeRO-3 initialises partitioned weights after __init__
                with torch.no_grad(), init.guard_torch_init_functions():
                    self._initialize_weights(self.backbone)
        feature_dim = backbone_feature_dim(self.backbone)
        hidden = config.projection_hidden_dim or feature_dim
        self.projection_head = AdUniProjectionHead(feature_dim, hidden, config.projection_dim)
        self.gradient_checkpointing = False
        self._batchnorm_hooks: list = []
        self.post_init()

    @property
    def feature_dim(self) -> int:
        return backbone_feature_dim(self.backbone)

    def _init_encoder(self) -> None:
        """Fill the encoder's tensors that are not initialised (not loaded, not filled before) with those of an
        encoder that timm builds from the config now, on their device. It draws random numbers as
        `timm.create_model` does, unless only non-persistent buffers (index tables, fixed filters: nothing random)
        need filling; then the random state is left as it was. Nothing to fill, nothing built."""
        backbone = self.backbone
        tensors = [*backbone.named_parameters(remove_duplicate=False), *backbone.named_buffers()]
        missing = [(name, tensor) for name, tensor in tensors if not _is_initialised(tensor)]
        if not missing or missing[0][1].device.type == "meta":
            return
        device = missing[0][1].device
        with ExitStack() as stack:
            if all(self._is_non_persistent(name) for name, _ in missing):
                stack.enter_context(_random_state_kept(device))
            stack.enter_context(torch.device(device))
            reference = create_backbone(self.config)
        expected = dict([*reference.named_parameters(remove_duplicate=False), *reference.named_buffers()])
        for name, tensor in missing:
            init.copy_(tensor, expected[name])

    def _is_non_persistent(self, name: str) -> bool:
        parent, _, leaf = name.rpartition(".")
        return leaf in self.backbone.get_submodule(parent)._non_persistent_buffers_set

    def _set_gradient_checkpointing(
        self, enable: bool = True, gradient_checkpointing_func=None, every_n_layers=1
    ):
        if not callable(getattr(self.backbone, "set_grad_checkpointing", None)):
            raise ValueError(f"timm model {self.config.backbone!r} does not support gradient checkpointing")
        self.backbone.set_grad_checkpointing(enable)
        self.gradient_checkpointing = enable
        for handle in self._batchnorm_hooks:
            handle.remove()
        self._batchnorm_hooks = []
        if enable:
            for module in self.backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    self._batchnorm_hooks.append(
                        module.register_forward_pre_hook(_freeze_running_stats_in_recomputation)
                    )
                    self._batchnorm_hooks.append(
                        module.register_forward_hook(_unfreeze_running_stats, always_call=True)
                    )

    def load_pretrained_backbone(self) -> None:
        """Give the encoder the weights `config.backbone_pretrained` names, as timm loads them
        (`timm.create_model(..., pretrained=True)`: a local file through `pretrained_cfg_overlay=dict(file=...)`, a
        timm folder or a Hub id through timm's `local-dir:` / `hf-hub:` sources; see `create_backbone`).

        Called by the training recipe after the model is built, so that `post_init`'s initialisation cannot
        overwrite the weights (docs/hf_stack.md, "Weight initialisation"); never by `__init__` or `from_pretrained`,
        whose weights are the checkpoint's. The encoder's parameters and buffers (BatchNorm running statistics
        included) are replaced in place; the heads are left as they are. On any error nothing is changed.
        """
        with torch.device("cpu"):
            pretrained = create_backbone(self.config, pretrained=True)
        self.backbone.load_state_dict(pretrained.state_dict())
        logger.info("encoder weights loaded by timm from %s", self.config.backbone_pretrained)

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> AdUniModelOutput | tuple[torch.Tensor, ...]:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`): images.
            output_hidden_states (`bool`, *optional*): also return the encoder's stage feature maps; defaults to
                `config.output_hidden_states`.
            return_dict (`bool`, *optional*): return an [`AdUniModelOutput`] rather than a tuple; defaults to
                `config.return_dict`.
        """
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if return_dict is None:
            return_dict = self.config.return_dict
        backbone = self.backbone
        hidden_states = None
        if output_hidden_states:
            if not callable(getattr(backbone, "forward_intermediates", None)):
                raise ValueError(f"timm model {self.config.backbone!r} cannot return hidden states")
            last_hidden_state, intermediates = backbone.forward_intermediates(pixel_values)
            hidden_states = tuple(intermediates)
        else:
            last_hidden_state = backbone.forward_features(pixel_values)
        pooled = backbone.forward_head(last_hidden_state, pre_logits=True)  # (B, d)
        output = AdUniModelOutput(
            last_hidden_state=last_hidden_state,
            pooler_output=pooled,
            features=self.projection_head(pooled),
            hidden_states=hidden_states,
        )
        return output if return_dict else output.to_tuple()


class AdUniForImageClassification(AdUniPreTrainedModel):
    """AdUni with its classifier: `pixel_values` -> `logits`, `features` and, given `labels`, a `loss`.

    Example:

    ```python
    >>> import torch
    >>> from aduni_hf import AdUniConfig, AdUniForImageClassification
    >>> model = AdUniForImageClassification(AdUniConfig(num_labels=3, image_size=64)).eval()
    >>> out = model(torch.randn(2, 3, 64, 64), labels=torch.tensor([0, 2]))
    >>> out.logits.shape, out.features.shape
    (torch.Size([2, 3]), torch.Size([2, 128]))
    ```
    """

    def __init__(self, config: AdUniConfig) -> None:
        super().__init__(config)
        self.aduni = AdUniModel(config)
        self.classifier = AdUniClassificationHead(
            self.aduni.feature_dim, config.num_labels, config.classifier_dropout, config.classifier_type
        )
        self.post_init()

    def load_pretrained_backbone(self) -> None:
        """Load `config.backbone_pretrained` into the encoder (`AdUniModel.load_pretrained_backbone`)."""
        self.aduni.load_pretrained_backbone()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> AdUniImageClassifierOutput | tuple[torch.Tensor, ...]:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`): images.
            labels (`torch.Tensor`, *optional*): targets of the loss, chosen by `config.problem_type` as in
                transformers' image classifiers: class indices `(batch_size,)` (cross-entropy), multi-hot
                `(batch_size, num_labels)` floats (binary cross-entropy with logits) or, with `num_labels == 1`,
                regression targets (mean squared error). An unset `problem_type` is inferred from the labels and
                recorded in the config.
            output_hidden_states (`bool`, *optional*): also return the encoder's stage feature maps.
            return_dict (`bool`, *optional*): return an [`AdUniImageClassifierOutput`] rather than a tuple.
        """
        if return_dict is None:
            return_dict = self.config.return_dict
        encoded = self.aduni(pixel_values, output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.classifier(encoded.pooler_output)  # (B, C)
        loss = None if labels is None else _classification_loss(logits, labels, self.config)
        output = AdUniImageClassifierOutput(
            loss=loss,
            logits=logits,
            features=encoded.features,
            pooler_output=encoded.pooler_output,
            hidden_states=encoded.hidden_states,
        )
        return output if return_dict else output.to_tuple()


__all__ = ["AdUniPreTrainedModel", "AdUniModel", "AdUniForImageClassification"]
