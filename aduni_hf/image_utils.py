"""Image helpers shared by training, the saved image processor and inference, light on purpose: importing them
loads neither `datasets` nor scikit-learn (`aduni_hf.inference` stays as quick to import as the model)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# ImageNet statistics (timm.data.IMAGENET_DEFAULT_MEAN / _STD), used by the official code and the saved
# image processor.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def as_rgb(image: Image.Image) -> Image.Image:
    """Grayscale, palette, RGBA and 16-bit images become 8-bit RGB (at build time and again at train time)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32))
        scale = 255.0 / 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 1.0
        image = Image.fromarray((pixels * scale).round().clamp(0, 255).to(torch.uint8).numpy(), mode="L")
    return image.convert("RGB")
