"""scripts/benchmark.py, run small: every figure the README reports is computed and plausible (not timed here)."""

import json
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def script():
    return runpy.run_path(str(ROOT / "scripts" / "benchmark.py"))  # main() in-process: spares a slow start-up


def test_data_benchmark_times_both_pipelines_on_both_official_layouts(tmp_path, capsys, script):
    output = tmp_path / "results.json"
    script["main"](["data", "--num_images", "14", "--scale", "0.02", "--image_size", "16", "--workers", "0",
                       "--output", str(output)])  # fmt: skip
    results = json.loads(output.read_text())
    assert [(r["layout"], r["pipeline"], r["stored"], r["num_images"]) for r in results] == [
        ("aptos2019", "official style", "60x40 PNG", 14),
        ("aptos2019", "ours, loader", "16x16 PNG in Arrow", 14),
        ("aptos2019", "ours, device", "16x16 uint8 in Arrow", 14),
        ("aptos2019", "device augmentation", "uint8 on the device", 14),
        ("isic2018", "official style", "12x9 JPEG", 14),
        ("isic2018", "ours, loader", "16x16 PNG in Arrow", 14),
        ("isic2018", "ours, device", "16x16 uint8 in Arrow", 14),
        ("isic2018", "device augmentation", "uint8 on the device", 14),
    ]
    assert all(r["images_per_second"] > 0 for r in results)
    assert all((r["prepare_seconds"] > 0) == r["pipeline"].startswith("ours") for r in results)
    loaders = [r for r in results if r["pipeline"] != "device augmentation"]
    assert all(r["worker_ms_per_image"] > 0 for r in loaders)
    printed = capsys.readouterr().out
    assert "the official style" in printed and "one-off prepare_dataset: aptos2019" in printed
    assert "worker CPU per image: loader path / device path" in printed
    lines = printed.splitlines()  # a line per measurement, printed as it came, before the summary
    assert lines.index(next(line for line in lines if "ours, device" in line and "images/s" in line)) < lines.index(
        next(line for line in lines if "worker CPU per image: loader path" in line)
    )


@pytest.mark.slow
def test_a_process_with_persistent_workers_exits_within_seconds_of_finishing(tmp_path, script):
    """The end of the benchmark is the end of its process: its loaders' persistent workers are shut down with
    them, so nothing waits for them at interpreter exit (5 s per worker that does not answer)."""
    import subprocess
    import sys
    import time

    probe = tmp_path / "probe.py"
    probe.write_text(
        "import runpy, sys, time\n"
        f"script = runpy.run_path({str(ROOT / 'scripts' / 'benchmark.py')!r})\n"
        "script['main'](['data', '--layouts', 'isic2018', '--num_images', '14', '--scale', '0.02', '--image_size',"
        " '16', '--workers', '2'])\n"
        "print('finished', time.time(), flush=True)\n"
    )
    process = subprocess.Popen([sys.executable, str(probe)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    finished = next(float(line.split()[1]) for line in process.stdout if line.startswith("finished"))
    process.wait(timeout=120)
    assert time.time() - finished < 5


def test_official_style_views_decode_the_file_and_transform_it_twice(tmp_path, script):
    files = script["write_synthetic_aptos"](tmp_path, 2, 30, 20)
    item = script["OfficialStyleViews"](files, image_size=8)[1]
    assert item["pixel_values"].shape == (2, 3, 8, 8) and item["labels"] == 1
    assert not item["pixel_values"][0].equal(item["pixel_values"][1])  # two independent random views


def test_data_benchmark_needs_two_images_per_class(tmp_path, script):
    with pytest.raises(ValueError, match="--num_images must be >= 14"):
        script["benchmark_data"](tmp_path, num_images=6)


@pytest.mark.slow
def test_train_benchmark_reports_every_pair(tmp_path, capsys, script):
    output = tmp_path / "train.json"
    script["main"](["train", "--image_size", "32", "--batch_size", "4", "--steps", "1", "--warmup", "1",
                       "--repeats", "1", "--bf16", "on", "--chunk_sizes", "4", "--end_to_end", "--num_images", "14",
                       "--workers", "0", "--output", str(output)])  # fmt: skip
    results = json.loads(output.read_text())
    for name in (
        "official_style",
        "hand_loop",
        "trainer",
        "hand_loop_float32",
        "trainer_float32",
        "trainer_chunk4",
    ):
        assert results[f"{name}_images_per_second"] > 0, name
    assert results["ours"] == "channels_last + bf16 autocast"
    assert 0 < results["trainer_own_share_of_step"] < 1  # the rest is forward, backward and the update
    assert results["step_gflop"] > 0 and results["matmul_peak_gflops_bfloat16"] > 0
    assert 0 < results["official_style_share_of_float32_peak"] < 5
    assert results["trainer_share_of_bfloat16_peak"] > 0
    if script["native_bf16"]():  # bf16 matrix units (AMX, a GPU): the bf16 roof is the higher one
        assert results["trainer_share_of_bfloat16_peak"] < results["trainer_share_of_float32_peak"]
    for where in ("loader", "device"):  # real prepared files through the training data path
        assert results[f"end_to_end_{where}_images_per_second"] > 0
        assert results[f"end_to_end_{where}_share_of_bare_step"] > 0
    hours = 401 * 8012 / results["trainer_images_per_second"] / 3600
    assert results["projected_isic2018_hours"] == pytest.approx(hours)
    assert "training at 32x32" in capsys.readouterr().out
