"""Batch inference over image files and folders (`scripts/predict.py`).

Images are read one by one with PIL (any format PIL opens, converted to RGB), batched through the model's own
image processor and model, and written as one CSV row per input file: the predicted class, its probability and
every class's probability. A file that cannot be read as an image gets a row with the reason in `error`, is
reported, and the rest go on.

- A model whose weights or buffers are not finite (a training that diverged: a BatchNorm running variance of inf
  zeroes every feature and still gives finite, meaningless logits), or whose logits are not finite, is refused with
  `NonFiniteModelError` before anything is written.
- Paths are written as the OS gives them (`utils.write_atomic`): a file name that is not UTF-8 keeps its own bytes
  in the CSV; open it with `errors="surrogateescape"` to read those paths back exactly.
- Where the true classes are known (a labels CSV, or the class sub-folders of an image-folder layout), a summary
  gives every metric of a training run's test_results.json (aduni_hf/evaluation/metrics.py) over the readable
  images, from the same probabilities as the CSV. Every image must then have a label: one without is refused,
  named, before the model runs.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from .image_utils import as_rgb

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
NON_FINITE_ADVICE = (
    "its predictions would be meaningless. Predict with an earlier checkpoint whose weights are finite, or train "
    "again (e.g. with a lower learning rate); nothing was written"
)


class NonFiniteModelError(ValueError):
    """The model's weights, buffers or logits hold NaN or inf: refused rather than written as predictions (NaN
    probabilities, every argmax class 0)."""


def printable(path: str | Path) -> str:
    """`path` in a form any console and message can show: the bytes of a file name that is not UTF-8 as `\\xff`
    escapes (the path itself is kept as it is wherever it is used as a path)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def non_finite_tensors(model: torch.nn.Module) -> list[str]:
    """'name (k of n values)' for each floating-point parameter or buffer holding NaN or inf."""
    found = []
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                found.append(f"{name} ({bad} of {tensor.numel()} values)")
    return found


def check_finite_weights(model: torch.nn.Module, source: str) -> None:
    """Raise `NonFiniteModelError` naming `source` and every non-finite parameter or buffer of `model`."""
    found = non_finite_tensors(model)
    if found:
        shown = "; ".join(found[:5]) + (f"; and {len(found) - 5} more tensors" if len(found) > 5 else "")
        raise NonFiniteModelError(
            f"{printable(source)}: the model's weights are not finite (NaN or inf in {shown}): {NON_FINITE_ADVICE}."
        )


def check_finite_logits(logits: torch.Tensor, paths: Sequence[Path], source: str) -> None:
    """Raise `NonFiniteModelError` naming `source` and the images whose logits hold NaN or inf (finite weights
    that are too large overflow)."""
    finite = torch.isfinite(logits).all(dim=1).tolist()
    bad = [printable(path) for path, ok in zip(paths, finite, strict=True) if not ok]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise NonFiniteModelError(
            f"{printable(source)}: the logits are not finite (NaN or inf) for {shown}, although the weights are: "
            f"they are too large; {NON_FINITE_ADVICE}."
        )


