"""Benchmarks. `data`: data-loading throughput of the two-view training pipeline, with and without pre-resizing.
`train`: training images/s at a given size with AduC and two views: a plain loop in the style of the official
code (NCHW, fp32) against the same loop with our switches and against `AdUniTrainer`, the share of the machine's
measured matmul peak that the step reaches, and the peak memory of aduni, paco and contrast_chunk_size.

python scripts/benchmark.py train [--image_size 384] [--batch_size 16] [--steps 4] [--warmup 2]
    [--chunk_sizes 8] [--output results.json]

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
import torch
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


# ---- training throughput ------------------------------------------------------------------------------------
class SyntheticViews(torch.utils.data.Dataset):
    """Fixed random two-view items: the training step alone, without decoding or augmentation."""

    def __init__(self, num_items: int, image_size: int, num_classes: int = 7, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.pixels = torch.randn(num_items, 2, 3, image_size, image_size, generator=generator)
        self.labels = [int(i % num_classes) for i in range(num_items)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        index = index.index if hasattr(index, "index") else int(index)
        return {"pixel_values": self.pixels[index], "labels": self.labels[index]}


def _model(image_size: int, num_classes: int = 7):
    from aduni_hf import AdUniConfig, AdUniForImageClassification

    torch.manual_seed(0)
    return AdUniForImageClassification(AdUniConfig(num_labels=num_classes, image_size=image_size))


def plain_loop_seconds(
    image_size: int, batch_size: int, steps: int, warmup: int, channels_last: bool = False
) -> tuple[float, float]:
    """Seconds per step of a hand-written loop in the official style (SGD, AduC on the view-major batch, fp32;
    NCHW unless `channels_last`), and the FLOPs of one step (forward and backward, torch's flop counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    from aduni_hf.losses import AduCLoss

    model = _model(image_size).train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    loss_fn = AduCLoss(7, class_counts=[3, 3, 2, 2, 2, 2, 2])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    data = SyntheticViews(batch_size, image_size)
    views = data.pixels.transpose(0, 1).reshape(2 * batch_size, 3, image_size, image_size)
    views = views.contiguous(memory_format=memory_format)
    labels = torch.tensor(data.labels)

    def step() -> None:
        outputs = model(pixel_values=views)
        loss = loss_fn(outputs.features, outputs.logits, labels, alpha=0.5)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps, float(counter.get_total_flops())


def trainer_seconds(
    image_size: int, batch_size: int, steps: int, warmup: int, method: str = "aduni", **switches
) -> float:
    """Seconds per optimiser step of `AdUniTrainer` on the same synthetic batch (its own timing of the steps
    after `warmup`), with the recipe `switches` (channels_last, contrast_chunk_size, ...)."""
    from transformers import TrainerCallback

    from aduni_hf.losses import AduCLoss, build_loss
    from aduni_hf.training import AdUniTrainer, AdUniTrainingArguments
    from aduni_hf.training.callbacks import EpochProgressCallback

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

    timer = StepTimes()
    with tempfile.TemporaryDirectory(prefix="aduni-benchmark-") as output_dir:
        args = AdUniTrainingArguments(
            output_dir=output_dir, per_device_train_batch_size=batch_size, max_steps=warmup + steps,
            warmup_epochs=0, logging_strategy="no", eval_strategy="no", save_strategy="no", report_to=[],
            disable_tqdm=True, figures=False, **switches,
        )  # fmt: skip
        model = _model(image_size)
        counts = [3, 3, 2, 2, 2, 2, 2]
        loss_fn = (
            AduCLoss(7, class_counts=counts)
            if method == "aduni"
            else build_loss(method, 7, counts, model=model, queue_size=max(batch_size, 8 * batch_size))
        )
        trainer = AdUniTrainer(
            model=model, args=args, loss_fn=loss_fn,
            train_dataset=SyntheticViews(batch_size * (warmup + steps), image_size),
            data_collator=collate_views,
        )  # fmt: skip
        trainer.remove_callback(EpochProgressCallback)  # no console line per epoch in a benchmark
        trainer.add_callback(timer)
        trainer.train()
    begins, ends = timer.times[0::2], timer.times[1::2]
    return sum(end - begin for begin, end in zip(begins[warmup:], ends[warmup:], strict=True)) / steps


def _step_memory(queue, method: str, image_size: int, batch_size: int, chunk: int | None) -> None:
    """In a fresh process: the peak resident memory above the starting one during two training steps (MB),
    sampled every 2 ms (the process's maximum RSS would also count the imports' transient peak)."""
    import threading

    import psutil

    process, peak, done = psutil.Process(), [0], threading.Event()
    baseline = process.memory_info().rss

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    seconds = trainer_seconds(image_size, batch_size, 1, 1, method=method, contrast_chunk_size=chunk)
    done.set()
    sampler.join()
    queue.put(((peak[0] - baseline) / 2**20, seconds))


def step_memory_mb(
    method: str, image_size: int, batch_size: int, chunk: int | None = None
) -> tuple[float, float]:
    """(peak memory growth in MB, seconds per step) of `method` (aduni or paco) on the CPU, in its own process so
    that earlier measurements do not raise the peak. On a GPU the same comparison reads
    torch.cuda.max_memory_allocated."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_step_memory, args=(queue, method, image_size, batch_size, chunk))
    process.start()
    result = queue.get()
    process.join()
    return result


def matmul_peak_flops(size: int = 2048, repeats: int = 5) -> float:
    """The machine's fp32 matmul FLOP/s (best of `repeats` size x size products), the roof a step is held to."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = min(_time(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * size**3 / best


def _time(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def run_train(args: argparse.Namespace) -> None:
    """The `train` sub-command: every pair measured in this run, on this machine."""
    size, batch, steps, warmup = args.image_size, args.batch_size, args.steps, args.warmup
    results: dict[str, float] = {}
    official, flops = plain_loop_seconds(size, batch, steps, warmup)
    ours_plain, _ = plain_loop_seconds(size, batch, steps, warmup, channels_last=True)
    trainer = trainer_seconds(size, batch, steps, warmup, channels_last=True)
    peak = matmul_peak_flops()
    results.update(
        official_style_images_per_second=batch / official,
        hand_loop_channels_last_images_per_second=batch / ours_plain,
        trainer_channels_last_images_per_second=batch / trainer,
        speedup_over_official_style=official / trainer,
        trainer_overhead=trainer / ours_plain - 1,
        step_gflop=flops / 1e9,
        matmul_peak_gflops=peak / 1e9,
        official_style_share_of_peak=flops / official / peak,
        trainer_share_of_peak=flops / trainer / peak,
    )
    for chunk in args.chunk_sizes:
        seconds = trainer_seconds(size, batch, steps, warmup, channels_last=True, contrast_chunk_size=chunk)
        results[f"trainer_chunk{chunk}_images_per_second"] = batch / seconds
    if args.memory:
        for method, chunk in [("aduni", None), ("paco", None), *(("aduni", c) for c in args.chunk_sizes)]:
            megabytes, _ = step_memory_mb(method, size, batch, chunk)
            results[f"peak_memory_mb_{method}" + (f"_chunk{chunk}" if chunk else "")] = megabytes
    print(f"training at {size}x{size}, batch {batch} images (two views each), {steps} timed steps:")
    for key, value in results.items():
        print(f"  {key:48} {value:10.3f}")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump({"image_size": size, "batch_size": batch, **results}, handle, indent=2)


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
    train = commands.add_parser("train", help="training images/s, share of matmul peak, Trainer overhead")
    train.add_argument("--image_size", type=int, default=384)
    train.add_argument("--batch_size", type=int, default=16)
    train.add_argument("--steps", type=int, default=4)
    train.add_argument("--warmup", type=int, default=2)
    train.add_argument("--chunk_sizes", type=int, nargs="*", default=[8])
    train.add_argument("--memory", action="store_true", help="also the peak memory of aduni, paco and chunks")
    train.add_argument("--output", default=None, help="also write the results as JSON")
    train.set_defaults(run=run_train)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
