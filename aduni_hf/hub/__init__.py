"""Hub artefacts: the model cards (single run, cross-validation) rendered from one template, the image processor
saved with the model."""

from .model_card import render_cv_model_card, render_model_card
from .processor import build_image_processor

__all__ = ["build_image_processor", "render_cv_model_card", "render_model_card"]
