"""The paper's protocol as one command: train and test a fresh model on every fold, then summarise.

    output_dir/fold_<k>/      a normal training run with test_fold k (scripts/train.py's folder)
    output_dir/cv_recipe.json the recipe every fold trains with (written before the first fold)
    output_dir/cv_results.json per fold and mean/std of accuracy, macro-F1, balanced accuracy, quadratic weighted
                               kappa, ROC-AUC and per-class F1; the data set's own metrics, its headline first
    output_dir/cv_results (.md) the same as a markdown table in the paper's format (0.878 ± 4.36e-03)

A fold whose folder holds test_results.json (written last by a run) is finished and not trained again; a fold
killed mid-way resumes from its last checkpoint (`run_training`). A recipe that differs from cv_recipe.json in a
field that changes the result is refused, naming the fields, so that one table never mixes two recipes.

With `push_to_hub` and a `hub_strategy` other than `end`, the experiment's repository gets cv_recipe.json and our
card first, then each fold pushes its saves into the repository's folder `fold_<k>/` (its checkpoint in
`fold_<k>/last-checkpoint/`) and its finished run there; the summary comes last. `--resume_from_checkpoint
hub:owner/name` (the experiment's repository) continues it on another machine: the folds finished on the Hub are
downloaded, not trained again, and each other fold resumes from its pushed checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from transformers.dynamic_module_utils import custom_object_save

from ..console import console_print
from ..evaluation.cv_summary import (
    CV_MARKDOWN_NAME,
    CV_RESULTS_NAME,
    FOLD_PREFIX,
    REPORTED_MODELS,
    fold_dir,
    fold_metrics,
    paper_format,
    results_markdown,
    summarise_folds,
)
from ..evaluation.metric_names import DatasetMetrics, dataset_metrics, metric_label
from ..hub import render_cv_model_card
from ..hub.push import (
    CV_ALLOW_PATTERNS,
    CV_IGNORE_PATTERNS,
    HUB_PREFIX,
    LAST_CHECKPOINT,
    REMOTE_CODE_FILES,
    HubLocation,
    download_files,
    push_folder,
    pushes_while_training,
    remote_files,
    training_card,
)
from ..methods import METHODS, Method, MethodArguments
from ..modeling_aduni import AdUniForImageClassification
from ..training import AdUniTrainingArguments
from ..training.checkpoints import checkpoint_step
from ..utils import write_atomic
from .arguments import DataArguments, ModelArguments
from .checks import check_recipe
from .errors import RecipeError, RunFolderError
from .experiment_figures import experiment_figures
from .recipe_table import recipe_summary
from .run import check_hub_strategy, resolved_config, run_training, setup_logging
from .run_data import prepared_metadata
from .run_folder import FINISHED_NAME, HUB_STAGING_NAME, RESUMABLE_FIELDS, differs, hub_failure
from .run_lock import run_folder_lock

logger = logging.getLogger(__name__)

CV_RECIPE_NAME = "cv_recipe.json"
# Fields that differ from fold to fold, or do not change a fold's result (checkpoints.RESUMABLE_FIELDS).
PER_FOLD_FIELDS = frozenset({"test_fold", *RESUMABLE_FIELDS})


@dataclass
class CrossValidationArguments:
    """What `scripts/cross_validate.py` adds to a training recipe."""

    folds: str | None = field(
        default=None,
        metadata={"help": "Test folds to run, comma-separated (e.g. 0,1,2). Default: every fold."},
    )


def parse_folds(text: str | None, num_folds: int) -> list[int]:
    """`"0,2,4"` -> [0, 2, 4]; None -> every fold. Raises ValueError naming the field for a bad list."""
    if text is None or not str(text).strip():
        return list(range(num_folds))
    try:
        folds = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError as err:
        raise ValueError(f"folds={text!r}: expected comma-separated fold numbers, e.g. 0,1,2") from err
    bad = [k for k in folds if not 0 <= k < num_folds]
    if bad or not folds or len(set(folds)) != len(folds):
        raise ValueError(f"folds={text!r}: each fold once, in 0..{num_folds - 1} (num_folds={num_folds})")
    return folds


def cv_recipe(*argument_groups: Any) -> dict[str, Any]:
    """The fields every fold must share: the resolved recipe without `PER_FOLD_FIELDS`."""
    fields = {
        name: value for group in resolved_config(*argument_groups).values() for name, value in group.items()
    }
    return {name: value for name, value in sorted(fields.items()) if name not in PER_FOLD_FIELDS}


def check_cv_recipe(output_dir: Path, recipe: dict[str, Any]) -> None:
    """Refuse a recipe that differs from the one the folds in `output_dir` were trained with; record it if new."""
    path = output_dir / CV_RECIPE_NAME
    if not path.is_file():
        output_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(recipe, indent=2, sort_keys=True, default=str) + "\n")
        return
    saved = json.loads(path.read_text())
    differing = [
        f"{name}: {saved.get(name)!r} in the earlier folds, {recipe.get(name)!r} now"
        for name in sorted(set(saved) | set(recipe))
        if differs(saved.get(name), recipe.get(name))
    ]
    if differing:
        raise RunFolderError(
            f"{output_dir} holds a cross-validation trained with another recipe ({CV_RECIPE_NAME}); its folds and "
            "these would not be one experiment. Differing fields:\n  "
            + "\n  ".join(differing)
            + "\nUse the earlier recipe, another output_dir, or --overwrite_output_dir true to start over."
        )


def clear_cross_validation(output_dir: Path) -> list[str]:
    """Remove a previous cross-validation from `output_dir` (its folds and summaries); returns what went."""
    removed = []
    for path in sorted(output_dir.glob(f"{FOLD_PREFIX}*")):
        if path.is_dir() and path.name[len(FOLD_PREFIX) :].isdigit():
            shutil.rmtree(path)
            removed.append(path.name)
    for name in (CV_RECIPE_NAME, CV_RESULTS_NAME, CV_MARKDOWN_NAME):
        if (output_dir / name).is_file():
            (output_dir / name).unlink()
            removed.append(name)
    return removed


def _previous_seconds(output_dir: Path) -> dict[str, float]:
    path = output_dir / CV_RESULTS_NAME
    if not path.is_file():
        return {}
    folds = json.loads(path.read_text()).get("folds", {})
    return {k: v["seconds"] for k, v in folds.items() if v.get("seconds") is not None}


def collect_results(
    output_dir: Path, folds: list[int], seconds: dict[str, float], description: dict[str, Any]
) -> dict[str, Any]:
    """cv_results.json's content from the finished folds among `folds` (every finished fold of the folder)."""
    finished = sorted(
        int(path.parent.name[len(FOLD_PREFIX) :])
        for path in output_dir.glob(f"{FOLD_PREFIX}*/{FINISHED_NAME}")
        if path.parent.name[len(FOLD_PREFIX) :].isdigit()
    )
    class_names = description["class_names"]
    per_fold = {}
    tests = {fold: json.loads((fold_dir(output_dir, fold) / FINISHED_NAME).read_text()) for fold in finished}
    for fold, test_results in tests.items():
        per_fold[fold] = fold_metrics(test_results, class_names)
        per_fold[fold]["seconds"] = seconds.get(str(fold))
    summary = summarise_folds(per_fold, class_names)
    results = {
        **description,
        "folds": {str(k): v for k, v in per_fold.items()},
        "requested_folds": folds,
        **summary,
    }
    for key, (
        prefix,
        selection,
    ) in REPORTED_MODELS.items():  # the other reported models, where every fold has them
        if key == "last_epoch":
            continue
        if not tests or any(f"{prefix}_accuracy" not in test for test in tests.values()):
            continue
        chosen = {fold: fold_metrics(test, class_names, prefix=prefix) for fold, test in tests.items()}
        for fold, test in tests.items():
            chosen[fold]["epoch"] = test.get(f"{prefix}_epoch")
            chosen[fold]["seconds"] = seconds.get(str(fold))
        results[key] = {
            "selection": selection.format(metric=description["selection_metric"]),
            "class_names": class_names,
            "num_folds": description["num_folds"],
            "folds": {str(k): v for k, v in chosen.items()},
            **summarise_folds(chosen, class_names),
        }
    return results


