"""AdUni model: a timm encoder, a projection head for contrastive features and a linear classifier.

Architecture of the official `SupConResNet_ClassCenter` (methods.md 2.1): encoder -> pooled feature h (d);
features = normalise(Linear(d, d) - ReLU - Linear(d, 128))(h); logits = Linear(Dropout(0.5)(h)). Both heads
branch from the same un-normalised pooled feature with no stop-gradient.

Self-contained on purpose: copied next to saved weights for `trust_remote_code` loading, so it imports only
torch, timm, transformers and the configuration file beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_aduni import AdUniConfig


@dataclass
class AdUniModelOutput(ModelOutput):
    """Output of [`AdUniModel`].

    Args:
        features (`torch.FloatTensor` of shape `(batch_size, projection_dim)`): L2-normalised projections.
        pooler_output (`torch.FloatTensor` of shape `(batch_size, d)`): the un-normalised pooled encoder feature.
    """

    features: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None


@dataclass
class AdUniImageClassifierOutput(ModelOutput):
    """Output of [`AdUniForImageClassification`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, returned when `labels` are given): cross-entropy of the logits.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`): raw classifier scores (no prior).
        features (`torch.FloatTensor` of shape `(batch_size, projection_dim)`): L2-normalised projections.
        pooler_output (`torch.FloatTensor` of shape `(batch_size, d)`): the pooled encoder feature.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    features: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None


def create_backbone(config: AdUniConfig) -> nn.Module:
    """Build the timm encoder from scratch, headless, with one pooled feature per image."""
    kwargs = {"num_classes": 0, "global_pool": "avg", "zero_init_last": config.zero_init_last}
    kwargs.update(config.backbone_kwargs or {})
    try:
        return timm.create_model(config.backbone, pretrained=False, **kwargs)
    except TypeError as err:
        # Only residual families know `zero_init_last`; leave it out for the others when it is off.
        if "zero_init_last" not in str(err) or config.zero_init_last:
            raise
        kwargs.pop("zero_init_last")
        return timm.create_model(config.backbone, pretrained=False, **kwargs)


def head_linear(in_features: int, out_features: int) -> nn.Linear:
    """A Linear layer of our heads, flagged so that `_init_weights` initialises it (and no timm Linear)."""
    layer = nn.Linear(in_features, out_features)
    layer.is_aduni_head = True
    return layer


def backbone_feature_dim(backbone: nn.Module) -> int:
    """Size of the pooled feature a headless timm model returns (`head_hidden_size` where a pre-logits layer
    follows the pooling, as in MobileNetV3; `num_features` otherwise)."""
    return getattr(backbone, "head_hidden_size", None) or backbone.num_features


class AdUniProjectionHead(nn.Module):
    """Linear(d, h) - ReLU - Linear(h, projection_dim), no BatchNorm, then L2 normalisation."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int) -> None:
        super().__init__()
        self.dense = head_linear(in_features, hidden_features)
        self.activation = nn.ReLU(inplace=True)
        self.projection = head_linear(hidden_features, out_features)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:  # (B, d) -> (B, projection_dim)
        return F.normalize(self.projection(self.activation(self.dense(pooled))), dim=1)


class AdUniClassificationHead(nn.Module):
    """Dropout then Linear(d, num_labels) on the un-normalised pooled feature."""

    def __init__(self, in_features: int, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dense = head_linear(in_features, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:  # (B, d) -> (B, C)
        return self.dense(self.dropout(pooled))


class AdUniPreTrainedModel(PreTrainedModel):
    config: AdUniConfig
    config_class = AdUniConfig
    base_model_prefix = "aduni"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    # Keeps Trainer from passing `num_items_in_batch` into forward and mis-scaling the loss under gradient
    # accumulation (hf.md 1.2).
    accepts_loss_kwargs = False
    _no_split_modules = []

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save as usual; config.json's auto_map also names `AdUniModel` for `AutoModel` (remote code)."""
        auto_map = dict(getattr(self.config, "auto_map", None) or {})
        auto_map.setdefault("AutoModel", "modeling_aduni.AdUniModel")
        self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise only our heads, with PyTorch's default nn.Linear rule as in the official code.

        The timm encoder keeps timm's own initialisation (Kaiming-normal fan_out convolutions, BatchNorm 1/0);
        the default `PreTrainedModel._init_weights` would overwrite it with N(0, 0.02) (hf.md 1.3). The check is
        on the Linear itself: transformers 5 calls this only for modules with parameters still to initialise,
        such as a classifier missing from (or resized against) a checkpoint.
        """
        if isinstance(module, nn.Linear) and getattr(module, "is_aduni_head", False):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            bound = 1.0 / math.sqrt(module.in_features)
            nn.init.uniform_(module.bias, -bound, bound)


class AdUniModel(AdUniPreTrainedModel):
    """Encoder and projection head: `pixel_values` -> (`features`, `pooler_output`)."""

    def __init__(self, config: AdUniConfig) -> None:
        super().__init__(config)
        self.backbone = create_backbone(config)
        feature_dim = backbone_feature_dim(self.backbone)
        hidden = config.projection_hidden_dim or feature_dim
        self.projection_head = AdUniProjectionHead(feature_dim, hidden, config.projection_dim)
        self.post_init()

    @property
    def feature_dim(self) -> int:
        return backbone_feature_dim(self.backbone)

    def load_backbone_weights(self, path: str | Path) -> None:
        """Load encoder weights from a local timm/torchvision checkpoint (.safetensors, .pth or .bin).

        Classifier keys of the checkpoint (for example `fc.*`) that the headless encoder does not have are
        ignored; a missing encoder weight or a shape mismatch raises.
        """
        path = Path(path)
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            for key in ("state_dict", "model"):
                if isinstance(state, dict) and isinstance(state.get(key), dict):
                    state = state[key]
        own = self.backbone.state_dict()
        state = {k.removeprefix("module."): v for k, v in state.items()}
        missing = sorted(set(own) - set(state))
        if missing:
            raise ValueError(f"{path}: encoder weights missing for {self.config.backbone}: {missing[:5]}...")
        wrong = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
        if wrong:
            raise ValueError(f"{path}: shape mismatch for {wrong[:5]}")
        self.backbone.load_state_dict({k: state[k] for k in own}, strict=True)

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> AdUniModelOutput:
        """`pixel_values` of shape `(batch_size, 3, height, width)`."""
        pooled = self.backbone(pixel_values)  # (B, d)
        return AdUniModelOutput(features=self.projection_head(pooled), pooler_output=pooled)


class AdUniForImageClassification(AdUniPreTrainedModel):
    """AdUni with its classifier: `pixel_values` -> `logits`, `features` and, given `labels`, a CE `loss`.

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
            self.aduni.feature_dim, config.num_labels, config.classifier_dropout
        )
        self.post_init()

    def load_backbone_weights(self, path: str | Path) -> None:
        self.aduni.load_backbone_weights(path)

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.LongTensor | None = None, **kwargs
    ) -> AdUniImageClassifierOutput:
        """`pixel_values` `(batch_size, 3, height, width)`; `labels` `(batch_size,)` class indices."""
        encoded = self.aduni(pixel_values)
        logits = self.classifier(encoded.pooler_output)  # (B, C)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), labels.to(logits.device))
        return AdUniImageClassifierOutput(
            loss=loss, logits=logits, features=encoded.features, pooler_output=encoded.pooler_output
        )


__all__ = ["AdUniPreTrainedModel", "AdUniModel", "AdUniForImageClassification"]
