"""One training run of a recipe, end to end, in named phases:

1. check the recipe (every cross-field check, before anything is read or built: checks.py);
2. prepare the run folder (fresh, resumed from a checkpoint, or refused: run_folder.py);
3. read the data (the fold's split, the classes, the evaluation views: run_data.py);
4. build the method's model (its classifier; a saved model or encoder weights to start from);
5. build the trainer of each stage and train (two-stage methods: staged_training.py);
6. evaluate and report (the reported models, results files, figures, model card: results.py), then push.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import datasets
import torch
import transformers
import yaml
from transformers import enable_full_determinism, set_seed

from ..configuration_aduni import AdUniConfig
from ..console import console_print, log_to_console
from ..data import MultiViewDataset, PixelViewsDataset, build_augmentation, collate_views
from ..data.device_augmentation import DeviceAugmentation
from ..evaluation import build_compute_metrics, format_results_table
from ..hub import build_image_processor
from ..hub.processor import backbone_normalization
from ..hub.push import (
    CHECKPOINT_STRATEGIES,
    RUN_IGNORE_PATTERNS,
    CheckpointPusher,
    push_folder,
    pushes_while_training,
    strategy_name,
    training_card,
)
from ..methods import METHODS, LossInputs, Method, MethodArguments, Stage, TrainedRun
from ..modeling_aduni import AdUniForImageClassification
from ..training import SELECTIONS, AdUniTrainer, AdUniTrainingArguments
from ..training.guard import FAILURE_NAME
from ..utils import write_atomic
from .arguments import MODEL_FIELDS, DataArguments, ModelArguments
from .checks import check_recipe
from .errors import RecipeError
from .recipe_table import recipe_summary
from .results import evaluate_selected_models, run_model_card, write_run_figures
from .run_data import RunData, read_run_data, resolve_augmentation_device
from .run_folder import RUN_CONFIG_NAME, check_resume, prepare_output_dir, run_record, save_results
from .run_lock import run_folder_lock
from .staged_training import prepare_stage_dirs, resolve_stage, stage_dir, train_in_stages

logger = logging.getLogger(__name__)

# Fields that shape the weights: a recipe starting from a saved model must agree with it on these.
ARCHITECTURE_FIELDS = (
    "backbone",
    "projection_dim",
    "projection_hidden_dim",
    "backbone_kwargs",
    "classifier_type",
)


def run_training(
    model_args: ModelArguments,
    data_args: DataArguments,
    method_args: MethodArguments,
    training_args: AdUniTrainingArguments,
    *,
    hub_path_in_repo: str = "",
) -> dict[str, float]:
    """Train on the training folds, validate on the inner split, test on `test_fold`, save everything.

    Leaves in `output_dir`: config.json (with auto_map), model.safetensors, preprocessor_config.json, the
    remote-code files, run_config.yaml, train/eval_results.json, README.md (the model card) and, last,
    test_results.json, whose presence marks the run finished. An interrupted run in `output_dir` is resumed from
    its last checkpoint; a finished one is refused unless `overwrite_output_dir` (docs/hf_stack.md,
    "Checkpoints and resuming"). Returns the test metrics (`test_accuracy`, `test_macro_f1`, ...).

    `hub_path_in_repo` is the run's folder in its Hub repository (a cross-validation's `fold_<k>`; its root by
    default): the card loads the model from there, and with `push_to_hub` the saves are pushed there while
    training as `hub_strategy` says, and the run folder once finished.
    """
    setup_logging(training_args)
    method = METHODS[method_args.method]
    check_recipe(model_args, data_args, method_args, training_args, method)
    check_hub_strategy(method, training_args)
    # One writer per run folder, from its first look at the folder to its last file and push (run_lock.py).
    with run_folder_lock(training_args.output_dir, main_process=training_args.process_index == 0):
        return train_and_report(model_args, data_args, method_args, training_args, method, hub_path_in_repo)


def check_hub_strategy(method: Method, training_args: AdUniTrainingArguments) -> None:
    """Refuse what a method in stages cannot do with the Hub, before any data is read: its stages' checkpoints
    are not pushed (only the final model is, at the end), so neither pushed checkpoints nor a resume from one."""
    strategy = strategy_name(training_args.hub_strategy)
    resume = str(training_args.resume_from_checkpoint or "")
    if method.num_stages == 1 or not (training_args.push_to_hub or resume.startswith("hub:")):
        return
    if resume.startswith("hub:") or (training_args.push_to_hub and strategy in CHECKPOINT_STRATEGIES):
        field = f"resume_from_checkpoint={resume!r}" if resume.startswith("hub:") else f"hub_strategy={strategy!r}"
        raise RecipeError(
            f"{field}: method {method.name!r} trains in {method.num_stages} stages, whose checkpoints stay in the "
            "run folder's stage folders: none is pushed while training (the final model is, at the end), and none "
            "resumes from the Hub. Use --hub_strategy end, and resume such a run from its own output_dir."
        )
    if pushes_while_training(training_args.push_to_hub, strategy):
        logger.warning("hub_strategy %r: method %r trains in stages; its final model is pushed at the end only",
                       strategy, method.name)  # fmt: skip


def train_and_report(
    model_args: ModelArguments,
    data_args: DataArguments,
    method_args: MethodArguments,
    training_args: AdUniTrainingArguments,
    method: Method,
    hub_path_in_repo: str = "",
) -> dict[str, float]:
    """Phases 2-6 of `run_training`, holding the run folder's lock."""
    checkpoint = prepare_run_folder(training_args, method)
    seed_everything(training_args)
    set_cpu_threads(training_args)
    data_args.augmentation_device = resolve_augmentation_device(data_args, training_args.device)
    data = read_run_data(data_args, model_args)
    recipe = resolved_config(model_args, data_args, method_args, training_args)
    record = run_record(recipe, data.record, num_processes=training_args.world_size)
    if checkpoint is not None:
        for note in check_resume(checkpoint, record):
            logger.warning("resuming %s: %s", checkpoint.name, note)
    write_run_config(training_args, recipe, data)
    if pushes_while_training(training_args.push_to_hub, training_args.hub_strategy) and training_args.should_save:
        summary = recipe_summary(model_args, data_args, method_args, training_args, method)
        write_training_card(training_args, hub_path_in_repo, summary)
    model = build_model(model_args, method, data.class_names)
    trainers = StageTrainers(method, model, method_args, training_args, data, record, data_args, hub_path_in_repo)
    trainer, _ = train(trainers, checkpoint)
    results = evaluate_and_report(
        trainer, method, data, model_args, data_args, method_args, training_args, hub_path_in_repo
    )
    if training_args.push_to_hub:  # the finished run, after everything is saved (a failure says so: PushError)
        url = push_folder(
            training_args.output_dir,
            hub_repo_id(training_args),
            token=training_args.hub_token,
            private=training_args.hub_private_repo,
            ignore_patterns=RUN_IGNORE_PATTERNS,
            commit_message=f"AdUni, {method.name}, test fold {data_args.test_fold}",
            path_in_repo=hub_path_in_repo,
        )
        logger.info("pushed %s to %s", training_args.output_dir, url)
    return results


