"""Train AdUni (or another method) on one cross-validation fold.

accelerate launch scripts/train.py configs/demo.yaml [--field value ...]
python scripts/train.py configs/isic2018_aduni.yaml --dataset_path data/isic2018 --test_fold 2
python scripts/train.py --help    (the recipe fields; --help_all: the Trainer's too)
"""

import sys

from aduni_hf.hub.push import PushError
from aduni_hf.recipes import ARGUMENT_CLASSES, RecipeError, parse_command_line, run_training
from aduni_hf.training import CheckpointWriteError, NonFiniteTrainingError

EXAMPLE = "python scripts/train.py configs/demo.yaml --num_train_epochs 1"


def main() -> None:
    model_args, data_args, method_args, training_args = parse_command_line(ARGUMENT_CLASSES, EXAMPLE)
    try:
        run_training(model_args, data_args, method_args, training_args)
    except (RecipeError, NonFiniteTrainingError, CheckpointWriteError, PushError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
