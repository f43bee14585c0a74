"""Benchmarks. `data`: data-loading throughput of the two-view training pipeline, with and without pre-resizing.

python scripts/benchmark.py data [--num_images 24] [--width 3000] [--height 2000] [--image_size 384]
    [--workers 0 2] [--output results.json]

`data` writes synthetic APTOS-sized PNGs in the official APTOS layout, prepares them twice with
`prepare_dataset` (as they are, and with `image_size`), and times one pass of a torch DataLoader over
`MultiViewDataset(split, build_augmentation("kaggle", image_size), num_views=2)` for each number of workers.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import numpy as np
from PIL import Image
from torch.utils.data import DataLoader

from aduni_hf.data import MultiViewDataset, build_augmentation, collate_views, prepare_dataset


@dataclass(frozen=True)
class ThroughputResult:
    """One measurement: stored image size, workers, images per second (each image gives two views)."""

    stored: str
    num_workers: int
    num_images: int
    seconds: float
    images_per_second: float
    prepare_seconds: float


def fundus_like(width: int, height: int, seed: int) -> Image.Image:
    """A bright disc on black with smooth shading and mild noise: sized and compressed like an APTOS PNG."""
    rng = np.random.default_rng(seed)
    y, x = np.ogrid[0:height, 0:width]
    radius = np.hypot((x - width / 2) / (width / 2), (y - height / 2) / (height / 2))
    shade = np.clip(1.0 - radius, 0.0, 1.0)[..., None] * np.array([200.0, 90.0, 40.0])
    pixels = shade + rng.normal(0.0, 3.0, size=(height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")


def write_synthetic_aptos(root: Path, num_images: int, width: int, height: int, seed: int = 0) -> Path:
    """`root/train.csv` and `root/train_images/<id_code>.png`, classes cycling through 0..4."""
    (root / "train_images").mkdir(parents=True, exist_ok=True)
    with open(root / "train.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id_code", "diagnosis"])
        for index in range(num_images):
            image_id = f"synthetic{index:04d}"
            fundus_like(width, height, seed + index).save(root / "train_images" / f"{image_id}.png")
            writer.writerow([image_id, index % 5])
    return root


def loader_throughput(
    split: datasets.Dataset, image_size: int, num_workers: int, batch_size: int = 4
) -> float:
    """Seconds for one pass over `split` (two augmented views per image), worker start-up included."""
    views = MultiViewDataset(split, build_augmentation("kaggle", image_size), num_views=2)
    loader = DataLoader(views, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_views)
    start = time.perf_counter()
    for batch in loader:
        assert batch["pixel_values"].shape[1:] == (2, 3, image_size, image_size)
    return time.perf_counter() - start


def benchmark_data(
    work_dir: str | Path,
    num_images: int = 24,
    width: int = 3000,
    height: int = 2000,
    image_size: int = 384,
    worker_counts: Sequence[int] = (0, 2),
) -> list[ThroughputResult]:
    """Throughput with full-size and with pre-resized stored images, for each number of workers."""
    work_dir = Path(work_dir)
    raw = write_synthetic_aptos(work_dir / "raw", num_images, width, height)
    results = []
    for stored, size in (
        (f"{width}x{height} (original)", None),
        (f"{image_size}x{image_size} (pre-resized)", image_size),
    ):
        output = work_dir / ("resized" if size else "original")
        start = time.perf_counter()
        prepare_dataset("aptos2019", str(raw), output, num_folds=2, image_size=size, overwrite=True)
        prepare_seconds = time.perf_counter() - start
        split = datasets.load_from_disk(str(output))
        for workers in worker_counts:
            seconds = loader_throughput(split, image_size, workers)
            results.append(
                ThroughputResult(stored, workers, len(split), seconds, len(split) / seconds, prepare_seconds)
            )
    return results


def run_data(args: argparse.Namespace) -> None:
    """The `data` sub-command: run `benchmark_data` in a temporary folder and print (and save) the results."""
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


def main(argv: list[str] | None = None) -> None:
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
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
