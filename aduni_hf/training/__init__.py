"""The training machinery, method-agnostic: `AdUniTrainer` (and `MetaSamplingTrainer`), its arguments, callbacks,
chunked step, numerical guard and checkpoint files. Which loss, views and stages to train is a method's choice
(`aduni_hf.methods`); a recipe run end to end is `aduni_hf.recipes.run_training`."""

from .callbacks import AlphaScheduleCallback, EpochProgressCallback, PersistentWorkersCallback
from .checkpoints import CheckpointWriteError
from .guard import NonFiniteTrainingError
from .meta_sampling import MetaSamplingTrainer
from .model_selection import OFFICIAL_SELECTION, SELECTIONS, VALIDATION_SELECTION, ModelSelectionCallback
from .trainer import AdUniTrainer
from .training_args import AdUniTrainingArguments

__all__ = [
    "AdUniTrainer",
    "AdUniTrainingArguments",
    "AlphaScheduleCallback",
    "CheckpointWriteError",
    "EpochProgressCallback",
    "MetaSamplingTrainer",
    "ModelSelectionCallback",
    "NonFiniteTrainingError",
    "OFFICIAL_SELECTION",
    "PersistentWorkersCallback",
    "SELECTIONS",
    "VALIDATION_SELECTION",
]
