"""Compare cross-validation runs in the paper's Table 1 / Table 2 format, with paired tests against aduni.

python scripts/compare.py RUN_DIR [RUN_DIR ...] [--output DIR]

Each RUN_DIR is a scripts/cross_validate.py output_dir (it holds cv_results.json). Prints the markdown table;
with --output, also writes DIR/comparison.md and DIR/comparison.csv.
"""

import argparse
import sys
from pathlib import Path

from aduni_hf.evaluation.compare import (
    comparison_csv,
    comparison_markdown,
    comparison_rows,
    load_run,
    reported_model,
)
from aduni_hf.evaluation.cv_summary import REPORTED_MODELS
from aduni_hf.utils import write_atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="cross-validation output folders (with cv_results.json)")
    parser.add_argument("--output", help="folder for comparison.md and comparison.csv")
    parser.add_argument(
        "--model",
        default="last_epoch",
        choices=list(REPORTED_MODELS),
        help="which reported model to compare: last_epoch (default), best_validation (chosen on the inner "
        "validation split) or official_test_selection (chosen on the test fold: optimistic, labelled)",
    )
    args = parser.parse_args()
    try:
        runs = [reported_model(load_run(path), args.model) for path in args.runs]
    except (FileNotFoundError, KeyError) as err:
        sys.exit(f"error: {err}")
    rows = comparison_rows(runs)
    markdown = comparison_markdown(rows)
    print(markdown, end="")
    if args.output:
        output = Path(args.output)
        output.mkdir(parents=True, exist_ok=True)
        write_atomic(output / "comparison.md", markdown)
        write_atomic(output / "comparison.csv", comparison_csv(rows))


if __name__ == "__main__":
    main()
