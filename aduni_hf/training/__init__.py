"""Training: argument dataclasses, the Trainer subclass, callbacks and the end-to-end run."""

from .arguments import AdUniTrainingArguments, DataArguments, MethodArguments, ModelArguments
from .callbacks import AlphaScheduleCallback
from .cli import RecipeError, parse_recipe
from .run import run_training
from .trainer import AdUniTrainer, NonFiniteTrainingError

ARGUMENT_CLASSES = (ModelArguments, DataArguments, MethodArguments, AdUniTrainingArguments)

__all__ = [
    "ARGUMENT_CLASSES",
    "AdUniTrainer",
    "AdUniTrainingArguments",
    "AlphaScheduleCallback",
    "DataArguments",
    "MethodArguments",
    "ModelArguments",
    "NonFiniteTrainingError",
    "RecipeError",
    "parse_recipe",
    "run_training",
]