def write_summary(
    output_dir: Path, results: dict[str, Any], training_args: AdUniTrainingArguments, recipe: dict[str, Any]
) -> None:
    """The experiment's figures (output_dir/figures/) and summary card (README.md); then, with `push_to_hub`, the
    upload of the summary and every fold's final model (`PushError` if it fails: everything is saved by then)."""
    figures = []
    if training_args.figures:
        figures = [
            (path.stem.replace("_", " "), str(path.relative_to(output_dir)))
            for path in experiment_figures([output_dir], output_dir / "figures")
        ]
    method = METHODS[results["method"]]
    write_remote_code(output_dir)
    card = render_cv_model_card(
        results,
        method_description=method.description,
        recipe=recipe,
        figures=figures,
        model_id=training_args.hub_model_id or "",
    )
    write_atomic(output_dir / "README.md", str(card))
    if training_args.push_to_hub:
        repo_id = training_args.hub_model_id or output_dir.name
        url = push_folder(
            output_dir,
            repo_id,
            token=training_args.hub_token,
            private=training_args.hub_private_repo,
            allow_patterns=CV_ALLOW_PATTERNS,
            ignore_patterns=CV_IGNORE_PATTERNS,
            commit_message=f"AdUni cross-validation: {results['title']}",
        )
        print(f"pushed to {url}")


