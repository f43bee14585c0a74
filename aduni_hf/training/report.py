"""Experiment-level outputs of cross-validations: figures across methods and the summary model card.

- `experiment_figures`: the paper's Fig. 5 (per-class F1 of every run, mean ± std over folds), Fig. 2 (per-class
  training loss of fold 0 for each run that logged it), Fig. 4 (t-SNE of fold 0's test features, one per run) and
  fold 0's confusion matrices, written as PNG files.
- `cv_model_card`: the README.md of a cross-validation folder, with a model-index of the cross-validation means,
  ours beside the paper's numbers, every reported model (the test-fold selection labelled), the figures, the recipe
  and the intended use and limitations.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..data import SingleViewDataset, eval_transform, split_by_fold
from ..evaluation.cross_validation import REPORTED_MODELS, paper_format
from ..evaluation.figures import class_loss_figure, confusion_matrix_figure, per_class_f1_figure, tsne_figure
from ..evaluation.paper_results import paper_row
from ..hub.model_card import DATASET_BIASES, METHOD_DESCRIPTIONS, UNKNOWN_BIAS
from ..modeling_aduni import AdUniForImageClassification
from .arguments import DataArguments
from .cross_validate import CV_RESULTS_NAME, fold_dir
from .run import load_data
from .stages import pooled_features


def _label(results: dict[str, Any]) -> str:
    sampler = results.get("sampler", "none")
    return results["method"] + ("" if sampler == "none" else f" + {sampler}")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def fold_test_outputs(directory: Path) -> dict[str, Any]:
    """A finished run's test fold through its final model: pooled features, labels, predictions, class names.
    The data are rebuilt from the run's run_config.yaml (the same data set, fold and image size)."""
    config = yaml.safe_load((directory / "run_config.yaml").read_text())
    data_fields = {
        k: v for k, v in config["DataArguments"].items() if k in DataArguments.__dataclass_fields__
    }
    data_args = DataArguments(**data_fields)
    image_size = int(config["ModelArguments"]["image_size"])
    dataset = load_data(data_args)
    splits = split_by_fold(dataset, data_args.test_fold, data_args.val_fraction, seed=data_args.fold_seed)
    test = SingleViewDataset(splits.test, eval_transform(image_size))
    model = AdUniForImageClassification.from_pretrained(directory).eval()
    features, labels = pooled_features(model, test, batch_size=128, device=torch.device("cpu"))
    with torch.no_grad():
        logits = model.classifier(features)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    return {"features": features.numpy(), "labels": labels.numpy(), "predictions": logits.argmax(1).numpy(),
            "class_names": names}  # fmt: skip


def experiment_figures(
    run_dirs: Sequence[str | Path], output: str | Path, fold: int = 0, detailed: Sequence[str] | None = None
) -> list[Path]:
    """Write the cross-run figures of the cross-validation folders `run_dirs` into `output`; returns the files.
    The per-run figures (loss, t-SNE, confusion) are drawn for the runs labelled in `detailed` (default: all)."""
    output = Path(output)
    runs = {}
    for directory in map(Path, run_dirs):
        results = json.loads((directory / CV_RESULTS_NAME).read_text())
        runs[_label(results)] = (directory, results)
    class_names = next(iter(runs.values()))[1]["class_names"]
    written = [
        per_class_f1_figure(
            {label: results for label, (_, results) in runs.items()},
            class_names,
            output / "per_class_f1.png",
            title="Per-class F1 on the test folds (mean ± std over folds; the paper's Fig. 5)",
        )
    ]
    for label, (directory, _) in runs.items():
        if detailed is not None and label not in detailed:
            continue
        run = fold_dir(directory, fold)
        if not (run / "test_results.json").is_file():
            continue
        history = json.loads((run / "trainer_state.json").read_text())["log_history"]
        config = yaml.safe_load((run / "run_config.yaml").read_text())
        counts = config["data"]["train_class_counts"]
        if any(key.startswith("class_loss_") for entry in history for key in entry):
            written.append(
                class_loss_figure(history, class_names, counts, output / f"class_loss_{_slug(label)}.png",
                                  title=f"Per-class training loss, {label}, fold {fold} (the paper's Fig. 2)")
            )  # fmt: skip
        outputs = fold_test_outputs(run)
        written.append(
            tsne_figure(outputs["features"], outputs["labels"], class_names, output / f"tsne_{_slug(label)}.png",
                        title=f"t-SNE of test-fold {fold} features, {label} (the paper's Fig. 4)")
        )  # fmt: skip
        written.append(
            confusion_matrix_figure(outputs["labels"], outputs["predictions"], class_names,
                                    output / f"confusion_{_slug(label)}.png",
                                    title=f"Confusion matrix, {label}, test fold {fold}")
        )  # fmt: skip
    return written


