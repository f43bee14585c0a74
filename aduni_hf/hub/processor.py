"""The image processor saved beside a model: resize to the model's square size, then normalise by the mean/std
of the encoder's initial weights (ImageNet's for an encoder trained from scratch, as the official code)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from PIL import Image
from transformers import ViTImageProcessor

from ..configuration_aduni import AdUniConfig
from ..image_utils import IMAGENET_MEAN, IMAGENET_STD
from ..modeling_aduni import pretrained_backbone_cfg


def build_image_processor(
    image_size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> ViTImageProcessor:
    """Resize to (image_size, image_size) bilinearly and normalise by `mean`/`std`, as the evaluation transform does
    (`backbone_normalization` gives a run's).

    ViTImageProcessor's own default mean/std are 0.5/0.5, so they are always passed (docs/hf_stack.md, "Remote code").
    """
    return ViTImageProcessor(
        do_resize=True,
        size={"height": image_size, "width": image_size},
        resample=Image.Resampling.BILINEAR,
        do_rescale=True,
        do_normalize=True,
        image_mean=list(mean),
        image_std=list(std),
    )


def backbone_normalization(config: AdUniConfig) -> dict[str, tuple[float, ...]]:
    """`{"mean": ..., "std": ...}` with which a run normalises its images (augmentation, evaluation, the saved image
    processor): those timm records for the encoder weights `config.backbone_pretrained` (their `pretrained_cfg`),
    else ImageNet's. Resolved once per (backbone, weights); a Hub model's config.json is fetched into the cache."""
    if not config.backbone_pretrained:
        return {"mean": tuple(IMAGENET_MEAN), "std": tuple(IMAGENET_STD)}
    return dict(_pretrained_normalization(config.backbone, config.backbone_pretrained))


@lru_cache(maxsize=8)
def _pretrained_normalization(backbone: str, source: str) -> dict[str, tuple[float, ...]]:
    cfg = pretrained_backbone_cfg(AdUniConfig(backbone=backbone, backbone_pretrained=source))
    return {"mean": tuple(float(v) for v in cfg["mean"]), "std": tuple(float(v) for v in cfg["std"])}