def write_remote_code(output_dir: Path) -> None:
    """The model's remote code (`REMOTE_CODE_FILES`, written as `save_pretrained` writes it beside the weights) at
    the top of the cross-validation folder, so that `from_pretrained(folder_or_repo, subfolder="fold_<k>",
    trust_remote_code=True)` finds it there: transformers looks for remote code at the top, not in `subfolder`."""
    written = sorted(Path(path).name for path in custom_object_save(AdUniForImageClassification, output_dir))
    if written != sorted(REMOTE_CODE_FILES):  # the push uploads REMOTE_CODE_FILES only
        raise RuntimeError(f"the remote code is {written}; the push uploads {list(REMOTE_CODE_FILES)}")


def run_cross_validation(
    model_args: ModelArguments,
    data_args: DataArguments,
    method_args: MethodArguments,
    training_args: AdUniTrainingArguments,
    folds: list[int],
) -> dict[str, Any]:
    """Train and test one fresh model per fold in `folds` into output_dir/fold_<k>, then write cv_results.json
    and its markdown table (`CV_MARKDOWN_NAME`) over every finished fold of output_dir. Returns the cv_results.json content."""
    training_args.device  # noqa: B018  (sets up the processes: process_index is 0 everywhere before it)
    setup_logging(training_args)
    method = METHODS[method_args.method]
    check_recipe(model_args, data_args, method_args, training_args, method)  # before any fold trains
    check_hub_strategy(method, training_args)
    data_source_metrics(data_args)  # the data set's metrics: one its metadata names wrongly fails here
    # One writer per cross-validation folder (each fold's run also locks its own folder: run_lock.py).
    with run_folder_lock(training_args.output_dir, main_process=training_args.process_index == 0):
        seconds = train_folds(model_args, data_args, method_args, training_args, folds)
        return write_cv_results(model_args, data_args, method_args, training_args, method, folds, seconds)


def train_folds(
    model_args: ModelArguments,
    data_args: DataArguments,
    method_args: MethodArguments,
    training_args: AdUniTrainingArguments,
    folds: list[int],
) -> dict[str, float]:
    """Check the folder against the recipe (or clear it), then train each fold of `folds` not finished yet;
    returns each fold's training seconds (an earlier summary's, for the folds trained before)."""
    output_dir = Path(training_args.output_dir)
    recipe = cv_recipe(model_args, data_args, method_args, training_args)
    location = experiment_location(training_args)
    pushed: dict[int, str] = {}
    with training_args.main_process_first(desc="checking the cross-validation folder"):
        if training_args.process_index == 0:
            if training_args.overwrite_output_dir and output_dir.is_dir():
                removed = clear_cross_validation(output_dir)
                if removed:
                    logger.warning("overwrite_output_dir: removed %s from %s", ", ".join(removed), output_dir)
            if location is not None:
                pushed = fetch_experiment(location, output_dir, folds, training_args.hub_token)
            check_cv_recipe(output_dir, recipe)
            if pushes_while_training(training_args.push_to_hub, training_args.hub_strategy):
                method = METHODS[method_args.method]
                summary = recipe_summary(model_args, data_args, method_args, training_args, method)
                push_experiment_start(output_dir, training_args, summary)
    seconds = _previous_seconds(output_dir)
    main = training_args.process_index == 0
    # Drawn in a terminal only (disable=None), as the epochs' bar: in a file its updates would split the log lines.
    hidden = not main or training_args.disable_tqdm
    bar = tqdm(folds, desc="folds", unit="fold", disable=True if hidden else None, dynamic_ncols=True)
    for fold in bar:
        directory = fold_dir(output_dir, fold)
        bar.set_postfix_str(f"fold {fold}")
        if (directory / FINISHED_NAME).is_file():
            if main:
                console_print(f"fold {fold}: finished earlier in {directory}, not trained again")
            continue
        fold_args, hub_path = fold_arguments(training_args, directory, location, pushed.get(fold))
        start = time.monotonic()
        metrics = run_training(
            copy.deepcopy(model_args), dataclasses.replace(data_args, test_fold=fold),
            copy.deepcopy(method_args), fold_args, hub_path_in_repo=hub_path,
        )  # fmt: skip
        seconds[str(fold)] = time.monotonic() - start
        if main:
            console_print(
                f"fold {fold}: accuracy {metrics['test_accuracy']:.4f}, macro-F1 {metrics['test_macro_f1']:.4f} "
                f"in {seconds[str(fold)] / 60:.1f} min"
            )
    return seconds