def cv_model_card(
    results: dict[str, Any], figures: Sequence[tuple[str, str]] = (), model_id: str = ""
) -> ModelCard:
    """The summary card of one cross-validation (`cv_results.json` content), YAML metadata included."""
    dataset_key = str(results.get("dataset_name") or results.get("dataset", ""))
    mean, std = results["mean"], results["std"]
    folds = sorted(results["folds"], key=int)
    split = f"{len(folds)}-fold cross-validation (folds {', '.join(folds)}), mean of the test folds"
    card_data = ModelCardData(
        model_name=model_id or f"aduni_hf {results['method']} cross-validation",
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=[
            "aduni",
            "imbalanced-classification",
            "contrastive-learning",
            "medical-imaging",
            "cross-validation",
        ],
        metrics=["accuracy", "f1"],
        eval_results=[
            EvalResult(
                task_type="image-classification",
                task_name="Image Classification",
                dataset_type=dataset_key,
                dataset_name=str(results.get("dataset")),
                dataset_split=split,
                metric_type=metric_type,
                metric_name=name,
                metric_value=round(float(mean[key]), 4),
                **({"metric_args": {"average": "macro"}} if metric_type == "f1" else {}),
            )  # fmt: skip
            for key, metric_type, name in (
                ("accuracy", "accuracy", "Accuracy (CV mean)"),
                ("macro_f1", "f1", "Macro-F1 (CV mean)"),
            )  # fmt: skip
        ],
    )
    lines = [
        "---", card_data.to_yaml(), "---", "",
        f"# {results['title']}: {len(folds)}-fold cross-validation",
        "",
        f"Trained with aduni_hf, a reimplementation on the Hugging Face stack of AdUni (Cong et al., MLMI 2022). "
        f"Method `{results['method']}`: {METHOD_DESCRIPTIONS.get(results['method'], '')} "
        f"Sampler `{results.get('sampler', 'none')}`. Each fold's model is in `fold_<k>/`.",
        "",
        "## Results (test folds: mean ± standard deviation over folds)",
        "",
        "| model | accuracy | macro-F1 | balanced accuracy |",
        "|---|---|---|---|",
    ]  # fmt: skip
    for key in REPORTED_MODELS:
        part = results if key == "last_epoch" else results.get(key)
        if part is None:
            continue
        text = results["selection"] if key == "last_epoch" else part["selection"]
        m, s = part["mean"], part["std"]
        lines.append(f"| {text} | {paper_format(m['accuracy'], s['accuracy'])} | "
                     f"{paper_format(m['macro_f1'], s['macro_f1'])} | "
                     f"{paper_format(m['balanced_accuracy'], s['balanced_accuracy'])} |")  # fmt: skip
    paper = paper_row(dataset_key, results["method"], results.get("sampler", "none"), results.get("recipe"))
    if paper:
        lines.append(f"| paper (Cong et al. 2022, Tables 1-2) | {paper_format(*paper['accuracy'])} | "
                     f"{paper_format(*paper['macro_f1'])} | – |")  # fmt: skip
    if "official_test_selection" in results:
        lines += ["", "The row chosen on the test fold follows the released code's model selection, which reads the "
                  "test fold every epoch; it overstates performance and is shown only beside the paper's numbers."]  # fmt: skip
    lines += ["", "Per-class F1 (final model):", "", "| class | F1 |", "|---|---|"]
    lines += [
        f"| {name} | {paper_format(mean['f1'][name], std['f1'][name])} |" for name in results["class_names"]
    ]
    if figures:
        lines += ["", "## Figures", ""]
        for caption, path in figures:
            lines += [f"![{caption}]({path})", ""]
    lines += ["", "## Training recipe (every fold)", "", "| field | value |", "|---|---|"]
    lines += [
        f"| {name} | {value} |" for name, value in results.get("recipe", {}).items() if value is not None
    ]
    lines += [
        "",
        "## Intended use and limitations",
        "",
        "- **Research use only.** Not a medical device; no regulatory clearance; not for diagnosis or treatment.",
        "- Fold-to-fold spread is given beside every mean: differences smaller than it are not resolved by the folds.",
        f"- The data set's biases carry over: {DATASET_BIASES.get(dataset_key, UNKNOWN_BIAS)}",
    ]
    return ModelCard("\n".join(lines) + "\n")
