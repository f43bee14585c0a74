"""Figures across cross-validations (`experiment_figures`, scripts/figures.py): the paper's Fig. 5 (per-class F1 of
every run, mean ± std over folds), Fig. 2 (per-class training loss of fold 0 for each run that logged it), Fig. 4
(t-SNE of fold 0's test features, one per run) and fold 0's confusion matrices, written as PNG files."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from ..data import SingleViewDataset, eval_transform, split_by_fold
from ..evaluation.cv_summary import CV_RESULTS_NAME, fold_dir
from ..evaluation.features import pooled_features
from ..evaluation.figures import class_loss_figure, confusion_matrix_figure, per_class_f1_figure, tsne_figure
from ..modeling_aduni import AdUniForImageClassification
from .arguments import DataArguments
from .run_data import load_data


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
    processor = json.loads((directory / "preprocessor_config.json").read_text())  # the run's normalisation
    test = SingleViewDataset(
        splits.test, eval_transform(image_size, mean=processor["image_mean"], std=processor["image_std"])
    )
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
