"""Configuration of the AdUni model (Cong et al., MLMI 2022).

Self-contained on purpose: this file is copied next to saved weights so that
`AutoConfig.from_pretrained(dir, trust_remote_code=True)` works where `aduni_hf` is not installed.
It may import only `transformers` and `timm`.
"""

from __future__ import annotations

from transformers import GenerationConfig, PreTrainedConfig

# Keyword arguments that `PreTrainedConfig` itself consumes or that `save_pretrained` / `from_pretrained` put
# next to the dataclass fields (generation parameters such as `use_cache`, which a pipeline passes, are
# dropped by the base class). Anything else reaching `__post_init__` is a typo.
_BASE_CONFIG_KWARGS = frozenset(
    {
        "num_labels",
        "auto_map",
        "model_type",
        "name_or_path",
        "_name_or_path",
        "torch_dtype",
        "_commit_hash",
        "output_attentions",
        "attn_implementation",
        "experts_implementation",
        "per_layer_config",
        "_from_auto",
        "_from_pipeline",
    }
) | frozenset(GenerationConfig._get_default_generation_params())


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
            Dropout before the linear classifier (the official code passes `drop=0.5`).
        image_size (`int`, *optional*, defaults to 384):
            Side of the square input the model was trained on; the saved image processor resizes to it.
        zero_init_last (`bool`, *optional*, defaults to `False`):
            timm zero-initialises the last BatchNorm of every residual block by default; the official AdUni
            ResNet does not, so the default is `False` (methods.md 2.1).
        backbone_kwargs (`dict`, *optional*):
            Extra keyword arguments for `timm.create_model`.
        num_labels / id2label / label2id: as in every transformers classification config.

    Unknown keyword arguments raise `TypeError` (a plain `PreTrainedConfig` keeps typos as attributes).

    Example:

    ```python
    >>> from aduni_hf import AdUniConfig
    >>> config = AdUniConfig(num_labels=7, image_size=384)
    >>> config.backbone, config.projection_dim
    ('resnet18', 128)
    ```
    """

    model_type = "aduni"

    backbone: str = "resnet18"
    projection_dim: int = 128
    projection_hidden_dim: int | None = None
    classifier_dropout: float = 0.5
    image_size: int = 384
    zero_init_last: bool = False
    backbone_kwargs: dict | None = None

    def __post_init__(self, **kwargs):
        unknown = sorted(set(kwargs) - _BASE_CONFIG_KWARGS)
        if unknown:
            raise TypeError(f"AdUniConfig got unknown keyword argument(s) {unknown}")
        self._validate_fields()
        super().__post_init__(**kwargs)

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
        if hidden is not None and (not isinstance(hidden, int) or hidden <= 0):
            raise ValueError(f"projection_hidden_dim must be a positive int or None, got {hidden!r}")
        if not 0.0 <= float(self.classifier_dropout) < 1.0:
            raise ValueError(f"classifier_dropout must be in [0, 1), got {self.classifier_dropout!r}")
        if self.backbone_kwargs is not None and not isinstance(self.backbone_kwargs, dict):
            raise ValueError(f"backbone_kwargs must be a dict or None, got {self.backbone_kwargs!r}")


__all__ = ["AdUniConfig"]