def hub_repo_id(training_args: AdUniTrainingArguments) -> str:
    """The repository a run pushes to: `hub_model_id`, by default the output_dir's name (as the Trainer's)."""
    return training_args.hub_model_id or Path(training_args.output_dir).name


def write_training_card(training_args: AdUniTrainingArguments, path_in_repo: str, summary: dict) -> None:
    """Our card in output_dir/README.md before training, so that every push while training carries it (the
    results card replaces it at the end)."""
    repo_id = hub_repo_id(training_args)
    card = training_card(
        repo_id=repo_id, path_in_repo=path_in_repo, title="/".join(filter(None, (repo_id, path_in_repo))),
        recipe=summary, strategy=training_args.hub_strategy,
    )  # fmt: skip
    write_atomic(Path(training_args.output_dir) / "README.md", card)


# ---- 1-2. logging, the run folder, the random state ------------------------------------------------------------
def setup_logging(training_args: AdUniTrainingArguments) -> None:
    """Log as the Trainer documents `log_level`, with our own records at info on the main process.

    With `log_level` passive (the default) transformers and datasets keep their own level, warning unless
    TRANSFORMERS_VERBOSITY says otherwise, so the Trainer's info blocks (`***** Running training *****`, ...) stay
    out of the console; `--log_level info` brings them back, and sets ours alike. The other processes log warnings
    only (`log_level_replica`). Every record goes to standard output, above the progress bars (console.py).
    """
    level = training_args.get_process_log_level()
    passive = training_args.should_log and training_args.log_level == "passive"
    logging.getLogger("aduni_hf").setLevel(min(level, logging.INFO) if passive else level)
    transformers.utils.logging.set_verbosity(level)
    datasets.utils.logging.set_verbosity(level)
    log_to_console()


