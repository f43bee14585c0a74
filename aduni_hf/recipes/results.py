"""What a trained run reports: the reported models tested on the held-out fold, the results files, the figures
and the model card (rendered from the template shipped in the package, `aduni_hf.hub.render_model_card`)."""

from __future__ import annotations

import logging
from pathlib import Path

import safetensors.torch
from huggingface_hub import ModelCard

from ..evaluation.features import pooled_features
from ..evaluation.figures import class_loss_figure, confusion_matrix_figure, schedule_figure, tsne_figure
from ..evaluation.metric_names import dataset_metrics
from ..hub import render_model_card
from ..methods import Method, MethodArguments
from ..training import OFFICIAL_SELECTION, VALIDATION_SELECTION, AdUniTrainer, AdUniTrainingArguments
from ..training.model_selection import selected_model
from .arguments import DataArguments, ModelArguments
from .recipe_table import recipe_summary
from .run_data import RunData

# The reported models besides the last epoch's: (selection name, metric prefix in test_results.json).
SELECTED_MODELS = ((VALIDATION_SELECTION, "test_best_val"), (OFFICIAL_SELECTION, "test_official_selection"))
FIGURES_DIR = "figures"

logger = logging.getLogger(__name__)


def evaluate_selected_models(trainer: AdUniTrainer, test_dataset) -> dict[str, float]:
    """Test the models chosen during training (the best validation one; with `official_test_selection`, the one
    the released code's rule chose on the test fold) and put the final model's weights back. Returns their test
    metrics (`test_best_val_*`, `test_official_selection_*`) and the epoch each was chosen at (`*_epoch`)."""
    if trainer.model_selection is None:
        return {}
    model = trainer.model
    final = {key: value.detach().clone() for key, value in model.state_dict().items()}
    metrics: dict[str, float] = {}
    for name, prefix in SELECTED_MODELS:
        selected = selected_model(trainer.model_selection.directory, name)
        if selected is None:
            continue
        record, path = selected
        device = next(model.parameters()).device
        model.load_state_dict(safetensors.torch.load_file(str(path), device=str(device)), strict=True)
        metrics.update(trainer.evaluate(test_dataset, metric_key_prefix=prefix))
        metrics[f"{prefix}_epoch"] = record["epoch"]
    model.load_state_dict(final, strict=True)
    return metrics


def write_run_figures(trainer: AdUniTrainer, data: RunData, output_dir: Path) -> list[tuple[str, str]]:
    """The run's figures in output_dir/figures/ (on the main process; the others compute nothing): the confusion
    matrix and a t-SNE of the final model's test-fold features, the per-class training loss and the schedules.
    Returns (caption, path relative to output_dir) of each."""
    predictions = trainer.predict(data.test_dataset, metric_key_prefix="test")  # every process takes part
    if not trainer.is_world_process_zero():
        return []
    folder, names = output_dir / FIGURES_DIR, data.class_names
    history = trainer.state.log_history
    labels = predictions.label_ids
    written = [
        ("Confusion matrix on the test fold (final model)", confusion_matrix_figure(
            labels, predictions.predictions.argmax(axis=1), names, folder / "confusion_matrix.png")),
    ]  # fmt: skip
    if has_logged(trainer, "learning_rate", "schedules.png"):
        written.append(
            ("Learning rate and alpha over training", schedule_figure(history, folder / "schedules.png"))
        )
    if has_logged(trainer, "class_loss_", "class_loss.png"):
        written.append(
            ("Per-class training loss (Fig. 2 of the paper)",
             class_loss_figure(history, names, data.train_counts, folder / "class_loss.png"))
        )  # fmt: skip
    features, feature_labels = pooled_features(
        trainer.model, data.test_dataset, trainer.args.per_device_eval_batch_size, trainer.args.device
    )
    written.append(
        ("t-SNE of the test-fold features (Fig. 4 of the paper)",
         tsne_figure(features.numpy(), feature_labels.numpy(), names, folder / "tsne_test_features.png"))
    )  # fmt: skip
    return [(caption, str(path.relative_to(output_dir))) for caption, path in written]


def has_logged(trainer: AdUniTrainer, prefix: str, figure: str) -> bool:
    """Whether the log history has an entry starting with `prefix` to draw `figure` from; if not, the figure is
    skipped with a note saying why. A run that ends before its first training log (max_steps below logging_steps)
    has trained and saved its model: it is not failed for a figure."""
    if any(key.startswith(prefix) for entry in trainer.state.log_history for key in entry):
        return True
    strategy = getattr(trainer.args.logging_strategy, "value", trainer.args.logging_strategy)
    logger.warning(
        "figure %s skipped: the log history has no %s entries (training ended at optimiser step %d, before its "
        "first training log; logging_strategy=%s, logging_steps=%s). Log more often to have it drawn.",
        figure, prefix.rstrip("_") + ("_<class>" if prefix.endswith("_") else ""), trainer.state.global_step,
        strategy, trainer.args.logging_steps,
    )  # fmt: skip
    return False


def selection_note(training_args: AdUniTrainingArguments, num_stages: int) -> str:
    """How the saved model was chosen, for the card."""
    if training_args.load_best_model_at_end:
        where = " in each stage." if num_stages > 1 else "."
        return (
            f"The checkpoint with the best validation {training_args.metric_for_best_model} was kept{where}"
        )
    last = " of the last stage" if num_stages > 1 else ""
    return (
        f"The saved model is the one after the last epoch{last}; the model with the best validation "
        f"{training_args.selection_metric} is tested beside it."
    )


def run_model_card(
    *,
    output_dir: Path,
    data: RunData,
    results: dict[str, float],
    model_args: ModelArguments,
    data_args: DataArguments,
    method_args: MethodArguments,
    training_args: AdUniTrainingArguments,
    method: Method,
    figures: list[tuple[str, str]],
    path_in_repo: str = "",
) -> ModelCard:
    """The run's model card: its test results beside the paper's, its recipe, figures and limitations, and how to
    load it from `hub_model_id` (its folder `path_in_repo` there). The data set's source (a prepared data set's
    metadata says which) picks its biases, the paper's row and its metrics."""
    source = str(data.metadata.get("source") or data_args.dataset)
    return render_model_card(
        model_name=output_dir.name,
        model_id=training_args.hub_model_id,
        subfolder=path_in_repo,
        dataset_name=data.metadata.get("source", data_args.dataset_path or data_args.dataset),
        class_names=data.class_names,
        train_class_counts=data.train_counts,
        results=results,
        recipe=recipe_summary(model_args, data_args, method_args, training_args, method),
        method=method.name,
        method_description=method.description,
        test_fold=data_args.test_fold,
        num_folds=int(data.metadata.get("num_folds", data_args.num_folds)),
        backbone=model_args.backbone,
        projection_dim=model_args.projection_dim,
        image_size=model_args.image_size,
        dataset_key=source,
        paper=method.paper_row(source, method_args.sampler, method_args),
        figures=figures,
        selection_note=selection_note(training_args, method.num_stages),
        metrics=dataset_metrics({"source": source, **data.metadata}),
    )
