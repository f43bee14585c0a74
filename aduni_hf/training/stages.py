"""Methods trained in stages: a method is a sequence of `Stage`s, one-stage methods a single one.

The two-stage methods of the paper's Table 1 are registered in the `method` registry (`LOSSES`, in
aduni_hf/losses/stages.py) as the loss of their first stage with a class attribute `second_stage`; this module
runs the stages:

| `method` | stage 1 | stage 2 |
|---|---|---|
| `decouple` (cRT; Kang et al., ICLR 2020, "Decoupling representation and classifier for long-tailed recognition"; facebookresearch/classifier-balancing) | plain cross-entropy, one view, the recipe's sampler (instance-balanced `none` in the official code), epochs and optimiser | encoder frozen, classifier re-initialised, CE with the class-aware sampler (4 per class), epochs of N/B batches as the official `epoch_steps`; BatchNorm in train mode (`cls_crt` puts every network in `train()`, so the running statistics follow the class-balanced batches) |
| `cicl` (Marrakchi et al., MICCAI 2021, "Fighting class imbalance with contrastive learning"; YMarrakchi/CICL) | SupCon `L_out` (`aduni_hf.losses.SupConLoss`), two views, no classifier term: the classifier is frozen; the recipe's sampler (the official `--balance` is `upsample`) | encoder frozen in eval mode (main_linear.py: BatchNorm frozen), classifier re-initialised, CE on always-balanced batches (`upsample`, as the official linear stage whatever stage 1 used) |

Both second stages train with SGD (the recipe's momentum and weight decay) at `stage2_learning_rate`, no warm-up,
cosine to `min_learning_rate` over `stage2_epochs`, on the recipe's augmentation, batch and one view; only the
classifier is in the optimiser. `stage2_bn` overrides the method's BatchNorm choice. `max_steps` caps every
stage (a quick run trains `max_steps` steps of each).

decouple also reports tau-normalisation (Kang et al. 2020, Sec. 4; classifier-balancing's tau_norm.py), an
evaluation of the stage-1 model without training: w_c <- w_c / ||w_c||^tau, bias dropped, tau in 0, 0.1, ..., 2.0
chosen on the validation split (best macro-F1, ties to the smaller tau), then tested once at that tau.

The output folder of a two-stage run (docs/hf_stack.md, "Checkpoints and resuming"):

    output_dir/_stage1/checkpoint-N/   stage 1's checkpoints (the recipe's save_strategy)
    output_dir/_stage1/                stage 1's final model, trainer_state.json, aduni_run.json and, written last,
                                       stage_finished.json: stage 1 is done and is never trained again
    output_dir/_stage2/checkpoint-M/   stage 2's checkpoints
    output_dir/                        the final (stage-2) model and results, as every method

The same command resumes a killed run: stage 1 from its last checkpoint if it had not finished, else stage 2
from its last checkpoint, or from the stage-1 weights if it has none. The stage folders start with "_" so that
the push (`aduni_hf.hub.push.RUN_IGNORE_PATTERNS`) leaves them out and uploads the final model only.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import safetensors.torch
import torch
from torch import Tensor, nn
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput

from ..data import collate_views
from ..evaluation.metrics import classification_metrics
from ..losses.stages import Stage
from ..utils import write_atomic
from .checkpoints import RUN_RECORD_NAME, STAGING_PREFIX, RunFolderError, check_resume, last_checkpoint

if TYPE_CHECKING:
    from .arguments import AdUniTrainingArguments, MethodArguments
    from .trainer import AdUniTrainer

logger = logging.getLogger(__name__)

STAGE_DIR_PREFIX = "_stage"  # _stage1, _stage2: "_*" is what the push leaves out
STAGE_FINISHED_NAME = "stage_finished.json"  # written last into a stage folder: the stage is done
TAUS = tuple(i / 10 for i in range(21))  # 0, 0.1, ..., 2.0, as classifier-balancing's tau_norm.py


def resolve_stage(stage: Stage, index: int, method_args: MethodArguments) -> Stage:
    """`stage` with the recipe's choices filled in: its sampler, and `stage2_bn` for a later stage."""
    changes: dict[str, Any] = {}
    if stage.sampler is None:
        changes["sampler"] = method_args.sampler
    if index > 0 and method_args.stage2_bn is not None:
        changes["bn_mode"] = method_args.stage2_bn
    return dataclasses.replace(stage, **changes)


def stage_dir(output_dir: str | Path, index: int) -> Path:
    """The folder of stage `index` (0-based) in a run's `output_dir`: `_stage1`, `_stage2`."""
    return Path(output_dir) / f"{STAGE_DIR_PREFIX}{index + 1}"


def stage_dirs(output_dir: str | Path) -> list[Path]:
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    return sorted(p for p in output_dir.glob(f"{STAGE_DIR_PREFIX}*") if p.is_dir() and p.name[6:].isdigit())


