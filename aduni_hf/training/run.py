"""One training run, end to end: data -> fold split -> model -> AdUniTrainer -> evaluation -> output_dir."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import datasets
import safetensors.torch
import torch
import transformers
import yaml
from transformers import enable_full_determinism, set_seed

from ..configuration_aduni import AdUniConfig
from ..data import (
    DATASETS,
    MultiViewDataset,
    SingleViewDataset,
    build_augmentation,
    build_dataset,
    collate_views,
    dataset_metadata,
    eval_transform,
    split_by_fold,
)
from ..evaluation import build_compute_metrics, format_results_table
from ..evaluation.figures import class_loss_figure, confusion_matrix_figure, schedule_figure, tsne_figure
from ..evaluation.paper_results import paper_row
from ..hub import build_image_processor, render_model_card
from ..hub.push import RUN_IGNORE_PATTERNS, push_folder
from ..losses import LOSSES, build_loss
from ..losses.stages import META_SAMPLER, Stage, method_stages
from ..modeling_aduni import AdUniForImageClassification
from ..utils import write_atomic
from .arguments import MODEL_FIELDS, AdUniTrainingArguments, DataArguments, MethodArguments, ModelArguments
from .callbacks import AlphaScheduleCallback
from .checkpoints import FAILURE_NAME, check_resume, prepare_output_dir, run_record
from .cli import RecipeError
from .meta_sampling import MetaSamplingTrainer
from .stages import (
    describe_stage,
    pooled_features,
    prepare_stage_dirs,
    resolve_stage,
    stage_dir,
    tau_norm_evaluation,
    train_in_stages,
)
from .trainer import OFFICIAL_SELECTION, VALIDATION_SELECTION, AdUniTrainer

logger = logging.getLogger(__name__)

# Fields that shape the weights: a recipe starting from a saved model must agree with it on these.
ARCHITECTURE_FIELDS = ("backbone", "projection_dim", "projection_hidden_dim", "backbone_kwargs", "classifier_type")


def setup_logging(training_args: AdUniTrainingArguments) -> None:
    """Log as transformers' example scripts do: to stdout, at the Trainer's level for this process (info on the
    main process by default, warnings only on the others), for aduni_hf, transformers and datasets alike."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    if training_args.should_log:
        transformers.utils.logging.set_verbosity_info()  # the Trainer's default level for the main process
    level = training_args.get_process_log_level()
    logging.getLogger("aduni_hf").setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


# Trainer fields that only `optimizer_recipe: trainer` uses, and ours that only `optimizer_recipe: official` uses.
TRAINER_RECIPE_FIELDS = (
    "optim", "optim_args", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps",
    "adam_beta1", "adam_beta2", "adam_epsilon",
)  # fmt: skip
OFFICIAL_RECIPE_FIELDS = ("warmup_epochs", "min_learning_rate", "cosine_epochs", "sgd_momentum")
ALPHA_FIELDS = ("alpha_schedule", "alpha_max", "alpha_min", "alpha_decay")


def _changed_fields(values: Any, names: tuple[str, ...]) -> list[str]:
    """The `names` whose value in the dataclass instance `values` differs from the field's default."""
    defaults = {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(values)
        if f.name in names
    }
    return [
        name
        for name in names
        if getattr(getattr(values, name), "value", getattr(values, name)) != defaults[name]
    ]


