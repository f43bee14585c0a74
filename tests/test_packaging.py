"""The wheel: it holds every file the package reads at run time, and a run from a wheel install writes its card."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def tracked_files(prefix: str) -> list[str]:
    """The repository's files under `prefix` as the working tree has them (committed or not, never ignored)."""
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", prefix],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted({line for line in listing.splitlines() if (REPO / line).is_file()})


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built, without network, from a copy of the tracked files (the source tree stays clean)."""
    source = tmp_path_factory.mktemp("source")
    for name in tracked_files("."):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), "."],
        cwd=source,
        check=True,
        capture_output=True,
        timeout=600,
    )
    (built,) = out.glob("aduni_hf-*.whl")
    return built


def test_the_wheel_holds_every_file_of_the_package(wheel):
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    package_files = tracked_files("aduni_hf")
    assert "aduni_hf/hub/model_card_template.md" in package_files
    missing = [name for name in package_files if name not in shipped]
    assert not missing, f"not in the wheel: {missing}"


def test_top_level_model_card_is_the_packaged_template():
    packaged = REPO / "aduni_hf" / "hub" / "model_card_template.md"
    assert (REPO / "model_card.md").read_text() == packaged.read_text()


@pytest.mark.slow
def test_a_run_from_a_wheel_install_writes_its_card(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    elsewhere = tmp_path / "elsewhere"  # not the repository: nothing can be read from the source tree
    elsewhere.mkdir()
    recipe = elsewhere / "quick.yaml"
    recipe.write_text((REPO / "configs" / "demo.yaml").read_text())
    env = {**os.environ, "PYTHONPATH": str(site)}  # ahead of the editable install
    probe = subprocess.run(
        [sys.executable, "-c", "import aduni_hf; print(aduni_hf.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip().startswith(str(site))
    train_script = elsewhere / "train.py"
    shutil.copy2(REPO / "scripts" / "train.py", train_script)
    result = subprocess.run(
        [sys.executable, str(train_script), str(recipe), "--max_steps", "1", "--output_dir", "out",
         "--per_device_train_batch_size", "8", "--eval_strategy", "no"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    card = (elsewhere / "out" / "README.md").read_text()
    results = json.loads((elsewhere / "out" / "test_results.json").read_text())
    assert f"{results['test_accuracy']:.4f}" in card and "digits_lt" in card
