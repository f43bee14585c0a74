"""Benchmarks. `data`: data-loading throughput of the two-view training pipeline, with and without pre-resizing.

python scripts/benchmark.py data [--num_images 24] [--width 3000] [--height 2000] [--image_size 384]
    [--workers 0 2] [--output results.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict

from aduni_hf.data.benchmark import benchmark_data


def run_data(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="aduni-benchmark-") as work_dir:
        results = benchmark_data(
            work_dir, args.num_images, args.width, args.height, args.image_size, args.workers
        )
    print(f"{'stored images':32} {'workers':>7} {'images/s':>9} {'seconds':>8} {'prepare s':>9}")
    for r in results:
        print(
            f"{r.stored:32} {r.num_workers:>7} {r.images_per_second:>9.1f} {r.seconds:>8.2f} {r.prepare_seconds:>9.2f}"
        )
    if args.output:
        with open(args.output, "w") as handle:
            json.dump([asdict(r) for r in results], handle, indent=2)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="data-loading throughput (images/s, two views per image)")
    data.add_argument("--num_images", type=int, default=24)
    data.add_argument("--width", type=int, default=3000)
    data.add_argument("--height", type=int, default=2000)
    data.add_argument("--image_size", type=int, default=384)
    data.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    data.add_argument("--output", default=None, help="also write the results as JSON")
    data.set_defaults(run=run_data)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
