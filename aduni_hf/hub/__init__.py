"""Hub artefacts: the model card rendered from model_card.md, the image processor saved with the model."""

from .model_card import render_model_card
from .processor import build_image_processor

__all__ = ["build_image_processor", "render_model_card"]