def prepare_run_folder(training_args: AdUniTrainingArguments, method: Method) -> Path | None:
    """The output_dir ready for this run (main process first); returns the checkpoint to resume from, or None."""
    with training_args.main_process_first(desc="checking output_dir"):
        checkpoint = prepare_output_dir(
            training_args.output_dir,
            training_args.resume_from_checkpoint,
            training_args.overwrite_output_dir,
            hub_token=training_args.hub_token,
            main_process=training_args.process_index == 0,
        )
        prepare_stage_dirs(training_args.output_dir, method.num_stages, training_args.overwrite_output_dir)
    return checkpoint


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


# ---- 3. the recipe as run ----------------------------------------------------------------------------------------
def resolved_config(*argument_groups) -> dict[str, dict]:
    """Every argument dataclass as plain data (for run_config.yaml); `*_token` fields are masked."""
    resolved = {}
    for group in argument_groups:
        values = group.to_dict() if hasattr(group, "to_dict") else dataclasses.asdict(group)
        resolved[type(group).__name__] = json.loads(json.dumps(values, default=str))
    return resolved


def write_run_config(training_args: AdUniTrainingArguments, recipe: dict, data: RunData) -> None:
    """run_config.yaml: the resolved recipe and the data it trains on (a new attempt also clears the failure
    mark; it marks itself if it fails)."""
    if not training_args.should_save:
        return
    output_dir = Path(training_args.output_dir)
    (output_dir / FAILURE_NAME).unlink(missing_ok=True)
    described = {
        "class_names": data.class_names,
        "train_class_counts": data.train_counts,  # what logit adjustment used
        "num_images": data.record["num_images"],
        "dataset_metadata": {k: v for k, v in data.metadata.items() if k != "invalid_items"},
    }
    write_atomic(
        output_dir / RUN_CONFIG_NAME, yaml.safe_dump({**recipe, "data": described}, sort_keys=False)
    )


