"""scripts/benchmark.py data: prepares a synthetic APTOS download twice and times the two-view loader."""

import json
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_data_benchmark_reports_both_stored_sizes(tmp_path, capsys):
    # main() in-process: spares a slow start-up
    script = runpy.run_path(str(ROOT / "scripts" / "benchmark.py"))
    output = tmp_path / "results.json"
    args = ["data", "--num_images", "10", "--width", "40", "--height", "30", "--image_size", "16"]
    script["main"]([*args, "--workers", "0", "--output", str(output)])
    results = json.loads(output.read_text())
    assert [(r["stored"], r["num_workers"], r["num_images"]) for r in results] == [
        ("40x30 (original)", 0, 10),
        ("16x16 (pre-resized)", 0, 10),
    ]
    assert all(r["images_per_second"] > 0 for r in results)
    assert "16x16 (pre-resized)" in capsys.readouterr().out


def test_train_benchmark_reports_every_pair(tmp_path, capsys):
    """A smoke run at 32x32: every figure the README reports is computed and plausible (not timed here)."""
    script = runpy.run_path(str(ROOT / "scripts" / "benchmark.py"))
    output = tmp_path / "train.json"
    script["main"](["train", "--image_size", "32", "--batch_size", "4", "--steps", "1", "--warmup", "1",
                    "--chunk_sizes", "4", "--output", str(output)])  # fmt: skip
    results = json.loads(output.read_text())
    for key in ("official_style_images_per_second", "hand_loop_channels_last_images_per_second",
                "trainer_channels_last_images_per_second", "trainer_chunk4_images_per_second"):  # fmt: skip
        assert results[key] > 0, key
    assert 0 < results["official_style_share_of_peak"] < 5 and results["step_gflop"] > 0
    assert "training at 32x32" in capsys.readouterr().out