def stage_finished(directory: Path) -> bool:
    return (directory / STAGE_FINISHED_NAME).is_file()


def prepare_stage_dirs(output_dir: str | Path, num_stages: int, overwrite: bool) -> None:
    """The stage folders' part of `checkpoints.prepare_output_dir` (call it right after, on the main process first).

    - `overwrite`: the previous run's stage folders are removed with its other outputs;
    - a one-stage method refuses a folder that holds the stages of a two-stage run;
    - checkpoints whose writing was interrupted (`tmp-checkpoint-N`) are removed from the stage folders.
    """
    existing = stage_dirs(output_dir)
    if overwrite:
        for directory in existing:
            shutil.rmtree(directory)
        if existing:
            logger.warning("overwrite_output_dir: removed %s", ", ".join(d.name for d in existing))
        return
    if num_stages == 1 and existing:
        raise RunFolderError(
            f"output_dir={str(output_dir)!r} holds the stage folders of a two-stage run "
            f"({', '.join(d.name for d in existing)}), which a one-stage method cannot continue. Choose another "
            "output_dir, or pass --overwrite_output_dir true to train a fresh run over it."
        )
    for directory in existing:
        for staged in directory.glob(f"{STAGING_PREFIX}{PREFIX_CHECKPOINT_DIR}-*"):
            logger.warning("removing %s, a checkpoint whose writing was interrupted", staged)
            shutil.rmtree(staged, ignore_errors=True)


def stage_arguments(
    training_args: AdUniTrainingArguments, method_args: MethodArguments, index: int
) -> AdUniTrainingArguments:
    """The TrainingArguments of stage `index`: the recipe's, writing into the stage folder and never pushing;
    a second stage trains `stage2_epochs` with the official SGD recipe at `stage2_learning_rate`, no warm-up and
    the cosine over its own epochs."""
    changes: dict[str, Any] = {
        "output_dir": str(stage_dir(training_args.output_dir, index)),
        "push_to_hub": False,  # the run pushes its final model once, from output_dir
    }
    if index > 0:
        changes.update(
            num_train_epochs=method_args.stage2_epochs,
            learning_rate=method_args.stage2_learning_rate,
            optimizer_recipe="official",
            warmup_epochs=0,
            cosine_epochs=method_args.stage2_epochs,
        )
    return dataclasses.replace(training_args, **changes)


