"""Benchmarks of the data pipeline and the training step (README, "Performance"). Every pair is measured in the
same run on the same machine; CUDA is used when present.

python scripts/benchmark.py data [--layouts aptos2019 isic2018] [--num_images 32] [--image_size 384]
    [--workers 0 2] [--scale 1.0] [--quick] [--output results.json]

`data` writes synthetic downloads in the official layouts and sizes (APTOS2019: train.csv and 3000x2000 PNGs of a
fundus-like disc; ISIC2018 Task 3: the one-hot ground-truth CSV and 600x450 JPEGs; `--scale` shrinks them) and
times two training views per image with the 'kaggle' augmentation, through a torch DataLoader, three ways:
    official style: per sample, decode the full-size file, then torchvision's transforms (v1 API) per view;
    ours, loader:   `prepare_dataset(..., image_size=384)` once, then `MultiViewDataset` (PIL views in the workers);
    ours, device:   the same files' raw uint8 pixels and each view's parameters (`PixelViewsDataset`), the views
                    being made on the training device (the augmentation alone is timed there too).
Throughput is that of the fastest epoch after the first (workers kept alive), so worker start-up is not counted;
a worker's CPU time per image is measured in-process with one thread.

python scripts/benchmark.py train [--image_size 384] [--batch_size 8] [--steps 4] [--warmup 2] [--repeats 2]
    [--bf16 auto|on|off] [--chunk_sizes 4] [--compile] [--memory] [--end_to_end [--num_images 256] [--workers 4]]
    [--quick] [--output results.json]

`train` times one training step (AduC, two views, SGD) of: a plain loop in the style of the official code (NCHW,
float32), the same loop with our switches (channels_last; bf16 autocast where the hardware has native bf16
matrix units: CUDA with bf16, or a CPU with AMX, unless `--bf16` says otherwise), and `AdUniTrainer` with the
same switches and with its CPU default (channels_last, float32). The measurements take turns `--repeats` times
and the fastest step is reported (the median too). Also: the step's FLOPs against the measured matmul peak of its compute type, the
projected time of the paper's ISIC2018 run, `contrast_chunk_size`, `torch_compile`, and (`--memory`) the peak
memory of aduni, paco and chunks. `--end_to_end` adds real prepared files (ISIC2018's layout) through the training
data path, with the augmentation in the loader and on the device, as a share of the bare step (how much of the
time the accelerator computes); with `--compile`, the device path compiled too.

Every measurement prints a line as it ends; `--quick` measures few steps (one round) or images, for a first look in
about two minutes on a GPU machine; every loader's workers are shut down before the process ends.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from aduni_hf.data import (
    MultiViewDataset,
    PixelViewsDataset,
    build_augmentation,
    collate_views,
    prepare_dataset,
    view_major,
)
from aduni_hf.data.device_augmentation import DeviceAugmentation
from aduni_hf.data.sources import aptos2019, isic2018
from aduni_hf.data.transforms import IMAGENET_MEAN, IMAGENET_STD

# The official downloads: APTOS2019 PNGs are mostly about 3000x2000 (some 2000x1500 or 4000x3000 fundus
# photographs); every ISIC2018 Task 3 (HAM10000) JPEG is 600x450.
OFFICIAL_SIZES = {"aptos2019": (3000, 2000), "isic2018": (600, 450)}
KINDS = {"aptos2019": "PNG", "isic2018": "JPEG"}
ISIC_CLASSES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")


@dataclass(frozen=True)
class ThroughputResult:
    """One data-pipeline measurement: images per second, each image giving two augmented views."""

    layout: str
    stored: str
    pipeline: str
    num_workers: int
    num_images: int
    images_per_second: float
    prepare_seconds: float
    worker_ms_per_image: float | None = None  # CPU time a worker spends per image

    def line(self) -> str:
        cpu = f"{self.worker_ms_per_image:>8.2f} ms" if self.worker_ms_per_image is not None else ""
        return (f"{self.layout:10} {self.pipeline:15} {self.stored:24} {self.num_workers:>3} workers "
                f"{self.images_per_second:>9.1f} images/s  worker CPU per image {cpu}")  # fmt: skip


def fundus_like(width: int, height: int, seed: int) -> Image.Image:
    """A bright disc on black with smooth shading and mild noise: sized and compressed like an APTOS PNG."""
    rng = np.random.default_rng(seed)
    y, x = np.ogrid[0:height, 0:width]
    radius = np.hypot((x - width / 2) / (width / 2), (y - height / 2) / (height / 2))
    shade = np.clip(1.0 - radius, 0.0, 1.0)[..., None] * np.array([200.0, 90.0, 40.0])
    pixels = shade + rng.normal(0.0, 3.0, size=(height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")


def write_synthetic_aptos(root: Path, num_images: int, width: int, height: int) -> list[tuple[Path, int]]:
    """`root/train.csv` and `root/train_images/<id_code>.png`, grades cycling through 0..4."""
    (root / aptos2019.TRAIN_IMAGES).mkdir(parents=True, exist_ok=True)
    files = []
    with open(root / aptos2019.TRAIN_CSV, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id_code", "diagnosis"])
        for index in range(num_images):
            path = root / aptos2019.TRAIN_IMAGES / f"synthetic{index:04d}.png"
            fundus_like(width, height, index).save(path)
            writer.writerow([path.stem, index % 5])
            files.append((path, index % 5))
    return files


def write_synthetic_isic(root: Path, num_images: int, width: int, height: int) -> list[tuple[Path, int]]:
    """The ISIC2018 Task 3 training layout: JPEGs (quality 95) in the Input folder, the one-hot ground truth, and
    the lesion groupings (one lesion per image)."""
    images = root / isic2018.INPUT_DIR
    truth = root / isic2018.GROUND_TRUTH_DIR
    images.mkdir(parents=True, exist_ok=True)
    truth.mkdir(parents=True, exist_ok=True)
    files = []
    with open(truth / isic2018.GROUND_TRUTH_CSV, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", *ISIC_CLASSES])
        for index in range(num_images):
            label = index % len(ISIC_CLASSES)
            path = images / f"ISIC_{24306 + index:07d}.jpg"
            fundus_like(width, height, index).save(path, quality=95)
            writer.writerow([path.stem, *("1.0" if c == label else "0.0" for c in range(len(ISIC_CLASSES)))])
            files.append((path, label))
    with open(root / isic2018.LESION_GROUPINGS_CSV, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "lesion_id", "diagnosis_confirm_type"])
        writer.writerows(
            [path.stem, f"HAM_{index:07d}", "histopathology"] for index, (path, _) in enumerate(files)
        )
    return files


WRITERS = {"aptos2019": write_synthetic_aptos, "isic2018": write_synthetic_isic}


def official_style_transform(image_size: int):
    """The released code's 'kaggle' training transform as it wrote it, in torchvision's v1 API: resize first,
    on the full-size image (aduni_hf.data.transforms.kaggle_augmentation is the same chain in v2)."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize((image_size, image_size)),
            T.RandomAffine(degrees=180, scale=(0.8, 1.2), shear=(0.8, 1.2)),
            T.RandomHorizontalFlip(),
            T.RandomVerticalFlip(),
            T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