# ---- the Hub ------------------------------------------------------------------------------------------------------
def experiment_location(training_args: AdUniTrainingArguments) -> HubLocation | None:
    """`resume_from_checkpoint` as the experiment's repository (`hub:owner/name`), or None when it is not `hub:`."""
    text = str(training_args.resume_from_checkpoint or "")
    if not text.startswith(HUB_PREFIX):
        return None
    repo_id = text[len(HUB_PREFIX) :]
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise RunFolderError(
            f"resume_from_checkpoint={text!r}: a cross-validation resumes from its experiment's repository, "
            f"hub:<owner>/<name> (each fold from its fold_<k>/{LAST_CHECKPOINT} there)"
        )
    return HubLocation(repo_id, "")


def fold_arguments(
    training_args: AdUniTrainingArguments, directory: Path, location: HubLocation | None, pushed: str | None
) -> tuple[AdUniTrainingArguments, str]:
    """The arguments of the fold in `directory`, and its folder in the experiment's repository (`fold_<k>`: its
    card loads the model from there). With pushes while training, the fold pushes its saves into that folder; with
    `hub_strategy` `end`, the experiment is pushed once, at the end, with its summary card."""
    pushing = pushes_while_training(training_args.push_to_hub, training_args.hub_strategy)
    resume = training_args.resume_from_checkpoint
    if location is not None:  # the fold's pushed checkpoint, which the main process fetches; on the others any
        # `hub:` location resumes the newest checkpoint of the fold's folder, which is what the main one resumes
        main = training_args.process_index == 0
        resume = pushed if main else f"hub:{location.repo_id}/{directory.name}/{LAST_CHECKPOINT}"
    fold_args = dataclasses.replace(
        training_args, output_dir=str(directory), overwrite_output_dir=False, push_to_hub=pushing,
        hub_model_id=training_args.hub_model_id or (directory.parent.name if pushing else None),
        resume_from_checkpoint=resume,
    )  # fmt: skip
    return fold_args, directory.name


def push_experiment_start(output_dir: Path, training_args: AdUniTrainingArguments, summary: dict[str, Any]) -> None:
    """Before the first fold: our card and cv_recipe.json to the experiment's repository (created now, so that
    no network or token fails before anything trains)."""
    repo_id = training_args.hub_model_id or output_dir.name
    card = training_card(repo_id=repo_id, path_in_repo="", title=f"{repo_id} (cross-validation)", recipe=summary,
                         strategy=training_args.hub_strategy)  # fmt: skip
    write_atomic(output_dir / "README.md", card)
    write_remote_code(output_dir)  # the folds' cards load their model with `subfolder`: it must be at the top
    push_folder(
        output_dir, repo_id, token=training_args.hub_token, private=training_args.hub_private_repo,
        allow_patterns=("README.md", CV_RECIPE_NAME, *REMOTE_CODE_FILES), commit_message="Cross-validation started",
    )  # fmt: skip


def fetch_experiment(location: HubLocation, output_dir: Path, folds: list[int], token: str | None) -> dict[int, str]:
    """What the experiment's repository holds, brought into `output_dir` to resume it on another machine: its
    cv_recipe.json (unless there is one here, which is compared instead) and each fold of `folds` finished there
    and not here (its run folder without checkpoints). Returns, for each other fold with a pushed checkpoint, its
    `hub:` location (`run_training` downloads it, unless the fold's folder holds one as new)."""
    try:
        files = set(remote_files(location.repo_id, token))
    except Exception as err:  # no such repository, offline, no network, no token
        raise hub_failure(location, "list the experiment's repository", err) from err
    if CV_RECIPE_NAME in files and not (output_dir / CV_RECIPE_NAME).is_file():
        fetch_into(output_dir, location, [CV_RECIPE_NAME], (), token)
    checkpoints = {}
    for fold in folds:
        name = fold_dir(output_dir, fold).name
        if (output_dir / name / FINISHED_NAME).is_file():
            continue
        if f"{name}/{FINISHED_NAME}" in files:
            ignore = (f"{name}/{LAST_CHECKPOINT}/*", f"{name}/checkpoint-*", f"{name}/_*")
            fetch_into(output_dir, location, [f"{name}/*"], ignore, token)
            print(f"fold {fold}: finished on the Hub ({location}/{name}), downloaded into {output_dir / name}")
            continue
        pushed = {path.split("/")[1] for path in files if path.count("/") == 2
                  and path.startswith(f"{name}/") and path.endswith("/trainer_state.json")}  # fmt: skip
        numbered = sorted((checkpoint_step(f), f) for f in pushed if checkpoint_step(f) is not None)
        newest = LAST_CHECKPOINT if LAST_CHECKPOINT in pushed else (numbered[-1][1] if numbered else None)
        if newest is not None:
            checkpoints[fold] = f"hub:{location.repo_id}/{name}/{newest}"
    return checkpoints