def image_paths(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, and the image files under each folder (recursively, sorted). A path that does not exist
    raises FileNotFoundError naming it."""
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths += sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            paths.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return paths


def read_image(path: Path) -> Image.Image:
    """The image at `path` as RGB, fully decoded (so a truncated file fails here, not later)."""
    with Image.open(path) as image:
        image.load()
        return as_rgb(image)


@dataclass
class Prediction:
    path: Path
    probabilities: list[float] | None = None
    error: str | None = None
    label: int | None = None  # the true class index, where the labels are known


def predict_images(
    model, processor, paths: Iterable[Path], batch_size: int = 32, device: str | torch.device = "cpu"
) -> Iterator[Prediction]:
    """Yield one `Prediction` per path, in order: class probabilities (softmax of the logits) or the read error.
    Raises `NonFiniteModelError` on a batch whose logits are not finite."""
    model.eval()
    batch: list[tuple[Path, Image.Image]] = []

    def run(items: list[tuple[Path, Image.Image]]) -> list[Prediction]:
        pixel_values = processor(images=[image for _, image in items], return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            logits = model(pixel_values=pixel_values.to(device)).logits
        check_finite_logits(
            logits, [path for path, _ in items], getattr(model, "name_or_path", "") or "the model"
        )
        probabilities = torch.softmax(logits.float(), dim=1).cpu().tolist()
        return [Prediction(path, p) for (path, _), p in zip(items, probabilities, strict=True)]

    for path in paths:
        try:
            batch.append((path, read_image(path)))
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
            yield from run(batch) if batch else []
            batch = []
            yield Prediction(path, error=f"{type(err).__name__}: {err}")
            continue
        if len(batch) == batch_size:
            yield from run(batch)
            batch = []
    if batch:
        yield from run(batch)


def predictions_csv(predictions: Sequence[Prediction], class_names: Sequence[str]) -> str:
    """CSV text: path, predicted_class, probability, one `p_<class>` column per class, error."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["path", "predicted_class", "probability", *(f"p_{name}" for name in class_names), "error"]
    )
    for item in predictions:
        if item.probabilities is None:
            writer.writerow([str(item.path), "", "", *([""] * len(class_names)), item.error])
            continue
        best = max(range(len(class_names)), key=lambda c: item.probabilities[c])
        writer.writerow(
            [str(item.path), class_names[best], f"{item.probabilities[best]:.6f}",
             *(f"{p:.6f}" for p in item.probabilities), ""]
        )  # fmt: skip
    return buffer.getvalue()


def load_classifier(model: str, device: str | torch.device):
    """The model and image processor of a saved folder or Hub id (`import aduni_hf` registered the classes, so no
    remote code runs). Returns (model on `device`, processor, class names in label order). Raises
    `NonFiniteModelError` when a weight or buffer is not finite."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    import aduni_hf  # noqa: F401  (registers AdUni with the Auto classes)

    classifier = AutoModelForImageClassification.from_pretrained(model)
    check_finite_weights(classifier, model)
    classifier = classifier.to(device)
    processor = AutoImageProcessor.from_pretrained(model)
    names = [classifier.config.id2label[i] for i in range(classifier.config.num_labels)]
    return classifier, processor, names


LABEL_COLUMNS = ("image", "label")


def read_labels(path: str | Path, class_names: Sequence[str]) -> dict[str, int]:
    """{image: class index} from a CSV with columns `image` (a path as given to predict, a file name, or a file
    name without its suffix) and `label` (a class name of the model). A missing column, an empty image, an unknown
    class or an image given two classes raises ValueError naming the file and line."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            return _label_rows(csv.DictReader(file), path, class_names)
    except UnicodeDecodeError as error:
        raise ValueError(f"{printable(path)}: the labels CSV is not UTF-8 text ({error})") from error


