"""The image processor saved beside a model: resize to the model's square size, ImageNet mean/std."""

from __future__ import annotations

from PIL import Image
from transformers import ViTImageProcessor

from ..image_utils import IMAGENET_MEAN, IMAGENET_STD


def build_image_processor(image_size: int) -> ViTImageProcessor:
    """Resize to (image_size, image_size) bilinearly and normalise, as the evaluation transform does.

    ViTImageProcessor's own default mean/std are 0.5/0.5, so they are always passed (docs/hf_stack.md, "Remote code").
    """
    return ViTImageProcessor(
        do_resize=True,
        size={"height": image_size, "width": image_size},
        resample=Image.Resampling.BILINEAR,
        do_rescale=True,
        do_normalize=True,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    )
