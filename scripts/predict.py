"""Predict the class of image files with a trained AdUni model and write a CSV.

python scripts/predict.py --model DIR_OR_HUB_ID --images PATH [PATH ...] --output predictions.csv

PATH is an image file or a folder (searched recursively for image files). One CSV row per file: the predicted
class, its probability and every class's probability; an unreadable file gets its error in the `error` column and
is reported, and the others go on. Runs on the GPU when there is one (--device to choose).

A model whose weights or outputs are not finite (a diverged training) is refused, and nothing is written. A file
name that is not UTF-8 is written with its own bytes (read the CSV with errors="surrogateescape") and printed with
\\x escapes.

Where the true classes are known, --labels LABELS.csv (columns image, label: a path, file name or file name without
suffix, and a class name) or --labels_from_folders (each image's folder is its class) prints a summary with every
metric of a training run's test results (accuracy, macro-F1, balanced accuracy, quadratic weighted kappa, ROC-AUC,
per-class F1); --summary_output FILE.json also writes it. An image without a label is refused before predicting.
"""

import argparse
import json
import sys

from aduni_hf.inference import NonFiniteModelError, format_summary, predict_and_summarise, printable
from aduni_hf.utils import write_atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a saved model folder or a Hub model id")
    parser.add_argument("--images", required=True, nargs="+", help="image files and folders")
    parser.add_argument("--output", required=True, help="the CSV file to write")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    parser.add_argument("--labels", default=None, help="a CSV with columns image,label: the true classes")
    parser.add_argument(
        "--labels_from_folders", action="store_true", help="the true class of each image is its folder's name"
    )
    parser.add_argument("--summary_output", default=None, help="with labels: also write the summary as JSON")
    args = parser.parse_args()
    if args.batch_size < 1:
        parser.error("--batch_size must be >= 1")
    if args.summary_output and not (args.labels or args.labels_from_folders):
        parser.error("--summary_output needs the true classes: --labels or --labels_from_folders")
    try:
        predictions, summary = predict_and_summarise(
            args.model, args.images, args.output, args.batch_size, args.device,
            labels_csv=args.labels, labels_from_folders=args.labels_from_folders,
        )  # fmt: skip
    except (FileNotFoundError, OSError, ValueError, NonFiniteModelError) as err:
        sys.exit(f"error: {err}")
    failed = [p for p in predictions if p.error]
    for item in failed:
        print(f"unreadable: {printable(item.path)}: {item.error}", file=sys.stderr)
    print(
        f"{len(predictions) - len(failed)} images predicted, {len(failed)} unreadable -> {printable(args.output)}"
    )
    if summary is not None:
        print(format_summary(summary))
        if args.summary_output:
            write_atomic(args.summary_output, json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
