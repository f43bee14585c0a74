"""Configuration of the AdUni model (Cong et al., MLMI 2022).

Self-contained on purpose: this file is copied next to saved weights so that
`AutoConfig.from_pretrained(dir, trust_remote_code=True)` works where `aduni_hf` is not installed
(docs/hf_stack.md, "Remote code"). It may import only the standard library, `transformers` and `timm`.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import field, fields

from transformers import PreTrainedConfig

logger = logging.getLogger(__name__)

# The classifiers `classifier_type` can name (see AdUniConfig's docstring).
CLASSIFIER_TYPES = ("linear", "cosine")

# How close (difflib ratio) an unknown key must be to one of AdUniConfig's own fields to be reported as a
# probable typo ("img_size" -> "image_size" is 0.89; "hidden_size" -> "image_size" is 0.67 and is not reported).
_NEAR_MISS_CUTOFF = 0.75


class AdUniConfig(PreTrainedConfig):
    r"""Configuration of [`AdUniModel`] and [`AdUniForImageClassification`].

    Args:
        backbone (`str`, *optional*, defaults to `"resnet18"`):
            Name of a timm model used as the encoder (any name `timm.list_models()` knows). It is built
            with `num_classes=0` and average pooling, so it returns one pooled feature per image.
        projection_dim (`int`, *optional*, defaults to 128):
            Output size of the projection head, Linear(d, d) - ReLU - Linear(d, projection_dim).
        projection_hidden_dim (`int`, *optional*):
            Hidden size of the projection head; defaults to the backbone's feature size d.
        classifier_dropout (`float`, *optional*, defaults to 0.5):
            Dropout before the classifier (the official code passes `drop=0.5`).
        classifier_type (`str`, *optional*, defaults to `"linear"`):
            The classifier on the dropped-out pooled feature: `"linear"`, a Linear layer with bias (AdUni's);
            or `"cosine"`, the cosine similarity between the L2-normalised feature and the L2-normalised class
            weight rows, without bias, so every logit lies in [-1, 1] (the `NormedLinear` that LDAM-DRW trains,
            Cao et al. 2019).
        image_size (`int`, *optional*, defaults to 384):
            Side of the square input the model was trained on; the saved image processor resizes to it.
        zero_init_last (`bool`, *optional*, defaults to `False`):
            timm zero-initialises the last BatchNorm of every residual block by default; the official AdUni
            ResNet does not, so the default is `False` (docs/method.md, "Model").
        backbone_kwargs (`dict`, *optional*):
            Extra keyword arguments for `timm.create_model`.
        backbone_pretrained (`str`, *optional*):
            The encoder weights training started from, loaded by timm (`AdUniModel.load_pretrained_backbone`): a
            local weights file (`.safetensors`, `.pth`), a local timm model folder (`config.json` and weights) or a
            Hub id such as `timm/resnet18.a1_in1k`. `None`: from scratch. A record only for a saved model: neither
            `__init__` nor `from_pretrained` loads it (the trained weights are in `model.safetensors`).
        num_labels / id2label / label2id / problem_type / return_dict / output_hidden_states: as in every
            transformers classification config.

    Like every `PreTrainedConfig`, other keyword arguments (and other keys of a `config.json`) are kept as
    attributes and saved again, so a saved config always loads. A key that looks like a misspelt AdUni field
    (`img_size`) is kept too, with a warning naming the field it probably meant; field values are validated
    (`ValueError` naming the field).

    Example:

    ```python
    >>> from aduni_hf import AdUniConfig
    >>> config = AdUniConfig(num_labels=7, image_size=384)
    >>> config.backbone, config.projection_dim
    ('resnet18', 128)
    ```
    """

    model_type = "aduni"
    # Outputs that `Trainer.evaluate` / `predict` leave out of the predictions, so that (as for ResNet) the
    # predictions are the logits alone. A class attribute: not a field, not saved.
    keys_to_ignore_at_inference = ["features", "pooler_output", "hidden_states"]

    backbone: str = field(
        default="resnet18", metadata={"help": "timm model name of the encoder (see timm.list_models())."}
    )
    projection_dim: int = field(
        default=128, metadata={"help": "Output size of the projection head (the contrastive feature)."}
    )
    projection_hidden_dim: int | None = field(
        default=None,
        metadata={"help": "Hidden size of the projection head; default: the encoder's pooled feature size."},
    )
    classifier_dropout: float = field(
        default=0.5, metadata={"help": "Dropout before the classifier, in [0, 1)."}
    )
    classifier_type: str = field(
        default="linear",
        metadata={
            "help": "Classifier: 'linear' (Linear with bias, AdUni) or 'cosine' (normalised, for LDAM-DRW)."
        },
    )
    image_size: int = field(
        default=384, metadata={"help": "Side of the square input image for training and inference."}
    )
    zero_init_last: bool = field(
        default=False,
        metadata={
            "help": "Zero-init the last BatchNorm of each residual block (timm default; not official)."
        },
    )
    backbone_kwargs: dict | None = field(
        default=None, metadata={"help": "Extra keyword arguments for timm.create_model."}
    )
    backbone_pretrained: str | None = field(
        default=None,
        metadata={"help": "Encoder weights timm loads to start from: a file, a timm folder or a Hub id; none: from scratch."},
    )

    def __post_init__(self, **kwargs):
        self._validate_fields()
        self._warn_near_misses(kwargs)
        super().__post_init__(**kwargs)

    @classmethod
    def aduni_field_names(cls) -> tuple[str, ...]:
        """The fields AdUniConfig adds to `PreTrainedConfig`, in declaration order."""
        base = {f.name for f in fields(PreTrainedConfig)}
        return tuple(f.name for f in fields(cls) if f.name not in base)

    def _warn_near_misses(self, kwargs: dict) -> None:
        own = self.aduni_field_names()
        for key in kwargs:
            if key.startswith("_"):
                continue
            match = difflib.get_close_matches(key, own, n=1, cutoff=_NEAR_MISS_CUTOFF)
            if match:
                logger.warning(
                    "AdUniConfig got the unknown key %r (did you mean %r?). It is kept as an attribute and has "
                    "no effect on the model.",
                    key,
                    match[0],
                )

    def _validate_fields(self) -> None:
        import timm

        if not isinstance(self.backbone, str) or not timm.is_model(self.backbone):
            raise ValueError(
                f"backbone={self.backbone!r} is not a timm model name (see timm.list_models(), e.g. 'resnet18')"
            )
        for name in ("projection_dim", "image_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        hidden = self.projection_hidden_dim
        if hidden is not None and (not isinstance(hidden, int) or isinstance(hidden, bool) or hidden <= 0):
            raise ValueError(f"projection_hidden_dim must be a positive int or None, got {hidden!r}")
        dropout = self.classifier_dropout
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"classifier_dropout must be a number in [0, 1), got {dropout!r}")
        if self.classifier_type not in CLASSIFIER_TYPES:
            raise ValueError(
                f"classifier_type must be one of {', '.join(map(repr, CLASSIFIER_TYPES))}, "
                f"got {self.classifier_type!r}"
            )
        if not isinstance(self.zero_init_last, bool):
            raise ValueError(f"zero_init_last must be a bool, got {self.zero_init_last!r}")
        if self.backbone_kwargs is not None and not isinstance(self.backbone_kwargs, dict):
            raise ValueError(f"backbone_kwargs must be a dict or None, got {self.backbone_kwargs!r}")
        source = self.backbone_pretrained
        if source is not None and (not isinstance(source, str) or not source.strip()):
            raise ValueError(
                f"backbone_pretrained must be a weights file, a timm model folder or a Hub id (e.g. "
                f"'timm/resnet18.a1_in1k'), or None for an encoder from scratch; got {source!r}"
            )


__all__ = ["AdUniConfig"]
