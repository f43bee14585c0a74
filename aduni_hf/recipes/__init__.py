"""Recipes run end to end: a YAML recipe's fields (`ARGUMENT_CLASSES`, `parse_recipe`), their checks, one training
run (`run_training`) and the paper's cross-validation protocol (`run_cross_validation`)."""

from .arguments import ARGUMENT_CLASSES, DataArguments, ModelArguments
from .cli import exit_usage_error, parse_command_line, parse_recipe
from .cross_validation import CrossValidationArguments, parse_folds, run_cross_validation
from .errors import RecipeError, RunFolderError
from .run import run_training

__all__ = [
    "ARGUMENT_CLASSES",
    "CrossValidationArguments",
    "DataArguments",
    "ModelArguments",
    "RecipeError",
    "RunFolderError",
    "exit_usage_error",
    "parse_command_line",
    "parse_folds",
    "parse_recipe",
    "run_cross_validation",
    "run_training",
]
