"""Predict the class of image files with a trained AdUni model and write a CSV.

python scripts/predict.py --model DIR_OR_HUB_ID --images PATH [PATH ...] --output predictions.csv

PATH is an image file or a folder (searched recursively for image files). One CSV row per file: the predicted
class, its probability and every class's probability; an unreadable file gets its error in the `error` column and
is reported, and the others go on. Runs on the GPU when there is one (--device to choose).

A model whose weights or outputs are not finite (a diverged training) is refused, and nothing is written. A file
name that is not UTF-8 is written with its own bytes (read the CSV with errors="surrogateescape") and printed with
\\x escapes.
"""

import argparse
import sys

from aduni_hf.inference import NonFiniteModelError, predict_to_csv, printable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a saved model folder or a Hub model id")
    parser.add_argument("--images", required=True, nargs="+", help="image files and folders")
    parser.add_argument("--output", required=True, help="the CSV file to write")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    args = parser.parse_args()
    if args.batch_size < 1:
        parser.error("--batch_size must be >= 1")
    try:
        predictions = predict_to_csv(args.model, args.images, args.output, args.batch_size, args.device)
    except (FileNotFoundError, OSError, NonFiniteModelError) as err:
        sys.exit(f"error: {err}")
    failed = [p for p in predictions if p.error]
    for item in failed:
        print(f"unreadable: {printable(item.path)}: {item.error}", file=sys.stderr)
    print(
        f"{len(predictions) - len(failed)} images predicted, {len(failed)} unreadable -> {printable(args.output)}"
    )


if __name__ == "__main__":
    main()