def check_recipe(
    model_args: ModelArguments,
    data_args: DataArguments,
    method_args: MethodArguments,
    training_args: AdUniTrainingArguments,
) -> None:
    """Refuse, before anything is read or built, combinations of fields that cannot train as asked. Each field
    was checked on its own when its dataclass was built; this checks them together."""
    if training_args.load_best_model_at_end and data_args.val_fraction == 0:
        raise RecipeError(
            "load_best_model_at_end selects a checkpoint on the validation split, but val_fraction is 0 (no "
            "validation split; the test fold is never used for selection). Set val_fraction > 0, e.g. 0.1, or "
            "load_best_model_at_end false"
        )
    if training_args.optimizer_recipe == "official":
        ignored = _changed_fields(training_args, TRAINER_RECIPE_FIELDS)
        if ignored:
            raise RecipeError(
                f"{', '.join(ignored)} configure the Trainer's optimiser and scheduler, which optimizer_recipe "
                "'official' replaces (SGD with warm-up + cosine: warmup_epochs, min_learning_rate, cosine_epochs, "
                "sgd_momentum). Set optimizer_recipe: trainer to use them, or remove them"
            )
    else:
        ignored = _changed_fields(training_args, OFFICIAL_RECIPE_FIELDS)
        if ignored:
            raise RecipeError(
                f"{', '.join(ignored)} configure optimizer_recipe 'official', but optimizer_recipe is "
                f"{training_args.optimizer_recipe!r} (the Trainer's optim and lr_scheduler_type). Remove them, or "
                "set optimizer_recipe: official"
            )
    loss_class = LOSSES[method_args.method]
    if not loss_class.uses_alpha:
        unused = _changed_fields(method_args, ALPHA_FIELDS)
        if unused:  # a shared recipe is the paper's protocol (only the method differs): say it, do not refuse
            logger.warning("method %r has no alpha: %s not used", method_args.method, ", ".join(unused))
    fixed = getattr(loss_class, "fixed_alpha_schedule", None)
    if fixed is not None and method_args.alpha_schedule != fixed:
        logger.warning(
            "method %r keeps alpha constant at alpha_max=%g: alpha_schedule %r not used",
            method_args.method,
            method_args.alpha_max,
            method_args.alpha_schedule,
        )
    if len(method_stages(method_args.method)) > 1:
        if method_args.stage2_learning_rate < training_args.min_learning_rate:
            raise RecipeError(
                f"stage2_learning_rate={method_args.stage2_learning_rate:g} is below min_learning_rate="
                f"{training_args.min_learning_rate:g}, where the second stage's cosine ends; raise "
                "stage2_learning_rate or lower min_learning_rate"
            )
        recommended = getattr(loss_class, "recommended_sampler", None)
        if recommended is not None and method_args.sampler != recommended:
            logger.warning(
                "note: the official first stage of %r samples with %r; this run uses sampler %r",
                method_args.method,
                recommended,
                method_args.sampler,
            )


