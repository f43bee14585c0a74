"""Training a two-stage method (its `Method.stages`, aduni_hf/methods): one trainer per stage, each in a folder of
the run, resumable stage by stage. The two-stage methods of the paper's Table 1:

| `method` | stage 1 | stage 2 |
|---|---|---|
| `decouple` (cRT; Kang et al., ICLR 2020, "Decoupling representation and classifier for long-tailed recognition"; facebookresearch/classifier-balancing) | plain cross-entropy, one view, the recipe's sampler (instance-balanced `none` in the official code), epochs and optimiser | encoder frozen, classifier re-initialised, CE with the class-aware sampler (4 per class), epochs of N/B batches as the official `epoch_steps`; BatchNorm in train mode (`cls_crt` puts every network in `train()`, so the running statistics follow the class-balanced batches) |
| `cicl` (Marrakchi et al., MICCAI 2021, "Fighting class imbalance with contrastive learning"; YMarrakchi/CICL) | SupCon `L_out` (`aduni_hf.losses.SupConLoss`), two views, no classifier term: the classifier is frozen; the recipe's sampler (the official `--balance` is `upsample`) | encoder frozen in eval mode (main_linear.py: BatchNorm frozen), classifier re-initialised, CE on always-balanced batches (`upsample`, as the official linear stage whatever stage 1 used) |

Both second stages train with SGD (the recipe's momentum and weight decay) at `stage2_learning_rate`, no warm-up,
cosine to `min_learning_rate` over `stage2_epochs`, on the recipe's augmentation, batch and one view; only the
classifier is in the optimiser. `stage2_bn` overrides the method's BatchNorm choice. `max_steps` caps every
stage (a quick run trains `max_steps` steps of each). decouple also reports tau-normalisation of the stage-1 model
(`aduni_hf.evaluation.tau_norm`).

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor, nn
from transformers.trainer_utils import TrainOutput

from ..methods import Method, MethodArguments, Stage
from ..training import AdUniTrainer, AdUniTrainingArguments
from ..training.checkpoints import RUN_RECORD_NAME
from ..utils import write_atomic
from .errors import RunFolderError
from .run_folder import (
    STAGE_DIR_PREFIX,
    check_resume,
    remove_interrupted_checkpoints,
    resume_point,
    save_results,
)

logger = logging.getLogger(__name__)

STAGE_FINISHED_NAME = "stage_finished.json"  # written last into a stage folder: the stage is done
# Builds the trainer of a (resolved) stage with that stage's arguments.
MakeTrainer = Callable[[AdUniTrainingArguments, Stage], AdUniTrainer]


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
    return sorted(p for p in output_dir.glob(f"{STAGE_DIR_PREFIX}*") if p.is_dir() and p.name[len(STAGE_DIR_PREFIX) :].isdigit())


def stage_finished(directory: Path) -> bool:
    return (directory / STAGE_FINISHED_NAME).is_file()


def prepare_stage_dirs(output_dir: str | Path, num_stages: int, overwrite: bool) -> None:
    """The stage folders' part of `checkpoints.prepare_output_dir` (call it right after, on the main process first).

    - `overwrite`: the previous run's stage folders are removed with its other outputs;
    - a one-stage method refuses a folder that holds the stages of a two-stage run;
    - checkpoints whose writing was interrupted are removed from the stage folders.
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
        remove_interrupted_checkpoints(directory)