def _label_rows(reader: csv.DictReader, path: str | Path, class_names: Sequence[str]) -> dict[str, int]:
    """`read_labels` over the rows of an open CSV."""
    missing = [name for name in LABEL_COLUMNS if name not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(
            f"{printable(path)}: the labels CSV lacks column(s) {missing} (found {reader.fieldnames}); it needs "
            "`image` (a path, file name or file name without suffix) and `label` (a class name)"
        )
    labels: dict[str, tuple[int, int]] = {}
    for row in reader:
        line = reader.line_num
        image, label = (row["image"] or "").strip(), (row["label"] or "").strip()
        if not image:
            raise ValueError(f"{printable(path)} line {line}: empty image")
        if label not in class_names:
            raise ValueError(
                f"{printable(path)} line {line}: label {label!r} is not a class of the model; its classes are "
                f"{list(class_names)}"
            )
        index = list(class_names).index(label)
        if image in labels and labels[image][0] != index:
            raise ValueError(
                f"{printable(path)} line {line}: {image!r} is {label!r} here and "
                f"{class_names[labels[image][0]]!r} on line {labels[image][1]}"
            )
        labels.setdefault(image, (index, line))
    return {image: index for image, (index, _) in labels.items()}


def image_labels(
    paths: Sequence[Path], class_names: Sequence[str], labels_csv: str | Path | None, from_folders: bool
) -> list[int] | None:
    """The true class index of every path (None when no labels are given): from `labels_csv` (`read_labels`,
    matched on the path, then the file name, then the name without suffix) or, with `from_folders`, the name of
    each image's folder. An image without a label raises ValueError naming it, before anything is predicted."""
    if labels_csv is None and not from_folders:
        return None
    if labels_csv is not None and from_folders:
        raise ValueError("give the labels either as a CSV or by the images' folders, not both")
    if from_folders:
        names = list(class_names)
        table = {str(path): names.index(path.parent.name) for path in paths if path.parent.name in names}
    else:
        table = read_labels(labels_csv, class_names)
    found = [next((table[key] for key in (str(p), p.name, p.stem) if key in table), None) for p in paths]
    unlabelled = [printable(path) for path, label in zip(paths, found, strict=True) if label is None]
    if unlabelled:
        where = (
            f"in {printable(labels_csv)}"
            if labels_csv is not None
            else f"(a folder named after one of the classes {list(class_names)})"
        )
        shown = ", ".join(unlabelled[:5]) + (f" and {len(unlabelled) - 5} more" if len(unlabelled) > 5 else "")
        raise ValueError(
            f"{len(unlabelled)} of {len(paths)} images have no label {where}: {shown}. Give each image a label, or "
            "leave those images out of --images"
        )
    return found


def labelled_summary(predictions: Sequence[Prediction], class_names: Sequence[str]) -> dict:
    """Every metric of a run's test results (accuracy, macro-F1, balanced accuracy, quadratic weighted kappa,
    ROC-AUC, per-class F1) over the readable labelled images, from their probabilities; with the counts."""
    import numpy as np

    from .evaluation.metrics import classification_metrics

    read = [item for item in predictions if item.probabilities is not None and item.label is not None]
    counts = {"num_images": len(read), "num_unreadable": sum(item.probabilities is None for item in predictions)}
    if not read:  # every image unreadable: the counts say so, and there is nothing to measure
        return {**counts, "class_names": list(class_names)}
    probabilities = np.asarray([item.probabilities for item in read], dtype=np.float64)
    metrics = classification_metrics(
        probabilities.argmax(axis=1), [item.label for item in read], class_names, probabilities=probabilities
    )
    return {**counts, "class_names": list(class_names), **metrics}


def format_summary(summary: dict) -> str:
    """The summary as the console table of a training run (`format_results_table`), under a line of counts."""
    from .evaluation.tables import format_results_table

    head = f"labelled images: {summary['num_images']}"
    if summary["num_unreadable"]:
        head += f" ({summary['num_unreadable']} unreadable, left out)"
    values = {f"labelled_{key}": value for key, value in summary.items() if isinstance(value, float)}
    return head + "\n" + format_results_table(values, summary["class_names"], prefix="labelled")


def predict_to_csv(
    model: str,
    inputs: Sequence[str | Path],
    output: str | Path,
    batch_size: int = 32,
    device: str | None = None,
    progress: bool = True,
) -> list[Prediction]:
    """Predict every image of `inputs` with `model` and write the CSV atomically to `output`."""
    return predict_and_summarise(model, inputs, output, batch_size, device, progress)[0]


def predict_and_summarise(
    model: str,
    inputs: Sequence[str | Path],
    output: str | Path,
    batch_size: int = 32,
    device: str | None = None,
    progress: bool = True,
    labels_csv: str | Path | None = None,
    labels_from_folders: bool = False,
) -> tuple[list[Prediction], dict | None]:
    """`predict_to_csv`, and where the labels are known (`image_labels`: checked before the model runs) each
    prediction's true class and the `labelled_summary` of them; else the summary is None."""
    from .utils import write_atomic

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    paths = image_paths(inputs)
    if not paths:
        raise FileNotFoundError(f"no image files in {', '.join(map(str, inputs))}")
    classifier, processor, names = load_classifier(model, device)
    labels = image_labels(paths, names, labels_csv, labels_from_folders)
    predictions = list(
        tqdm(
            predict_images(classifier, processor, paths, batch_size=batch_size, device=device),
            total=len(paths), unit="image", desc="predicting", disable=not progress,
        )
    )  # fmt: skip
    write_atomic(output, predictions_csv(predictions, names))
    if labels is None:
        return predictions, None
    for item, label in zip(predictions, labels, strict=True):
        item.label = label
    return predictions, labelled_summary(predictions, names)
