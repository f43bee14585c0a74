"""The paper's 5-fold protocol: a fresh model per test fold, then mean ± std (docs/method.md, "Evaluation").

python scripts/cross_validate.py configs/demo.yaml [--folds 0,1,2,3,4] [--field value ...]
accelerate launch scripts/cross_validate.py configs/isic2018_aduni.yaml --dataset_path data/isic2018
python scripts/cross_validate.py --help    (the recipe fields; --help_all: the Trainer's too)
"""

import sys

from aduni_hf.hub.push import PushError
from aduni_hf.recipes import (
    ARGUMENT_CLASSES,
    CrossValidationArguments,
    RecipeError,
    exit_usage_error,
    parse_command_line,
    parse_folds,
    run_cross_validation,
)
from aduni_hf.training import CheckpointWriteError, NonFiniteTrainingError

EXAMPLE = "python scripts/cross_validate.py configs/demo.yaml --folds 0,1"


def main() -> None:
    *recipe, cv_args = parse_command_line((*ARGUMENT_CLASSES, CrossValidationArguments), EXAMPLE)
    model_args, data_args, method_args, training_args = recipe
    try:
        folds = parse_folds(cv_args.folds, data_args.num_folds)
    except ValueError as err:
        exit_usage_error(str(err))
    try:
        run_cross_validation(model_args, data_args, method_args, training_args, folds)
    except (RecipeError, NonFiniteTrainingError, CheckpointWriteError, PushError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