# ---- 4. the model ------------------------------------------------------------------------------------------------
def build_model(
    model_args: ModelArguments, method: Method, class_names: list[str]
) -> AdUniForImageClassification:
    """The method's model for `class_names`: fresh from the recipe's `AdUniConfig` fields (its encoder from scratch,
    or with the weights `backbone_pretrained` names, loaded by timm after the model is built), or the saved model
    `model_name_or_path` (other classes, allowed by `ignore_mismatched_sizes`, get a new classifier). The
    classifier is the method's (`Method.classifier_type`)."""
    if (
        model_args.classifier_type != method.classifier_type
    ):  # left at its default: check_recipe refused the rest
        logger.info("method %r: classifier_type %r", method.name, method.classifier_type)
        model_args.classifier_type = model_args.config.classifier_type = method.classifier_type
    labels = {"id2label": dict(enumerate(class_names)), "label2id": {n: i for i, n in enumerate(class_names)}}
    if model_args.model_name_or_path is None:
        config = model_args.config
        config.id2label, config.label2id = labels["id2label"], labels["label2id"]
        model = AdUniForImageClassification(config)
        if config.backbone_pretrained:
            model.load_pretrained_backbone()
        return model
    source = model_args.model_name_or_path
    saved = AdUniConfig.from_pretrained(source)
    differing = [
        f"{name}: {getattr(model_args, name)!r} in the recipe, {getattr(saved, name)!r} in the model"
        for name in ARCHITECTURE_FIELDS
        if getattr(saved, name) != getattr(model_args, name)
    ]
    if differing:
        raise ValueError(
            f"model_name_or_path={source!r} has another architecture ({', '.join(differing)}); set them as the model has"
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


# ---- 5. the trainers and training --------------------------------------------------------------------------------
@dataclasses.dataclass
class StageTrainers:
    """Builds the trainer of each stage of a run (`make(args, stage)`), from what every stage shares."""

    method: Method
    model: AdUniForImageClassification
    method_args: MethodArguments
    training_args: AdUniTrainingArguments
    data: RunData
    record: dict
    data_args: DataArguments
    hub_path_in_repo: str = ""  # the folder of the Hub repository the saves are pushed to

    def make(self, args: AdUniTrainingArguments, stage: Stage) -> AdUniTrainer:
        """The trainer of `stage` (resolved: its sampler chosen) with the stage's arguments `args`."""
        data, image_size = self.data, self.model.config.image_size
        # Class counts for the loss come from the training images only; `model` reaches the methods that keep a
        # copy of it (PaCo's momentum key encoder).
        loss = stage.loss(LossInputs(len(data.class_names), data.train_counts, self.model, self.method_args))
        if args.eval_strategy != "no" and data.val_dataset is None:  # nothing to validate on: say so, not fail late
            args = dataclasses.replace(args, eval_strategy="no")
            logger.warning("val_fraction is 0: no validation during training")
        augmentation, seed, on_device = self.data_args.augmentation, self.training_args.seed, None
        normalization = backbone_normalization(self.model.config)  # the encoder weights' mean/std; else ImageNet's
        if self.data_args.augmentation_device == "device":  # uint8 batches, views made by the trainer on the device
            on_device = DeviceAugmentation(augmentation, image_size, **normalization)
            views = PixelViewsDataset(data.splits.train, on_device, num_views=stage.num_views, seed=seed)
        else:
            transform = build_augmentation(augmentation, image_size, **normalization)
            views = MultiViewDataset(data.splits.train, transform, num_views=stage.num_views, seed=seed)
        # The Trainer pushes at its saves (any hub_strategy but end) through our pusher: our card, patterns and
        # folder of the repo; the finished run is pushed by the run, after everything is saved.
        pusher = self.hub_pusher(args)
        if pusher is None and args.push_to_hub:
            args = dataclasses.replace(args, push_to_hub=False)
        return stage.trainer_class(
            model=self.model,
            args=args,
            hub_pusher=pusher,
            loss_fn=loss,
            sampler=stage.sampler,
            run_record=self.record,
            encoder_mode=stage.encoder_mode,
            epoch_length=stage.epoch_length,
            run_dir=self.training_args.output_dir,
            test_every_epoch_dataset=data.test_dataset if args.official_test_selection else None,
            view_augmentation=on_device,
            train_dataset=views,
            eval_dataset=data.val_dataset,
            data_collator=collate_views,
            compute_metrics=build_compute_metrics(data.class_names),
            processing_class=build_image_processor(image_size, **normalization),
        )

    def hub_pusher(self, args: AdUniTrainingArguments) -> CheckpointPusher | None:
        """What pushes the saves of a trainer with `args` while it trains; None when it pushes nothing (`end`, or a
        stage of a two-stage method, whose arguments never push)."""
        if not pushes_while_training(args.push_to_hub, args.hub_strategy):
            return None
        return CheckpointPusher(
            repo_id=hub_repo_id(self.training_args),
            strategy=args.hub_strategy,
            path_in_repo=self.hub_path_in_repo,
            token=args.hub_token,
            private=args.hub_private_repo,
            revision=args.hub_revision,
            carried_files=tuple(f"{name}{suffix}" for name in SELECTIONS for suffix in (".json", ".safetensors")),
        )


def train(trainers: StageTrainers, checkpoint: Path | None) -> tuple[AdUniTrainer, dict[str, float]]:
    """Train every stage; returns the last stage's trainer (its output_dir the run's) and the training metrics
    (an earlier stage's prefixed `stage1_`), saved with the final model and the trainer state."""
    method, args = trainers.method, trainers.training_args
    if method.num_stages == 1:
        trainer = trainers.make(args, resolve_stage(method.stages[0], 0, trainers.method_args))
        result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
        earlier: dict[str, float] = {}
    else:  # each stage its own trainer, in a folder of the run; the last one saves and evaluates
        trainer, result, earlier = train_in_stages(
            trainers.model,
            method,
            make_trainer=trainers.make,
            method_args=trainers.method_args,
            training_args=args,
            record=trainers.record,
            checkpoint=checkpoint,
        )
    trainer.save_model()
    metrics = {**earlier, **result.metrics}  # on the console: the last epoch's line ("done in ... s")
    save_results(Path(args.output_dir), "train", metrics, trainer.is_world_process_zero())
    trainer.save_state()  # trainer_state.json: the per-epoch loss, alpha, learning rate and validation history
    return trainer, metrics


# ---- 6. evaluation and report -------------------------------------------------------------------------------------
def evaluate_and_report(
    trainer: AdUniTrainer,
    method: Method,
    data: RunData,
    model_args: ModelArguments,
    data_args: DataArguments,
    method_args: MethodArguments,
    training_args: AdUniTrainingArguments,
    hub_path_in_repo: str = "",
) -> dict[str, float]:
    """Validate and test the final model and the reported models, add the method's own report, draw the figures,
    write the card (whose usage snippet loads the model from `hub_path_in_repo` of its repository) and, last,
    test_results.json (from then on the run counts as finished); returns the test metrics."""
    output_dir, main = Path(training_args.output_dir), trainer.is_world_process_zero()
    report = None
    if method.after_training is not None:
        stage_dirs = (
            [stage_dir(output_dir, i) for i in range(method.num_stages)]
            if method.num_stages > 1
            else [output_dir]
        )
        report = method.after_training(
            TrainedRun(
                tuple(stage_dirs),
                data.val_dataset,
                data.test_dataset,
                data.class_names,
                training_args.per_device_eval_batch_size,
                training_args.device,
            )
        )
    extra_eval, extra_test = (report.eval_metrics, report.test_metrics) if report is not None else ({}, {})
    eval_metrics: dict[str, float] = {}
    if data.val_dataset is not None:
        eval_metrics = {**trainer.evaluate(), **extra_eval}
        save_results(output_dir, "eval", eval_metrics, main)
    results = {**trainer.evaluate(data.test_dataset, metric_key_prefix="test"), **extra_test}
    results.update(evaluate_selected_models(trainer, data.test_dataset))
    figures = write_run_figures(trainer, data, output_dir) if training_args.figures else []
    card = run_model_card(
        output_dir=output_dir, data=data, results=results, model_args=model_args, data_args=data_args,
        method_args=method_args, training_args=training_args, method=method, figures=figures,
        path_in_repo=hub_path_in_repo,
    )  # fmt: skip
    if main:
        write_atomic(output_dir / "README.md", str(card))
    save_results(output_dir, "test", results, main)  # last: from here on the run counts as finished
    if main:  # the final table: the validation split beside the test fold
        columns = ("eval", "test") if eval_metrics else "test"
        console_print(format_results_table({**eval_metrics, **results}, data.class_names, prefix=columns))
        if report is not None and report.test_metrics:
            console_print(f"{report.title}:")
            console_print(format_results_table(results, data.class_names, prefix=f"test_{report.name}"))
    return results