def fetch_into(
    output_dir: Path, location: HubLocation, allow: list[str], ignore: tuple[str, ...], token: str | None
) -> None:
    """Download the experiment's files matching `allow` (less `ignore`) into `output_dir` through a staging folder,
    a fold's test_results.json (which marks it finished) last."""
    staging = output_dir / HUB_STAGING_NAME
    shutil.rmtree(staging, ignore_errors=True)
    try:
        files = download_files(location.repo_id, staging, token, allow, ignore)
    except Exception as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise hub_failure(location, f"download {', '.join(allow)} from the Hub", err) from err
    for path in sorted(files, key=lambda p: p.name == FINISHED_NAME):
        target = output_dir / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    shutil.rmtree(staging, ignore_errors=True)


def data_source_metrics(data_args: DataArguments) -> tuple[str, DatasetMetrics]:
    """(the registered source of the run's data: that of a prepared data set's metadata, else `dataset`; the
    metrics it reports, its headline first)."""
    if data_args.dataset_path is not None:
        metadata = prepared_metadata(data_args.dataset_path)
        where = f"dataset_path={data_args.dataset_path!r} (its metadata)"
    else:
        metadata, where = {"source": data_args.dataset}, f"dataset={data_args.dataset!r}"
    source = str(metadata.get("source") or data_args.dataset)
    try:
        return source, dataset_metrics({"source": source, **metadata}, where=where)
    except ValueError as error:  # a metric name this version does not know
        raise RecipeError(str(error)) from error


def write_cv_results(
    model_args: ModelArguments,
    data_args: DataArguments,
    method_args: MethodArguments,
    training_args: AdUniTrainingArguments,
    method: Method,
    folds: list[int],
    seconds: dict[str, float],
) -> dict[str, Any]:
    """cv_results.json, its markdown table and the summary card over every finished fold; returns the results."""
    output_dir, main = Path(training_args.output_dir), training_args.process_index == 0
    recipe = cv_recipe(model_args, data_args, method_args, training_args)
    config = json.loads((fold_dir(output_dir, folds[0]) / "config.json").read_text())
    class_names = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    source, reported = data_source_metrics(data_args)
    description = {
        "title": f"{method_args.method} (sampler {method_args.sampler}) on {data_args.dataset_path or data_args.dataset}",
        "method": method_args.method,
        "sampler": method_args.sampler,
        "dataset": data_args.dataset_path or data_args.dataset,
        "dataset_name": source,  # the registered name: isic2018, aptos2019, digits_lt, ...
        **reported.as_metadata(),  # headline_metric, dataset_metrics
        "num_folds": data_args.num_folds,
        "class_names": class_names,
        "selection": "the model after the last epoch"
        if not training_args.load_best_model_at_end
        else f"the checkpoint with the best validation {training_args.metric_for_best_model}",
        "selection_metric": training_args.selection_metric,
        "recipe": recipe,
        "paper": method.paper_row(source, method_args.sampler, method_args),  # Tables 1-2, or None
    }
    results = collect_results(output_dir, folds, seconds, description)
    if main:
        write_atomic(output_dir / CV_RESULTS_NAME, json.dumps(results, indent=2, default=str) + "\n")
        write_atomic(output_dir / CV_MARKDOWN_NAME, results_markdown(results))
        summary = recipe_summary(model_args, data_args, method_args, training_args, method)
        write_summary(output_dir, results, training_args, summary)
        mean, std = results["mean"], results["std"]
        shown = [name for name in reported.columns() if name in mean]
        print(
            f"{len(results['folds'])} folds: "
            + ", ".join(f"{metric_label(name)} {paper_format(mean[name], std[name])}" for name in shown)
            + f" ({output_dir / CV_MARKDOWN_NAME})"
        )
    return results
