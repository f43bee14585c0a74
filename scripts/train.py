"""Train AdUni (or another method) on one cross-validation fold.

accelerate launch scripts/train.py configs/demo.yaml [--field value ...]
python scripts/train.py configs/isic2018_aduni.yaml --dataset_path data/isic2018 --test_fold 2
"""

import sys

from aduni_hf.hub.push import PushError
from aduni_hf.recipes import ARGUMENT_CLASSES, RecipeError, parse_recipe, run_training
from aduni_hf.training import CheckpointWriteError, NonFiniteTrainingError


def main() -> None:
    try:
        model_args, data_args, method_args, training_args = parse_recipe(ARGUMENT_CLASSES, sys.argv[1:])
        run_training(model_args, data_args, method_args, training_args)
    except (RecipeError, NonFiniteTrainingError, CheckpointWriteError, PushError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
