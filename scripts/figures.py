"""The paper's figures across cross-validations: per-class F1 of every run (Fig. 5), and for one fold of each run
its per-class training loss (Fig. 2), a t-SNE of its test features (Fig. 4) and its confusion matrix.

python scripts/figures.py RUN_DIR [RUN_DIR ...] --output DIR [--fold 0]

Each RUN_DIR is a scripts/cross_validate.py output_dir. The test features are recomputed from each fold's saved
model and its run_config.yaml (the same data set, fold and image size).
"""

import argparse
import sys

from aduni_hf.recipes.experiment_figures import experiment_figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="cross-validation output folders (with cv_results.json)")
    parser.add_argument("--output", required=True, help="folder for the PNG files")
    parser.add_argument("--fold", type=int, default=0, help="the fold whose models the per-run figures use")
    parser.add_argument(
        "--detail",
        nargs="+",
        help="draw the per-run figures only for these runs (labels such as 'aduni', 'ce', "
        "'aduni + upsample'); default: every run",
    )
    args = parser.parse_args()
    try:
        written = experiment_figures(args.runs, args.output, fold=args.fold, detailed=args.detail)
    except FileNotFoundError as err:
        sys.exit(f"error: {err}")
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