class OfficialStyleViews(Dataset):
    """Per sample as the released loader: open the image file, convert to RGB, transform it twice."""

    def __init__(self, files: Sequence[tuple[Path, int]], image_size: int) -> None:
        self.files = list(files)
        self.transform = official_style_transform(image_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        path, label = self.files[index]
        with Image.open(path) as file:
            image = file.convert("RGB")
        return {"pixel_values": torch.stack([self.transform(image), self.transform(image)]), "labels": label}


def loader_images_per_second(
    dataset: Dataset, num_workers: int, batch_size: int = 4, epochs: int = 3
) -> float:
    """Images per second of the fastest pass after the first of `epochs` passes of a DataLoader (workers kept
    alive between passes, so their start-up is not counted; the fastest, as a shared machine only slows). The
    workers are shut down before it returns."""
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_views,
        persistent_workers=num_workers > 0,
    )  # fmt: skip
    rates = []
    for _ in range(epochs):
        start = time.perf_counter()
        for batch in loader:
            views = batch["view_parameters"] if "view_parameters" in batch else batch["pixel_values"]
            assert views.shape[1] == 2
        rates.append(len(dataset) / (time.perf_counter() - start))
    del loader  # its persistent workers end here, not at interpreter exit
    return max(rates[1:])


def worker_milliseconds_per_image(dataset: Dataset, batch_size: int = 4) -> float:
    """The CPU time one data-loader worker spends per image of `dataset` (its batches read in this process with one
    thread, as a worker runs): process time, so a busy machine does not inflate it."""
    keys = list(range(len(dataset)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.process_time()
        for first in range(0, len(keys), batch_size):
            batch = keys[first : first + batch_size]
            getitems = getattr(dataset, "__getitems__", None)
            collate_views(getitems(batch) if getitems else [dataset[k] for k in batch])
        return (time.process_time() - start) * 1000 / len(keys)
    finally:
        torch.set_num_threads(threads)


def device_augmentation_images_per_second(prepared: datasets.Dataset, image_size: int, batch_size: int = 32) -> float:
    """Images per second (two views each) of the augmentation on the training device alone, from uint8 pixels
    already there: the fastest of three passes over the prepared images."""
    augmentation = DeviceAugmentation("kaggle", image_size)
    source = PixelViewsDataset(prepared, augmentation, num_views=2)
    batch = collate_views(source.__getitems__(list(range(min(batch_size, len(source))))))
    pixels, parameters = batch["pixels"].to(_device()), batch["view_parameters"].to(_device())
    augmentation.views(pixels, parameters)  # warm-up
    best = float("inf")
    for _ in range(3):
        _synchronize()
        start = time.perf_counter()
        augmentation.views(pixels, parameters)
        _synchronize()
        best = min(best, time.perf_counter() - start)
    return len(pixels) / best


def benchmark_data(
    work_dir: str | Path,
    layouts: Sequence[str] = ("aptos2019", "isic2018"),
    num_images: int = 32,
    image_size: int = 384,
    worker_counts: Sequence[int] = (0, 2),
    scale: float = 1.0,
) -> list[ThroughputResult]:
    """Official-style against our pipeline, for each layout and number of workers."""
    work_dir = Path(work_dir)
    if num_images < 2 * len(ISIC_CLASSES):
        raise ValueError(f"--num_images must be >= {2 * len(ISIC_CLASSES)} (two per class), got {num_images}")
    results = []
    for layout in layouts:
        width, height = (max(1, round(side * scale)) for side in OFFICIAL_SIZES[layout])
        raw = work_dir / layout / "raw"
        files = WRITERS[layout](raw, num_images, width, height)
        start = time.perf_counter()
        prepared = work_dir / layout / "prepared"
        prepare_dataset(layout, str(raw), prepared, num_folds=2, image_size=image_size, overwrite=True)
        prepare_seconds = time.perf_counter() - start
        loaded = datasets.load_from_disk(str(prepared))
        pipelines = (
            ("official style", OfficialStyleViews(files, image_size), f"{width}x{height} {KINDS[layout]}", 0.0),
            ("ours, loader", MultiViewDataset(loaded, build_augmentation("kaggle", image_size), num_views=2),
             f"{image_size}x{image_size} PNG in Arrow", prepare_seconds),
            ("ours, device", PixelViewsDataset(loaded, DeviceAugmentation("kaggle", image_size), num_views=2),
             f"{image_size}x{image_size} uint8 in Arrow", prepare_seconds),
        )  # fmt: skip
        for pipeline, dataset, stored, prepare in pipelines:
            cpu_ms = worker_milliseconds_per_image(dataset)
            for workers in worker_counts:
                rate = loader_images_per_second(dataset, workers)
                result = ThroughputResult(layout, stored, pipeline, workers, num_images, rate, prepare, cpu_ms)
                print(result.line(), flush=True)
                results.append(result)
        rate = device_augmentation_images_per_second(loaded, image_size)
        print(f"{layout:10} {'device augmentation alone, ' + _device().type:40} {rate:>9.1f} images/s", flush=True)
        results.append(ThroughputResult(layout, "uint8 on the device", "device augmentation", 0, num_images, rate, 0.0))
    return results


def run_data(args: argparse.Namespace) -> None:
    """The `data` sub-command: run `benchmark_data` in a temporary folder, printing each measurement as it comes,
    then the speed-ups (and the JSON)."""
    print(f"two training views per image at {args.image_size}x{args.image_size}, 'kaggle' augmentation:", flush=True)
    with tempfile.TemporaryDirectory(prefix="aduni-benchmark-") as work_dir:
        results = benchmark_data(work_dir, args.layouts, args.num_images, args.image_size, args.workers, args.scale)
    loaders = [r for r in results if r.pipeline != "device augmentation"]
    official = {(r.layout, r.num_workers): r.images_per_second for r in loaders if r.pipeline == "official style"}
    for r in loaders:
        print(f"{r.layout:10} {r.pipeline:15} {r.num_workers} workers: {r.images_per_second / official[r.layout, r.num_workers]:.2f}x"
              " the official style")  # fmt: skip
    cpu = {(r.layout, r.pipeline): r.worker_ms_per_image for r in loaders}
    for layout in args.layouts:
        ratio = cpu[layout, "ours, loader"] / cpu[layout, "ours, device"]
        print(f"{layout:10} worker CPU per image: loader path / device path = {ratio:.1f}x")
    prepare = {r.layout: r.prepare_seconds for r in loaders if r.pipeline == "ours, loader"}
    print("one-off prepare_dataset: " + ", ".join(f"{k} {v:.1f} s" for k, v in prepare.items()))
    if args.output:
        with open(args.output, "w") as handle:
            json.dump([asdict(r) for r in results], handle, indent=2)


# ---- training throughput ------------------------------------------------------------------------------------
# The paper's ISIC2018 run: 401 epochs (the released loop runs epochs 0..400) over the 8,012 training images of a
# 5-fold split (10,015 images), the projection issue 10 sets against one hour on one H100.
ISIC2018_EPOCHS, ISIC2018_TRAIN_IMAGES = 401, 8012
CLASS_COUNTS = [3, 3, 2, 2, 2, 2, 2]  # the log prior of AduC's logit adjustment: any fixed counts will do


class SyntheticViews(Dataset):
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


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def native_bf16() -> bool:
    """Whether this machine multiplies bf16 matrices in hardware: CUDA with bf16, or a CPU with AMX tiles."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def _model(image_size: int, num_classes: int = 7):
    from aduni_hf import AdUniConfig, AdUniForImageClassification

    torch.manual_seed(0)
    return AdUniForImageClassification(AdUniConfig(num_labels=num_classes, image_size=image_size))


def step_flops(image_size: int, batch_size: int) -> float:
    """The FLOPs of one training step (forward and backward of 2 x batch_size views), by torch's flop counter."""
    from torch.utils.flop_counter import FlopCounterMode

    from aduni_hf.losses import AduCLoss

    model, loss_fn = _model(image_size).train(), AduCLoss(7, class_counts=CLASS_COUNTS)
    views = torch.randn(2 * batch_size, 3, image_size, image_size)
    labels = torch.arange(batch_size) % 7
    counter = FlopCounterMode(display=False)
    with counter:
        outputs = model(pixel_values=views)
        loss_fn(outputs.features, outputs.logits, labels, alpha=0.5).backward()
    return float(counter.get_total_flops())


def plain_loop_seconds(
    image_size: int, batch_size: int, steps: int, warmup: int, channels_last: bool = False, bf16: bool = False
) -> list[float]:
    """Seconds of each timed step of a hand-written loop in the official style: batches from a DataLoader, the two views
    concatenated view-major, SGD, AduC; NCHW float32 unless `channels_last` / `bf16` (autocast around the
    network; the loss in float32 inside). Its data come through the same loader and collate as the Trainer's."""
    from aduni_hf.losses import AduCLoss

    device = _device()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = _model(image_size).train().to(device, memory_format=memory_format)
    loss_fn = AduCLoss(7, class_counts=CLASS_COUNTS).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    loader = DataLoader(
        SyntheticViews(batch_size * (warmup + steps), image_size), batch_size=batch_size,
        collate_fn=collate_views, pin_memory=device.type == "cuda",
    )  # fmt: skip

    def step(batch) -> None:
        pixel_values = batch["pixel_values"].to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True)
        views = view_major(pixel_values, memory_format)  # NCHW: the released torch.cat([images[0], images[1]])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            outputs = model(pixel_values=views)
            loss = loss_fn(outputs.features, outputs.logits, labels, alpha=0.5)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    batches = iter(loader)
    for _ in range(warmup):
        step(next(batches))
    times = []
    for batch in batches:  # one step: the next batch from the loader, then forward, backward, update
        _synchronize()
        start = time.perf_counter()
        step(batch)
        _synchronize()
        times.append(time.perf_counter() - start)
    return times


def trainer_seconds(
    image_size: int,
    batch_size: int,
    steps: int,
    warmup: int,
    method: str = "aduni",
    own_shares: list[float] | None = None,
    **switches,
) -> list[float]:
    """Seconds of each timed optimiser step of `AdUniTrainer` on synthetic batches (its own timing of the steps after
    `warmup`; the batch is fetched before a step begins), with the recipe `switches` (channels_last, bf16,
    contrast_chunk_size, ...). `own_shares` receives, per step, the share of it that is neither forward, backward
    nor the update: the Trainer's own work (moving the batch, the view-major copy, logs, checks, schedules)."""
    from transformers import TrainerCallback

    from aduni_hf.methods import METHODS, LossInputs, MethodArguments
    from aduni_hf.training import AdUniTrainer, AdUniTrainingArguments
    from aduni_hf.training.callbacks import EpochProgressCallback

    class StepTimes(TrainerCallback):
        """Per optimiser step: its duration, and the part of it spent in the forward passes (network and loss),
        the backward passes and the SGD update; the rest is the Trainer's own work."""

        def __init__(self):
            self.steps: list[dict[str, float]] = []
            self.parts = {"forward": 0.0, "backward": 0.0, "update": 0.0}

        def timed(self, part: str, function):
            def run(*args, **kwargs):
                _synchronize()
                start = time.perf_counter()
                try:
                    return function(*args, **kwargs)
                finally:
                    _synchronize()
                    self.parts[part] += time.perf_counter() - start

            return run

        def on_step_begin(self, args, state, control, **kwargs):
            self.parts = dict.fromkeys(self.parts, 0.0)
            _synchronize()
            self.begin = time.perf_counter()

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            _synchronize()
            self.update_begin = time.perf_counter()

        def on_optimizer_step(self, args, state, control, **kwargs):
            _synchronize()
            self.parts["update"] += time.perf_counter() - self.update_begin

        def on_step_end(self, args, state, control, **kwargs):
            _synchronize()
            self.steps.append({"total": time.perf_counter() - self.begin, **self.parts})

    timer = StepTimes()
    with tempfile.TemporaryDirectory(prefix="aduni-benchmark-") as output_dir:
        args = AdUniTrainingArguments(
            output_dir=output_dir, per_device_train_batch_size=batch_size, max_steps=warmup + steps,
            warmup_epochs=0, logging_strategy="no", eval_strategy="no", save_strategy="no", report_to=[],
            disable_tqdm=True, figures=False, **switches,
        )  # fmt: skip
        model = _model(image_size)
        recipe = MethodArguments(method=method, queue_size=max(batch_size, 8 * batch_size))
        loss_fn = METHODS[method].stages[0].loss(LossInputs(7, CLASS_COUNTS, model, recipe))
        trainer = AdUniTrainer(
            model=model, args=args, loss_fn=loss_fn,
            train_dataset=SyntheticViews(batch_size * (warmup + steps), image_size),
            data_collator=collate_views,
        )  # fmt: skip
        trainer.remove_callback(EpochProgressCallback)  # no console line per epoch in a benchmark
        trainer.add_callback(timer)
        if own_shares is not None:  # timers around the parts (they would break a torch.compile graph)
            model.forward = timer.timed("forward", model.forward)
            for name in ("from_outputs", "forward_views"):  # the loss's entry points, model included for PaCo's
                setattr(loss_fn, name, timer.timed("forward", getattr(loss_fn, name)))
            trainer.accelerator.backward = timer.timed("backward", trainer.accelerator.backward)
        trainer.train()
    steps = timer.steps[warmup:]
    if (
        own_shares is not None
    ):  # what the Trainer adds inside its steps, free of a shared machine's slow spells
        own_shares.extend(1 - (s["forward"] + s["backward"] + s["update"]) / s["total"] for s in steps)
    return [s["total"] for s in steps]


def end_to_end_seconds(
    prepared: Path,
    image_size: int,
    batch_size: int,
    steps: int,
    warmup: int,
    augmentation_device: str,
    workers: int,
    **switches,
) -> list[float]:
    """Seconds between the ends of consecutive optimiser steps of `AdUniTrainer` on real prepared files, through the
    training script's data path (the loader's PIL views, or uint8 pixels with the views made on the device): the
    data wait is inside. The loader's workers are shut down before it returns."""
    from transformers import TrainerCallback

    from aduni_hf.methods import METHODS, LossInputs, MethodArguments
    from aduni_hf.training import AdUniTrainer, AdUniTrainingArguments
    from aduni_hf.training.callbacks import EpochProgressCallback

    class StepEnds(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            _synchronize()
            self.ends.append(time.perf_counter())

    loaded = datasets.load_from_disk(str(prepared))
    if augmentation_device == "device":
        on_device = DeviceAugmentation("kaggle", image_size)
        train = PixelViewsDataset(loaded, on_device, num_views=2)
    else:
        on_device, train = None, MultiViewDataset(loaded, build_augmentation("kaggle", image_size), num_views=2)
    timer = StepEnds()
    with tempfile.TemporaryDirectory(prefix="aduni-benchmark-") as output_dir:
        args = AdUniTrainingArguments(
            output_dir=output_dir, per_device_train_batch_size=batch_size, max_steps=warmup + steps + 1,
            warmup_epochs=0, logging_strategy="no", eval_strategy="no", save_strategy="no", report_to=[],
            disable_tqdm=True, figures=False, dataloader_num_workers=workers, **switches,
        )  # fmt: skip
        model = _model(image_size)
        loss_fn = METHODS["aduni"].stages[0].loss(LossInputs(7, CLASS_COUNTS, model, MethodArguments()))
        trainer = AdUniTrainer(model=model, args=args, loss_fn=loss_fn, train_dataset=train,
                               data_collator=collate_views, view_augmentation=on_device)  # fmt: skip
        trainer.remove_callback(EpochProgressCallback)
        trainer.add_callback(timer)
        trainer.train()
        del trainer  # the loader's persistent workers end here
    ends = timer.ends[warmup:]
    return [b - a for a, b in zip(ends, ends[1:], strict=False)]


def _step_memory(queue, method: str, image_size: int, batch_size: int, switches: dict) -> None:
    """In a fresh process: the peak memory above the starting one during two training steps (MB). On the CPU the
    resident set sampled every 2 ms (the process's maximum RSS would also count the imports' transient peak); on
    a GPU torch.cuda.max_memory_allocated."""
    import threading

    import psutil

    process, peak, done = psutil.Process(), [0], threading.Event()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        baseline = process.memory_info().rss

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    seconds = trainer_seconds(image_size, batch_size, 1, 1, method=method, **switches)[0]
    done.set()
    sampler.join()
    if torch.cuda.is_available():
        peak[0] = torch.cuda.max_memory_allocated()
    queue.put(((peak[0] - baseline) / 2**20, seconds))


def step_memory_mb(method: str, image_size: int, batch_size: int, **switches) -> tuple[float, float]:
    """(peak memory growth in MB, seconds per step) of `method` (aduni or paco), in its own process so that
    earlier measurements do not raise the peak."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_step_memory, args=(queue, method, image_size, batch_size, switches))
    process.start()
    result = queue.get()
    process.join()
    return result


def matmul_peak_flops(dtype: torch.dtype = torch.float32, repeats: int = 20, budget_s: float = 3.0) -> float:
    """The machine's matmul FLOP/s in `dtype` (the best of up to `repeats` square products, as many as fit in
    `budget_s`), the roof a step is held to. The budget keeps it short where `dtype` has no fast kernel: bf16 on a
    CPU without AMX takes 2.3 s per 1024-square product on this project's AMD VM."""
    device = _device()
    size = 8192 if device.type == "cuda" else 1024
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    times: list[float] = []
    for _ in range(repeats):
        _synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        _synchronize()
        times.append(time.perf_counter() - start)
        if sum(times) > budget_s:
            break
    return 2 * size**3 / min(times)


def take_turns(
    measurements: dict[str, Callable[[], list[float]]], repeats: int
) -> tuple[dict[str, float], dict[str, float]]:
    """The fastest step of each measurement, the measurements run in turn `repeats` times. On a shared machine
    (this project's 2-core VM: the same bf16 step takes 0.9 to 1.6 s from one minute to the next) a slow spell
    only adds time, so the fastest step is the steadiest estimate of what the step costs (as `timeit` advises);
    the median is kept as well."""
    samples: dict[str, list[float]] = {name: [] for name in measurements}
    for round_ in range(repeats):
        for name, measure in measurements.items():
            samples[name].extend(measure())
            print(f"  round {round_ + 1}/{repeats} {name:28} fastest step {min(samples[name]):.4f} s", flush=True)
    return {name: min(values) for name, values in samples.items()}, {
        name: statistics.median(values) for name, values in samples.items()
    }


def run_train(args: argparse.Namespace) -> None:
    """The `train` sub-command: every pair measured in this run, on this machine."""
    size, batch, steps, warmup = args.image_size, args.batch_size, args.steps, args.warmup
    bf16 = native_bf16() if args.bf16 == "auto" else args.bf16 == "on"
    ours = {"channels_last": True, "bf16": bf16}
    own_shares: list[float] = []
    measurements = {
        "official_style": lambda: plain_loop_seconds(size, batch, steps, warmup),
        "hand_loop": lambda: plain_loop_seconds(size, batch, steps, warmup, channels_last=True, bf16=bf16),
        "trainer": lambda: trainer_seconds(size, batch, steps, warmup, own_shares=own_shares, **ours),
    }
    if bf16:  # also the CPU default, float32: its steps vary less on a shared machine than bf16's
        measurements["hand_loop_float32"] = lambda: plain_loop_seconds(
            size, batch, steps, warmup, channels_last=True
        )
        measurements["trainer_float32"] = lambda: trainer_seconds(
            size, batch, steps, warmup, channels_last=True
        )
    for chunk in args.chunk_sizes:
        measurements[f"trainer_chunk{chunk}"] = lambda chunk=chunk: trainer_seconds(
            size, batch, steps, warmup, contrast_chunk_size=chunk, **ours
        )
    if args.compile:
        measurements["trainer_compiled"] = lambda: trainer_seconds(
            size, batch, steps, max(warmup, 1), torch_compile=True, **ours
        )
    work_dir = tempfile.TemporaryDirectory(prefix="aduni-benchmark-")
    if args.end_to_end:  # real prepared files, ISIC2018's layout and sizes, through the training data path
        raw, prepared = Path(work_dir.name) / "raw", Path(work_dir.name) / "prepared"
        write_synthetic_isic(raw, max(args.num_images, batch), *OFFICIAL_SIZES["isic2018"])
        prepare_dataset("isic2018", str(raw), prepared, num_folds=2, image_size=size, num_workers=args.workers)
        for where in ("loader", "device"):
            measurements[f"end_to_end_{where}"] = lambda where=where: end_to_end_seconds(
                prepared, size, batch, steps, warmup, where, args.workers, **ours
            )
        if args.compile:  # once the data keep up, what compiling the model adds end to end
            measurements["end_to_end_device_compiled"] = lambda: end_to_end_seconds(
                prepared, size, batch, steps, max(warmup, 1), "device", args.workers, torch_compile=True, **ours
            )
    dtypes = (torch.float32, torch.bfloat16) if bf16 else (torch.float32,)
    peaks = {dtype: matmul_peak_flops(dtype) for dtype in dtypes}
    seconds, medians = take_turns(measurements, args.repeats)
    # the best seen before and after the steps: a shared machine's slow spells lower the peak, never raise it
    peaks = {dtype: max(peak, matmul_peak_flops(dtype)) for dtype, peak in peaks.items()}
    peak32, peak = peaks[torch.float32], peaks[dtypes[-1]]
    flops = step_flops(size, batch)
    results: dict[str, float | str] = {
        "device": torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"cpu, {torch.get_num_threads()} threads",
        "ours": "channels_last" + (" + bf16 autocast" if bf16 else " (float32)"),
    }
    results.update({f"{name}_images_per_second": batch / value for name, value in seconds.items()})
    results.update({f"{name}_median_images_per_second": batch / value for name, value in medians.items()})
    results.update(
        speedup_over_official_style=seconds["official_style"] / seconds["trainer"],
        trainer_overhead=seconds["trainer"] / seconds["hand_loop"] - 1,
        trainer_overhead_median=medians["trainer"] / medians["hand_loop"] - 1,
        trainer_own_share_of_step=statistics.median(own_shares),
        step_gflop=flops / 1e9,
        matmul_peak_gflops_float32=peak32 / 1e9,
        official_style_share_of_float32_peak=flops / seconds["official_style"] / peak32,
        trainer_share_of_float32_peak=flops / seconds["trainer"] / peak32,
    )
    if bf16:
        results.update(
            trainer_float32_overhead=seconds["trainer_float32"] / seconds["hand_loop_float32"] - 1,
            trainer_float32_overhead_median=medians["trainer_float32"] / medians["hand_loop_float32"] - 1,
            trainer_float32_share_of_float32_peak=flops / seconds["trainer_float32"] / peak32,
            matmul_peak_gflops_bfloat16=peak / 1e9,
            trainer_share_of_bfloat16_peak=flops / seconds["trainer"] / peak,
        )
    results["projected_isic2018_hours"] = (
        ISIC2018_EPOCHS * ISIC2018_TRAIN_IMAGES * seconds["trainer"] / batch / 3600
    )
    for where in ("loader", "device", "device_compiled") if args.end_to_end else ():
        if f"end_to_end_{where}" not in seconds:
            continue
        name = f"end_to_end_{where}"
        results[f"{name}_share_of_bare_step"] = seconds["hand_loop"] / seconds[name]  # the GPU busy this share
        results[f"projected_isic2018_hours_{name}"] = ISIC2018_EPOCHS * ISIC2018_TRAIN_IMAGES * seconds[name] / batch / 3600
    work_dir.cleanup()
    if args.memory:
        for method, chunk in [("aduni", None), ("paco", None), *(("aduni", c) for c in args.chunk_sizes)]:
            megabytes, _ = step_memory_mb(method, size, batch, contrast_chunk_size=chunk, **ours)
            results[f"peak_memory_mb_{method}" + (f"_chunk{chunk}" if chunk else "")] = megabytes
    print(
        f"training at {size}x{size}, batch {batch} images (two views each), fastest of {args.repeats} x {steps} steps:"
    )
    for key, value in results.items():
        print(f"  {key:40} {value:>12.3f}" if isinstance(value, float) else f"  {key:40} {value:>12}")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump({"image_size": size, "batch_size": batch, **results}, handle, indent=2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser(
        "data", help="data pipeline images/s (two views per image): official style vs ours"
    )
    data.add_argument(
        "--layouts", nargs="+", choices=sorted(OFFICIAL_SIZES), default=["aptos2019", "isic2018"]
    )
    data.add_argument("--num_images", type=int, default=32)
    data.add_argument("--image_size", type=int, default=384)
    data.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    data.add_argument("--scale", type=float, default=1.0, help="shrink the official image sizes (tests)")
    data.add_argument("--output", default=None, help="also write the results as JSON")
    data.set_defaults(run=run_data)
    train = commands.add_parser("train", help="training images/s, share of matmul peak, Trainer overhead")
    train.add_argument("--image_size", type=int, default=384)
    train.add_argument("--batch_size", type=int, default=8)
    train.add_argument("--steps", type=int, default=4)
    train.add_argument("--warmup", type=int, default=2)
    train.add_argument(
        "--repeats", type=int, default=2, help="rounds of taking turns (fastest step reported)"
    )
    train.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                       help="our switches: bf16 autocast (auto: where the hardware has native bf16)")  # fmt: skip
    train.add_argument("--chunk_sizes", type=int, nargs="*", default=[])
    train.add_argument("--compile", action="store_true", help="also AdUniTrainer with torch_compile")
    train.add_argument("--memory", action="store_true", help="also the peak memory of aduni, paco and chunks")
    train.add_argument("--end_to_end", action="store_true",
                       help="also real prepared files (ISIC2018 layout) through the training data path, both ways")  # fmt: skip
    train.add_argument("--num_images", type=int, default=256, help="images of the end-to-end data set")
    train.add_argument("--workers", type=int, default=4, help="data-loader workers of the end-to-end runs")
    train.add_argument("--output", default=None, help="also write the results as JSON")
    train.set_defaults(run=run_train)
    for command in (data, train):
        command.add_argument("--quick", action="store_true",
                             help="few steps and images, one round: a first look in about two minutes on a GPU")  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick:  # the sizes stay as asked: only how long each is measured shrinks
        if args.command == "train":
            args.steps, args.warmup, args.repeats, args.num_images = 3, 1, 1, min(args.num_images, 64)
        else:
            args.num_images = min(args.num_images, 16)
    args.run(args)


if __name__ == "__main__":
    main()