# ---- the model between stages -------------------------------------------------------------------------------------
def fresh_classifier_weights(model: nn.Module, seed: int) -> dict[str, Tensor]:
    """New classifier weights: the layer's own `reset_parameters` (PyTorch's default for Linear) on a CPU copy,
    drawn after `torch.manual_seed(seed)` inside a forked RNG: a pure function of `seed`, whatever the device and
    whatever was drawn before, so an interrupted and an uninterrupted run start stage 2 alike."""
    fresh = copy.deepcopy(model.classifier.dense).to("cpu", torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh.reset_parameters()
    return {name: value.detach() for name, value in fresh.named_parameters()}


def prepare_model(model: nn.Module, stage: Stage, seed: int) -> None:
    """Freeze or unfreeze the encoder and the classifier as `stage` says, and re-initialise the classifier."""
    for parameter in model.base_model.parameters():
        parameter.requires_grad_(not stage.freeze_encoder)
    for parameter in model.classifier.parameters():
        parameter.requires_grad_(not stage.freeze_classifier)
    if stage.reinit_classifier:
        fresh = fresh_classifier_weights(model, seed)
        with torch.no_grad():
            for name, parameter in model.classifier.dense.named_parameters():
                parameter.copy_(fresh[name].to(parameter.device, parameter.dtype))


def load_stage_weights(model: nn.Module, directory: Path) -> None:
    """Load a finished stage's saved model (weights and BatchNorm statistics) into `model`."""
    path = directory / "model.safetensors"
    if not path.is_file():
        raise RunFolderError(f"{directory} is marked finished but has no model.safetensors; start a fresh run")
    device = next(model.parameters()).device
    state = safetensors.torch.load_file(str(path), device=str(device))
    model.load_state_dict(state, strict=True)


def finish_stage(trainer: AdUniTrainer, result: TrainOutput, record: dict[str, Any], index: int) -> None:
    """Save stage `index`'s final model and state into its folder (`trainer.args.output_dir`); the mark
    `stage_finished.json` is written last and atomically, so a kill before it leaves the stage unfinished."""
    directory = Path(trainer.args.output_dir)
    trainer.save_model()
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    if trainer.is_world_process_zero():
        write_atomic(directory / RUN_RECORD_NAME, json.dumps(record, indent=2, default=str))
        mark = {"stage": index + 1, "global_step": result.global_step, "train_metrics": result.metrics}
        write_atomic(directory / STAGE_FINISHED_NAME, json.dumps(mark, indent=2))
    trainer.accelerator.wait_for_everyone()


def _stage_of(checkpoint: Path, output_dir: Path, num_stages: int) -> int | None:
    parent = checkpoint.resolve().parent
    for index in range(num_stages):
        if parent == stage_dir(output_dir, index).resolve():
            return index
    return None


def train_in_stages(
    model: nn.Module,
    stages: Sequence[Stage],
    *,
    make_trainer: Callable[[AdUniTrainingArguments, Stage], AdUniTrainer],
    method_args: MethodArguments,
    training_args: AdUniTrainingArguments,
    record: dict[str, Any],
    checkpoint: Path | None,
) -> tuple[AdUniTrainer, TrainOutput, dict[str, float]]:
    """Train `model` through `stages` (two), each with its own `AdUniTrainer` from `make_trainer(args, stage)`.

    `checkpoint` is `prepare_output_dir`'s answer (already checked against `record`): None, or an explicit
    `resume_from_checkpoint` inside a stage folder. Returns the last stage's trainer (its `args.output_dir` back
    to the run's `output_dir`, so that the final model and results go there), its train output, and the
    metrics of the earlier stages' training, prefixed `stage1_`.
    """
    if len(stages) != 2:
        raise ValueError(f"train_in_stages trains two stages, got {len(stages)}")
    output_dir = Path(training_args.output_dir)
    explicit = None
    if checkpoint is not None:
        explicit = _stage_of(checkpoint, output_dir, len(stages))
        if explicit is None:
            raise RunFolderError(
                f"resume_from_checkpoint={str(checkpoint)!r}: method {method_args.method!r} trains in stages; its "
                f"checkpoints are in {stage_dir(output_dir, 0).name}/ and {stage_dir(output_dir, 1).name}/ of output_dir"
            )
    first_dir = stage_dir(output_dir, 0)
    earlier: dict[str, float] = {}
    if stage_finished(first_dir):
        if explicit == 0:
            raise RunFolderError(
                f"resume_from_checkpoint={str(checkpoint)!r} is a stage-1 checkpoint, but stage 1 has finished "
                f"({first_dir / STAGE_FINISHED_NAME}). Resume stage 2 (leave resume_from_checkpoint out), or start a "
                "fresh run with --overwrite_output_dir true"
            )
        for note in check_resume(first_dir, record):
            logger.warning("stage 1 was trained with another length: %s (it is not trained again)", note)
        mark = json.loads((first_dir / STAGE_FINISHED_NAME).read_text())
        logger.info(
            "stage 1 of %s finished earlier (%s, %d steps): not trained again; its weights are loaded",
            method_args.method,
            first_dir,
            mark["global_step"],
        )
        load_stage_weights(model, first_dir)
        earlier = dict(mark["train_metrics"])
    else:
        if explicit == 1:
            raise RunFolderError(
                f"resume_from_checkpoint={str(checkpoint)!r} is a stage-2 checkpoint, but stage 1 has not finished "
                f"(no {first_dir / STAGE_FINISHED_NAME})"
            )
        stage = resolve_stage(stages[0], 0, method_args)
        trainer = make_trainer(stage_arguments(training_args, method_args, 0), stage)
        prepare_model(model, stage, training_args.seed)
        resume = checkpoint if explicit == 0 else last_checkpoint(first_dir)
        if resume is not None and explicit is None:
            for note in check_resume(resume, record):
                logger.warning("resuming %s: %s", resume, note)
            logger.info("resuming stage 1 from %s", resume)
        logger.info("stage 1 of %s: %s", method_args.method, describe_stage(stage, 0, training_args, method_args))
        result = trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
        finish_stage(trainer, result, record, 0)
        earlier = dict(result.metrics)
        del trainer

    stage = resolve_stage(stages[1], 1, method_args)
    second_dir = stage_dir(output_dir, 1)
    trainer = make_trainer(stage_arguments(training_args, method_args, 1), stage)
    prepare_model(model, stage, training_args.seed)
    resume = checkpoint if explicit == 1 else last_checkpoint(second_dir)
    if resume is not None:
        if explicit is None:
            for note in check_resume(resume, record):
                logger.warning("resuming %s: %s", resume, note)
        logger.info("resuming stage 2 from %s", resume)
    else:
        logger.info("stage 2 starts from the stage-1 weights")
    logger.info("stage 2 of %s: %s", method_args.method, describe_stage(stage, 1, training_args, method_args))
    result = trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    trainer.args.output_dir = str(output_dir)  # the final model, its state and the results go to the run's folder
    return trainer, result, {f"stage1_{key}": value for key, value in earlier.items()}


def describe_stage(stage: Stage, index: int, args: AdUniTrainingArguments, method_args: MethodArguments) -> str:
    """One line for the log and the model card: what stage `index` of a recipe trains, with what."""
    parts = []
    if stage.freeze_encoder:
        parts.append(f"encoder frozen (BatchNorm {stage.bn_mode})")
    if stage.reinit_classifier:
        parts.append("classifier re-initialised")
    if stage.freeze_classifier:
        parts.append("classifier frozen")
    loss = getattr(stage.loss, "description", stage.loss) or "of the method"
    parts.append(f"loss {loss}, sampler {stage.sampler}")
    if stage.epoch_length == "dataset":
        parts.append("epochs of N/B batches")
    if index == 0:
        parts.append(f"{args.num_train_epochs:g} epochs, the recipe's optimiser")
    else:
        parts.append(
            f"{method_args.stage2_epochs} epochs, SGD lr {method_args.stage2_learning_rate:g} (no warm-up, cosine to "
            f"{args.min_learning_rate:g})"
        )
    return "; ".join(parts)


# ---- tau-normalisation ------------------------------------------------------------------------------------------
def tau_norm_logits(features: Tensor, weight: Tensor, tau: float) -> Tensor:
    """Logits of the tau-normalised classifier, bias dropped: features (n, d) . (w_c / ||w_c||^tau) -> (n, C)."""
    return features @ (weight / weight.norm(dim=1, keepdim=True).pow(tau)).T


def select_tau(
    features: Tensor, labels: Tensor, weight: Tensor, class_names: Sequence[str], taus: Sequence[float] = TAUS
) -> tuple[float, dict[float, float]]:
    """The tau of the best macro-F1 on (validation) `features` and `labels`, ties to the smaller tau, and every
    tau's macro-F1. Only the split given is read: give it the validation split, never the test fold."""
    scores = {}
    for tau in taus:
        predictions = tau_norm_logits(features, weight, tau).argmax(dim=1)
        scores[tau] = classification_metrics(predictions.numpy(), labels.numpy(), class_names)["macro_f1"]
    best = max(scores.values())
    return min(tau for tau, score in scores.items() if score == best), scores


@torch.no_grad()
def pooled_features(model: nn.Module, dataset, batch_size: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The encoder's pooled features (n, d) float32 on the CPU, and the labels (n,), of an evaluation dataset."""
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate_views)
    features, labels = [], []
    for batch in loader:
        output = model.base_model(pixel_values=batch["pixel_values"].to(device))
        features.append(output.pooler_output.float().cpu())
        labels.append(batch["labels"])
    return torch.cat(features), torch.cat(labels)


def tau_norm_evaluation(
    model: nn.Module,
    val_dataset,
    test_dataset,
    class_names: Sequence[str],
    batch_size: int,
    device: torch.device,
) -> tuple[dict[str, float], dict[str, float]]:
    """tau-normalisation of the stage-1 `model`: tau chosen on `val_dataset`, then `test_dataset` evaluated once.

    Returns (validation metrics `eval_tau_norm_*`, test metrics `test_tau_norm_*` and `tau_norm_tau`); both
    empty, with a warning, without a validation split or with a classifier other than linear.
    """
    if val_dataset is None:
        logger.warning("tau-normalisation skipped: no validation split to choose tau on (val_fraction is 0)")
        return {}, {}
    if not isinstance(model.classifier.dense, nn.Linear):
        logger.warning("tau-normalisation skipped: it rescales a linear classifier's rows, this one is cosine")
        return {}, {}
    weight = model.classifier.dense.weight.detach().float().cpu()
    val_features, val_labels = pooled_features(model, val_dataset, batch_size, device)
    tau, scores = select_tau(val_features, val_labels, weight, class_names)
    logger.info(
        "tau-normalisation: tau %g chosen on the validation split (macro-F1 by tau: %s)",
        tau,
        ", ".join(f"{t:g}: {s:.4f}" for t, s in scores.items()),
    )
    val_predictions = tau_norm_logits(val_features, weight, tau).argmax(dim=1)
    val_metrics = classification_metrics(val_predictions.numpy(), val_labels.numpy(), class_names)
    test_features, test_labels = pooled_features(model, test_dataset, batch_size, device)
    test_predictions = tau_norm_logits(test_features, weight, tau).argmax(dim=1)
    test_metrics = classification_metrics(test_predictions.numpy(), test_labels.numpy(), class_names)
    return (
        {f"eval_tau_norm_{key}": value for key, value in val_metrics.items()},
        {**{f"test_tau_norm_{key}": value for key, value in test_metrics.items()}, "tau_norm_tau": tau},
    )


__all__ = [
    "select_tau",
    "stage_dir",
    "tau_norm_evaluation",
    "tau_norm_logits",
    "train_in_stages",
]