def stage_arguments(
    training_args: AdUniTrainingArguments, method_args: MethodArguments, index: int
) -> AdUniTrainingArguments:
    """The TrainingArguments of stage `index`: the recipe's, writing into the stage folder and never pushing;
    a second stage trains `stage2_epochs` with the official SGD recipe at `stage2_learning_rate`, no warm-up and
    the cosine over its own epochs."""
    changes: dict[str, Any] = {
        "output_dir": str(stage_dir(training_args.output_dir, index)),
        "push_to_hub": False,  # stages push nothing (run.check_hub_strategy); the run pushes its final model
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
        raise RunFolderError(
            f"{directory} is marked finished but has no model.safetensors; start a fresh run"
        )
    device = next(model.parameters()).device
    state = safetensors.torch.load_file(str(path), device=str(device))
    model.load_state_dict(state, strict=True)


def finish_stage(trainer: AdUniTrainer, result: TrainOutput, record: dict[str, Any], index: int) -> None:
    """Save stage `index`'s final model and state into its folder (`trainer.args.output_dir`); the mark
    `stage_finished.json` is written last and atomically, so a kill before it leaves the stage unfinished."""
    directory = Path(trainer.args.output_dir)
    trainer.save_model()
    save_results(directory, "train", result.metrics, trainer.is_world_process_zero())
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
    method: Method,
    *,
    make_trainer: MakeTrainer,
    method_args: MethodArguments,
    training_args: AdUniTrainingArguments,
    record: dict[str, Any],
    checkpoint: Path | None,
) -> tuple[AdUniTrainer, TrainOutput, dict[str, float]]:
    """Train `model` through the two stages of `method`, each with its own trainer from `make_trainer(args, stage)`.

    `checkpoint` is `prepare_output_dir`'s answer (already checked against `record`): None, or an explicit
    `resume_from_checkpoint` inside a stage folder. Returns the last stage's trainer (its `args.output_dir` back
    to the run's `output_dir`, so that the final model and results go there), its train output, and the
    metrics of the earlier stages' training, prefixed `stage1_`.
    """
    if method.num_stages != 2:
        raise ValueError(f"train_in_stages trains two stages, got {method.num_stages}")
    output_dir = Path(training_args.output_dir)
    explicit = None
    if checkpoint is not None:
        explicit = _stage_of(checkpoint, output_dir, method.num_stages)
        if explicit is None:
            raise RunFolderError(
                f"resume_from_checkpoint={str(checkpoint)!r}: method {method.name!r} trains in stages; its "
                f"checkpoints are in {stage_dir(output_dir, 0).name}/ and {stage_dir(output_dir, 1).name}/ of output_dir"
            )
    first_dir = stage_dir(output_dir, 0)
    if stage_finished(first_dir):
        if explicit == 0:
            raise RunFolderError(
                f"resume_from_checkpoint={str(checkpoint)!r} is a stage-1 checkpoint, but stage 1 has finished "
                f"({first_dir / STAGE_FINISHED_NAME}). Resume stage 2 (leave resume_from_checkpoint out), or start a "
                "fresh run with --overwrite_output_dir true"
            )
        earlier = reload_finished_stage(model, method, first_dir, record)
    else:
        if explicit == 1:
            raise RunFolderError(
                f"resume_from_checkpoint={str(checkpoint)!r} is a stage-2 checkpoint, but stage 1 has not finished "
                f"(no {first_dir / STAGE_FINISHED_NAME})"
            )
        plan = StagePlan(model, method, make_trainer, method_args, training_args, record)
        trainer, result = plan.train(0, checkpoint if explicit == 0 else None)
        finish_stage(trainer, result, record, 0)
        earlier = dict(result.metrics)
        del trainer
    plan = StagePlan(model, method, make_trainer, method_args, training_args, record)
    trainer, result = plan.train(1, checkpoint if explicit == 1 else None)
    trainer.args.output_dir = str(output_dir)  # the final model, its state and the results go to the run's folder
    return trainer, result, {f"stage1_{key}": value for key, value in earlier.items()}


def reload_finished_stage(model: nn.Module, method: Method, directory: Path, record: dict[str, Any]) -> dict:
    """Load a stage that finished earlier into `model` (it is not trained again); returns its training metrics."""
    for note in check_resume(directory, record):
        logger.warning("stage 1 was trained with another length: %s (it is not trained again)", note)
    mark = json.loads((directory / STAGE_FINISHED_NAME).read_text())
    logger.info(
        "stage 1 of %s finished earlier (%s, %d steps): not trained again; its weights are loaded",
        method.name,
        directory,
        mark["global_step"],
    )
    load_stage_weights(model, directory)
    return dict(mark["train_metrics"])


@dataclasses.dataclass
class StagePlan:
    """What every stage of a run trains with; `train(index, checkpoint)` trains one stage."""

    model: nn.Module
    method: Method
    make_trainer: MakeTrainer
    method_args: MethodArguments
    training_args: AdUniTrainingArguments
    record: dict[str, Any]

    def train(self, index: int, checkpoint: Path | None) -> tuple[AdUniTrainer, TrainOutput]:
        """Train stage `index` in its folder: from the explicit `checkpoint`, else from the folder's last complete
        checkpoint (checked against the run record), else from the model as the previous stage left it."""
        stage = resolve_stage(self.method.stages[index], index, self.method_args)
        trainer = self.make_trainer(stage_arguments(self.training_args, self.method_args, index), stage)
        prepare_model(self.model, stage, self.training_args.seed)
        resume = checkpoint if checkpoint is not None else resume_point(stage_dir(self.training_args.output_dir, index))
        if resume is not None:
            if checkpoint is None:
                for note in check_resume(resume, self.record):
                    logger.warning("resuming %s: %s", resume, note)
            logger.info("resuming stage %d from %s", index + 1, resume)
        elif index > 0:
            logger.info("stage %d starts from the stage-%d weights", index + 1, index)
        description = describe_stage(stage, index, self.training_args, self.method_args)
        logger.info("stage %d of %s: %s", index + 1, self.method.name, description)
        result = trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
        return trainer, result


def describe_stage(
    stage: Stage, index: int, args: AdUniTrainingArguments, method_args: MethodArguments
) -> str:
    """One line for the log and the model card: what stage `index` of a recipe trains, with what."""
    parts = []
    if stage.freeze_encoder:
        parts.append(f"encoder frozen (BatchNorm {stage.bn_mode})")
    if stage.reinit_classifier:
        parts.append("classifier re-initialised")
    if stage.freeze_classifier:
        parts.append("classifier frozen")
    parts.append(f"loss {stage.description}, sampler {stage.sampler}")
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


__all__ = [
    "describe_stage",
    "prepare_model",
    "prepare_stage_dirs",
    "resolve_stage",
    "stage_dir",
    "train_in_stages",
]