def open_prepared_dataset(path: str) -> datasets.Dataset:
    """A data set written by scripts/prepare_data.py, opened without reading its images, or a clear error."""
    folder = Path(path)
    how = (
        "write one with: python scripts/prepare_data.py --dataset {"
        + ",".join(DATASETS)
        + "} --data_dir RAW "
        f"--output_dir {path}"
    )
    if not folder.is_dir():
        raise RecipeError(f"dataset_path={path!r}: no such folder; {how}")
    saved = (folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file()
    if not saved:
        raise RecipeError(
            f"dataset_path={path!r} is not a prepared data set (no datasets save_to_disk files); {how}"
        )
    loaded = datasets.load_from_disk(str(folder))
    if isinstance(loaded, datasets.DatasetDict):
        if list(loaded) != ["train"]:
            raise RecipeError(f"dataset_path={path!r}: expected one split, found {list(loaded)}")
        loaded = loaded["train"]
    missing = [name for name in ("image", "label", "fold") if name not in loaded.column_names]
    if missing or not isinstance(loaded.features.get("label"), datasets.ClassLabel):
        raise RecipeError(
            f"dataset_path={path!r} is not a prepared data set: it lacks "
            f"{', '.join(missing) or 'a ClassLabel label column'} (columns: {loaded.column_names}); {how}"
        )
    return loaded


def load_data(data_args: DataArguments) -> datasets.Dataset:
    """The fold-annotated dataset: a prepared one from disk (memory-mapped), or built here by name."""
    if data_args.dataset_path is not None:
        return open_prepared_dataset(data_args.dataset_path)
    options: dict[str, Any] = {}
    if data_args.dataset == "digits_lt":
        options["imbalance_ratio"] = data_args.imbalance_ratio
    return build_dataset(
        data_args.dataset,
        data_dir=data_args.data_dir,
        num_folds=data_args.num_folds,
        seed=data_args.fold_seed,
        **options,
    )


def check_data(dataset: datasets.Dataset, data_args: DataArguments, model_args: ModelArguments) -> list[str]:
    """Check the fold and the classes against the data set's metadata (no image is decoded); return the class
    names. A start model (`model_name_or_path`) must have the same labels unless `ignore_mismatched_sizes`."""
    source = data_args.dataset_path or data_args.dataset
    num_folds = dataset_metadata(dataset).get("num_folds") or len(set(dataset["fold"]))
    if not 0 <= data_args.test_fold < num_folds:
        raise RecipeError(
            f"test_fold={data_args.test_fold} does not exist in {source}: its folds are 0..{num_folds - 1}"
        )
    class_names = list(dataset.features["label"].names)
    if model_args.model_name_or_path is not None:
        saved = AdUniConfig.from_pretrained(model_args.model_name_or_path)
        model_labels = [saved.id2label[i] for i in sorted(saved.id2label)]
        if model_labels != class_names and not model_args.ignore_mismatched_sizes:
            raise RecipeError(
                f"model_name_or_path={model_args.model_name_or_path!r} predicts {model_labels}, but {source} has "
                f"classes {class_names}. Use a model trained on these classes, or pass --ignore_mismatched_sizes "
                "true to start with a new classifier for them"
            )
    return class_names


def data_record(dataset: datasets.Dataset, splits: Any) -> dict[str, Any]:
    """What identifies the data a run trains on, wherever the folder lies: classes, split sizes and counts, and a
    digest of every image's id, label and fold."""
    digest = hashlib.sha256()
    for column in ("image_id", "label", "fold"):
        if column in dataset.column_names:
            digest.update(json.dumps(list(dataset[column])).encode())
    return {
        "class_names": list(splits.class_names),
        "train_class_counts": splits.class_counts("train"),
        "num_images": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "digest": digest.hexdigest(),
    }


def build_model(model_args: ModelArguments, class_names: list[str]) -> AdUniForImageClassification:
    """A fresh model from the recipe's `AdUniConfig` fields, or the saved model `model_name_or_path` with the
    recipe's classes (other classes, allowed by `ignore_mismatched_sizes`, get a new classifier)."""
    labels = {"id2label": dict(enumerate(class_names)), "label2id": {n: i for i, n in enumerate(class_names)}}
    if model_args.model_name_or_path is None:
        config = model_args.config
        config.id2label, config.label2id = labels["id2label"], labels["label2id"]
        model = AdUniForImageClassification(config)
        if model_args.pretrained_backbone:
            model.load_backbone_weights(model_args.pretrained_backbone)
        return model
    source = model_args.model_name_or_path
    saved = AdUniConfig.from_pretrained(source)
    differing = {
        name: (getattr(saved, name), getattr(model_args, name))
        for name in ARCHITECTURE_FIELDS
        if getattr(saved, name) != getattr(model_args, name)
    }
    if differing:
        listing = ", ".join(
            f"{name}: {ours!r} in the recipe, {theirs!r} in the model"
            for name, (theirs, ours) in differing.items()
        )
        raise ValueError(
            f"model_name_or_path={source!r} has another architecture ({listing}); set them as the model has"
        )
    if saved.problem_type not in (None, "single_label_classification"):
        raise ValueError(
            f"model_name_or_path={source!r} has problem_type={saved.problem_type!r}; training is single-label"
        )
    # Fields that do not shape weights (dropout, image size) follow the recipe.
    overrides = {name: getattr(model_args, name) for name in MODEL_FIELDS if name not in ARCHITECTURE_FIELDS}
    model = AdUniForImageClassification.from_pretrained(
        source, ignore_mismatched_sizes=True, **labels, **overrides
    )
    if [saved.id2label[i] for i in sorted(saved.id2label)] != class_names:
        # Same number of classes under other names: the loaded rows would answer for the wrong classes.
        model.classifier.dense.reset_parameters()
        logger.warning("%s: new classifier for the classes %s", source, class_names)
    logger.info("starting from %s (%d classes now)", source, len(class_names))
    return model


def seed_everything(training_args: AdUniTrainingArguments) -> None:
    """Seed as the Trainer does: `full_determinism` also makes torch use deterministic algorithms only."""
    if training_args.full_determinism:
        enable_full_determinism(training_args.seed)
    else:
        set_seed(training_args.seed)


def set_cpu_threads(training_args: AdUniTrainingArguments) -> None:
    """Use `torch_threads`, or every core for a lone CPU process (accelerate launch pins each process to one)."""
    threads = training_args.torch_threads
    if threads is None and training_args.device.type == "cpu" and training_args.world_size == 1:
        threads = os.cpu_count() or 1
    if threads is not None and threads != torch.get_num_threads():
        logger.info("torch uses %d CPU threads", threads)
        torch.set_num_threads(threads)


def resolved_config(*argument_groups: Any) -> dict[str, dict[str, Any]]:
    """Every argument dataclass as plain data (for run_config.yaml); `*_token` fields are masked."""
    resolved = {}
    for group in argument_groups:
        values = group.to_dict() if hasattr(group, "to_dict") else dataclasses.asdict(group)
        resolved[type(group).__name__] = json.loads(json.dumps(values, default=str))
    return resolved


def run_training(
    model_args: ModelArguments,
    data_args: DataArguments,
    method_args: MethodArguments,
    training_args: AdUniTrainingArguments,
) -> dict[str, float]:
    """Train on the training folds, validate on the inner split, test on `test_fold`, save everything.

    Leaves in `output_dir`: config.json (with auto_map), model.safetensors, preprocessor_config.json, the
    remote-code files, run_config.yaml, train/eval_results.json, README.md (the model card) and, last,
    test_results.json, whose presence marks the run finished. An interrupted run in `output_dir` is resumed from
    its last checkpoint; a finished one is refused unless `overwrite_output_dir` (docs/hf_stack.md,
    "Checkpoints and resuming"). Returns the test metrics (`test_accuracy`, `test_macro_f1`, ...).
    """
    setup_logging(training_args)
    check_recipe(model_args, data_args, method_args, training_args)
    stages = method_stages(method_args.method)
    with training_args.main_process_first(desc="checking output_dir"):
        checkpoint = prepare_output_dir(
            training_args.output_dir, training_args.resume_from_checkpoint, training_args.overwrite_output_dir
        )
        prepare_stage_dirs(training_args.output_dir, len(stages), training_args.overwrite_output_dir)
    output_dir = Path(training_args.output_dir)
    seed_everything(training_args)
    set_cpu_threads(training_args)
    dataset = load_data(data_args)
    class_names = check_data(dataset, data_args, model_args)
    metadata = dataset_metadata(dataset)
    splits = split_by_fold(dataset, data_args.test_fold, data_args.val_fraction, seed=data_args.fold_seed)
    train_counts = splits.class_counts("train")
    logger.info(
        "train %s images, val %s, test %s; train class counts %s",
        len(splits.train),
        len(splits.val),
        len(splits.test),
        dict(zip(class_names, train_counts, strict=True)),
    )
    recipe = resolved_config(model_args, data_args, method_args, training_args)
    record = run_record(recipe, data_record(dataset, splits), num_processes=training_args.world_size)
    if checkpoint is not None:
        for note in check_resume(checkpoint, record):
            logger.warning("resuming %s: %s", checkpoint.name, note)
    if training_args.should_save:
        (output_dir / FAILURE_NAME).unlink(missing_ok=True)  # a new attempt; it marks itself if it fails
        write_atomic(
            output_dir / "run_config.yaml",
            yaml.safe_dump(
                {
                    **recipe,
                    "data": {
                        "class_names": class_names,
                        "train_class_counts": train_counts,  # what logit adjustment used
                        "num_images": record["data"]["num_images"],
                        "dataset_metadata": {k: v for k, v in metadata.items() if k != "invalid_items"},
                    },
                },
                sort_keys=False,
            ),
        )

    classifier = getattr(LOSSES[method_args.method], "classifier_type", None)
    if classifier is not None and classifier != model_args.classifier_type:
        if _changed_fields(model_args, ("classifier_type",)):
            raise RecipeError(
                f"method {method_args.method!r} trains a {classifier!r} classifier, but classifier_type is "
                f"{model_args.classifier_type!r}; remove classifier_type or set it to {classifier!r}"
            )
        logger.info("method %r: classifier_type %r", method_args.method, classifier)
        model_args.classifier_type = model_args.config.classifier_type = classifier
    model = build_model(model_args, class_names)
    # Class counts for logit adjustment come from the training images only (no validation, no test).
    # `model` reaches the methods that keep a copy of it (PaCo's momentum key encoder).
    loss_fn = build_loss(
        method_args.method, len(class_names), train_counts, model=model, **dataclasses.asdict(method_args)
    )
    augmentation = build_augmentation(data_args.augmentation, model_args.image_size)
    evaluation = eval_transform(model_args.image_size)
    val_dataset = SingleViewDataset(splits.val, evaluation) if len(splits.val) else None
    test_dataset = SingleViewDataset(splits.test, evaluation)
    if val_dataset is None and training_args.eval_strategy != "no":
        training_args.eval_strategy = "no"  # nothing to validate on: say so instead of failing late
        logger.warning("val_fraction is 0: no validation during training")

    def make_trainer(args: AdUniTrainingArguments, stage: Stage) -> AdUniTrainer:
        """The trainer of one stage: the method's loss (a later stage's own loss), the stage's sampler."""
        stage_loss = loss_fn
        if stage.loss is not None:
            stage_loss = build_loss(
                stage.loss, len(class_names), train_counts, model=model, **dataclasses.asdict(method_args)
            )
        callbacks = []
        if stage_loss.uses_alpha:
            callbacks.append(
                AlphaScheduleCallback(
                    getattr(stage_loss, "fixed_alpha_schedule", None) or method_args.alpha_schedule,
                    alpha_max=method_args.alpha_max,
                    alpha_min=method_args.alpha_min,
                    decay=method_args.alpha_decay,
                )
            )
        trainer_class = MetaSamplingTrainer if stage.sampler == META_SAMPLER else AdUniTrainer
        return trainer_class(
            model=model,
            # The Trainer never pushes (it would create the Hub repo before training and upload checkpoints
            # while training); the run pushes once at the end (push_folder), after everything is saved.
            args=dataclasses.replace(args, push_to_hub=False) if args.push_to_hub else args,
            loss_fn=stage_loss,
            sampler=stage.sampler,
            run_record=record,
            encoder_mode=stage.encoder_mode,
            epoch_length=stage.epoch_length,
            run_dir=output_dir,
            selection_test_dataset=test_dataset if args.official_test_selection else None,
            train_dataset=MultiViewDataset(
                splits.train, augmentation, num_views=stage_loss.num_views, seed=training_args.seed
            ),
            eval_dataset=val_dataset,
            data_collator=collate_views,
            compute_metrics=build_compute_metrics(class_names),
            processing_class=build_image_processor(model_args.image_size),
            callbacks=callbacks,
        )

    earlier_metrics: dict[str, float] = {}
    if len(stages) == 1:
        trainer = make_trainer(training_args, resolve_stage(stages[0], 0, method_args))
        train_result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
    else:  # two-stage methods: each stage its own trainer; the last one saves and evaluates (stages.py)
        trainer, train_result, earlier_metrics = train_in_stages(
            model,
            stages,
            make_trainer=make_trainer,
            method_args=method_args,
            training_args=training_args,
            record=record,
            checkpoint=checkpoint,
        )
    trainer.save_model()
    train_metrics = {**earlier_metrics, **train_result.metrics}
    trainer.log_metrics("train", train_metrics)
    trainer.save_metrics("train", train_metrics)
    trainer.save_state()  # trainer_state.json: the per-epoch loss, alpha, learning rate and validation history
    tau_eval: dict[str, float] = {}
    tau_test: dict[str, float] = {}
    if len(stages) > 1 and getattr(LOSSES[method_args.method], "evaluates_tau_norm", False):
        # An evaluation of the stage-1 model as saved (its encoder and BatchNorm statistics before stage 2).
        stage1_model = AdUniForImageClassification.from_pretrained(stage_dir(output_dir, 0))
        tau_eval, tau_test = tau_norm_evaluation(
            stage1_model.to(training_args.device),
            val_dataset,
            test_dataset,
            class_names,
            batch_size=training_args.per_device_eval_batch_size,
            device=training_args.device,
        )
        del stage1_model
    if val_dataset is not None:
        eval_metrics = {**trainer.evaluate(), **tau_eval}
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
    test_metrics = {**trainer.evaluate(test_dataset, metric_key_prefix="test"), **tau_test}
    test_metrics.update(evaluate_selected_models(trainer, test_dataset))
    figures: list[tuple[str, str]] = []
    if training_args.figures:
        figures = write_run_figures(trainer, test_dataset, class_names, train_counts, output_dir)

    trainer.model_card = render_model_card(
        model_name=output_dir.name,
        model_id=training_args.hub_model_id or output_dir.name,
        dataset_name=metadata.get("source", data_args.dataset_path or data_args.dataset),
        class_names=class_names,
        train_class_counts=train_counts,
        results=test_metrics,
        recipe=recipe_summary(model_args, data_args, method_args, training_args),
        method=method_args.method,
        test_fold=data_args.test_fold,
        num_folds=int(metadata.get("num_folds", data_args.num_folds)),
        backbone=model_args.backbone,
        projection_dim=model_args.projection_dim,
        image_size=model_args.image_size,
        dataset_key=data_args.dataset,
        paper=paper_row(data_args.dataset, method_args.method, method_args.sampler, dataclasses.asdict(method_args)),
        figures=figures,
        selection_note=(
            f"The checkpoint with the best validation {training_args.metric_for_best_model} was kept"
            + (" in each stage." if len(stages) > 1 else ".")
            if training_args.load_best_model_at_end
            else "The saved model is the one after the last epoch"
            + (" of the last stage" if len(stages) > 1 else "")
            + f"; the model with the best validation {training_args.selection_metric} is tested beside it."
        ),
    )
    trainer.create_model_card()
    trainer.save_metrics("test", test_metrics)  # last: from here on the run counts as finished
    if trainer.is_world_process_zero():
        print(format_results_table(test_metrics, class_names, prefix="test"))
        if tau_test:
            print(f"tau-normalised stage-1 classifier, tau {tau_test['tau_norm_tau']:g} (chosen on validation):")
            print(format_results_table(test_metrics, class_names, prefix="test_tau_norm"))
    if training_args.push_to_hub:  # once, after everything is saved (a failure says so: PushError)
        url = push_folder(
            output_dir,
            training_args.hub_model_id or output_dir.name,
            token=training_args.hub_token,
            private=training_args.hub_private_repo,
            ignore_patterns=RUN_IGNORE_PATTERNS,
            commit_message=f"AdUni, {method_args.method}, test fold {data_args.test_fold}",
        )
        logger.info("pushed %s to %s", output_dir, url)
    return test_metrics


# The reported models besides the last epoch's: (trainer selection name, metric prefix in test_results.json).
SELECTED_MODELS = ((VALIDATION_SELECTION, "test_best_val"), (OFFICIAL_SELECTION, "test_official_selection"))


def evaluate_selected_models(trainer: AdUniTrainer, test_dataset) -> dict[str, float]:
    """Test the models chosen during training (the best validation one; with `official_test_selection`, the one
    the released code's rule chose on the test fold) and put the final model's weights back. Returns their test
    metrics (`test_best_val_*`, `test_official_selection_*`) and the epoch each was chosen at (`*_epoch`)."""
    model = trainer.model
    final = {key: value.detach().clone() for key, value in model.state_dict().items()}
    metrics: dict[str, float] = {}
    for name, prefix in SELECTED_MODELS:
        selected = trainer.selected_model(name)
        if selected is None:
            continue
        record, path = selected
        device = next(model.parameters()).device
        model.load_state_dict(safetensors.torch.load_file(str(path), device=str(device)), strict=True)
        metrics.update(trainer.evaluate(test_dataset, metric_key_prefix=prefix))
        metrics[f"{prefix}_epoch"] = record["epoch"]
    model.load_state_dict(final, strict=True)
    return metrics


FIGURES_DIR = "figures"


def write_run_figures(
    trainer: AdUniTrainer, test_dataset, class_names: list[str], train_counts: list[int], output_dir: Path
) -> list[tuple[str, str]]:
    """The run's figures in output_dir/figures/ (on the main process; the others compute nothing): the confusion
    matrix and a t-SNE of the final model's test-fold features, the per-class training loss and the schedules.
    Returns (caption, path relative to output_dir) of each."""
    predictions = trainer.predict(test_dataset, metric_key_prefix="test")  # every process takes part
    if not trainer.is_world_process_zero():
        return []
    folder = output_dir / FIGURES_DIR
    history = trainer.state.log_history
    labels = predictions.label_ids
    written = [
        ("Confusion matrix on the test fold (final model)", confusion_matrix_figure(
            labels, predictions.predictions.argmax(axis=1), class_names, folder / "confusion_matrix.png")),
        ("Learning rate and alpha over training", schedule_figure(history, folder / "schedules.png")),
    ]  # fmt: skip
    if any(key.startswith("class_loss_") for entry in history for key in entry):
        written.append(
            ("Per-class training loss (Fig. 2 of the paper)",
             class_loss_figure(history, class_names, train_counts, folder / "class_loss.png"))
        )  # fmt: skip
    features, feature_labels = pooled_features(
        trainer.model, test_dataset, trainer.args.per_device_eval_batch_size, trainer.args.device
    )
    written.append(
        ("t-SNE of the test-fold features (Fig. 4 of the paper)",
         tsne_figure(features.numpy(), feature_labels.numpy(), class_names, folder / "tsne_test_features.png"))
    )  # fmt: skip
    return [(caption, str(path.relative_to(output_dir))) for caption, path in written]


def weights_source(model_args: ModelArguments) -> str:
    if model_args.model_name_or_path:
        return f"from {model_args.model_name_or_path}"
    return "local encoder weights" if model_args.pretrained_backbone else "from scratch"


def recipe_summary(
    model_args: ModelArguments,
    data_args: DataArguments,
    method_args: MethodArguments,
    args: AdUniTrainingArguments,
) -> dict[str, Any]:
    """The settings a reader of the model card needs, in the paper's terms."""
    summary: dict[str, Any] = {
        "backbone": f"{model_args.backbone} ({weights_source(model_args)})",
        "image size": f"{model_args.image_size}x{model_args.image_size}",
        "augmentation": data_args.augmentation,
        "method / sampler": f"{method_args.method} / {method_args.sampler}",
        "epochs, batch per device": f"{args.num_train_epochs:g}, {args.per_device_train_batch_size}",
    }
    if args.optimizer_recipe == "official":
        summary["optimiser"] = (
            f"SGD lr {args.learning_rate:g}, momentum {args.sgd_momentum:g}, weight decay {args.weight_decay:g} "
            f"(all parameters); {args.warmup_epochs}-epoch warm-up, cosine to {args.min_learning_rate:g}"
        )
    else:
        summary["optimiser"] = f"{args.optim} lr {args.learning_rate:g}, {args.lr_scheduler_type} schedule"
    summary["gradient clipping"] = f"norm {args.max_grad_norm:g}" if args.max_grad_norm else "none"
    stages = method_stages(method_args.method)
    if len(stages) > 1:
        for index, stage in enumerate(stages):
            stage = resolve_stage(stage, index, method_args)
            summary[f"stage {index + 1}"] = describe_stage(stage, index, args, method_args)
    if method_args.method == "cicl":
        summary["SupCon"] = f"T {method_args.temperature:g}, T_b {method_args.base_temperature:g}"
    if method_args.method == "aduni":
        summary["AduC"] = (
            f"T {method_args.temperature:g}, T_b {method_args.base_temperature:g}, beta {method_args.beta:g}, "
            f"logit adjustment {'on' if method_args.logit_adjustment else 'off'}"
        )
        summary["alpha"] = (
            f"{method_args.alpha_schedule}: {method_args.alpha_max:g} -> {method_args.alpha_min:g}, "
            f"decay {method_args.alpha_decay:g}"
        )
    return summary
