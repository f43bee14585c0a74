"""Build a data set from its raw download and save it with `save_to_disk` (atomically), for training.

    python scripts/prepare_data.py --dataset isic2018 --data_dir RAW --output_dir data/isic2018 \
        [--num_folds 5] [--seed 42] [--image_size 384] [--skip_invalid] [--overwrite]

All logic is in `aduni_hf.data.prepare_dataset`; see its docstring for what the output folder holds.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from aduni_hf.data import DATASETS, DataValidationError, prepare_dataset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", required=True, choices=DATASETS.names())
    parser.add_argument("--data_dir", default=None, help="the raw download (not used by digits_lt)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--num_folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42, help="seed of the fold assignment")
    parser.add_argument("--image_size", type=int, default=None, help="store images pre-resized to (N, N)")
    parser.add_argument(
        "--skip_invalid", action="store_true", help="leave bad items out, listed in invalid_items.csv"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output_dir")
    parser.add_argument(
        "--num_workers", type=int, default=min(4, os.cpu_count() or 1), help="decoding processes"
    )
    group = parser.add_argument_group("dataset options (only for the data sets named)")
    group.add_argument("--csv_file", default=None, help="csv: the labels CSV (default: data_dir's only CSV)")
    group.add_argument("--path_column", default=None, help="csv: image path column (default: path)")
    group.add_argument("--label_column", default=None, help="csv: class-name column (default: label)")
    group.add_argument("--id_column", default=None, help="csv: image id column (default: the path)")
    group.add_argument(
        "--group_column", default=None, help="csv: group column, e.g. patient id (grouped folds)"
    )
    group.add_argument(
        "--class_names",
        default=None,
        help="csv, imagefolder: the classes, comma-separated (default: every distinct label or sub-folder; a label "
        "that looks like a misspelling of another is then refused); any other label is an invalid item",
    )
    group.add_argument("--lesion_groupings", default=None, help="isic2018: lesion groupings CSV elsewhere")
    group.add_argument("--medmnist_file", default=None, help="dermamnist/retinamnist: the .npz in data_dir")
    group.add_argument("--imbalance_ratio", type=float, default=None, help="digits_lt: max/min class count")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    option_names = [
        "csv_file",
        "path_column",
        "label_column",
        "id_column",
        "group_column",
        "class_names",
        "lesion_groupings",
        "medmnist_file",
        "imbalance_ratio",
    ]
    options = {name: getattr(args, name) for name in option_names if getattr(args, name) is not None}
    try:
        result = prepare_dataset(
            args.dataset,
            args.data_dir,
            args.output_dir,
            num_folds=args.num_folds,
            seed=args.seed,
            image_size=args.image_size,
            skip_invalid=args.skip_invalid,
            overwrite=args.overwrite,
            num_workers=args.num_workers,
            **options,
        )
    except (DataValidationError, FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    classes = ", ".join(f"{name} {count}" for name, count in zip(result.class_names, result.class_counts, strict=True))
    print(f"saved {result.num_images} images to {result.output_dir}; images per class: {classes}")
    if result.invalid_items:
        print(
            f"left out {len(result.invalid_items)} invalid item(s), listed in {result.output_dir}/invalid_items.csv:"
        )
        for item in result.invalid_items:
            print(f"  - {item['location']} [{item['image_id']}]: {item['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
