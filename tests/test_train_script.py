"""The README's demo command, shortened to one epoch, on a machine where `accelerate config` never ran."""

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard
from PIL import Image

from aduni_hf.hub.model_card import MODEL_ID_PLACEHOLDER
from tests.card_helpers import check_recipe_table, recipe_table, usage_snippet
from tests.script_runs import run_script_here

pytestmark = pytest.mark.slow  # end-to-end runs (a training run in a fixture)


REPO = Path(__file__).resolve().parents[1]
DEMO_COMMAND = "accelerate launch --config_file configs/accelerate/single.yaml scripts/train.py configs/demo.yaml"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    assert DEMO_COMMAND in (REPO / "README.md").read_text()
    output_dir = tmp_path_factory.mktemp("demo") / "out"
    fresh_home = tmp_path_factory.mktemp("hf_home")  # no accelerate default config, as on a fresh machine
    command = [sys.executable, "-m", "accelerate.commands.launch", *DEMO_COMMAND.split()[2:]]
    command += ["--num_train_epochs", "2", "--output_dir", str(output_dir)]
    # bytes, decoded without text mode's newline translation: a progress bar's "\r" updates stay on one line
    result = subprocess.run(
        command, capture_output=True, timeout=600, cwd=REPO, env={**os.environ, "HF_HOME": str(fresh_home)}
    )
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, stderr[-3000:]
    return output_dir, stdout + stderr


def test_launch_prints_no_warning_about_missing_settings(demo_run):
    _, output = demo_run
    assert "were not passed to `accelerate launch`" not in output


def test_console_shows_our_logs_and_one_line_per_epoch(demo_run):
    _, output = demo_run
    assert re.search(r"aduni_hf\.recipes\.run_data - train \d+ images, val \d+, test 142", output)  # our logger
    epoch_lines = [line for line in output.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines[:2]] == ["1/2", "2/2"]
    assert all("loss" in line and "alpha" in line and "val accuracy" in line for line in epoch_lines[:2])
    assert "{'loss'" not in output and "'eval_f1_0'" not in output  # no dict per log


# What the Trainer prints at its default info level, and torch's warning for a pinned loader without an accelerator.
NOISE = (
    "***** Running",
    "Do not forget to share your model",
    "Model config AdUniConfig",
    "Configuration saved in",
    "[INFO|",
    "'pin_memory' argument is set as true",
)


def test_console_holds_our_lines_and_the_final_table_only(demo_run):
    """Two epochs print 23 lines (the full demo 51, where the Trainer's info blocks made it 233): the two epoch lines
    and the closing one, the final table (a header, a rule, 5 summary metrics, the F1 of 10 classes), and at most 5
    more: our two log records (threads, the data split) and the save's progress bar, with room for a warning."""
    _, output = demo_run
    for noise in NOISE:
        assert noise not in output, noise
    table = 2 + 5 + 10
    assert output.count("\n") <= 2 + 1 + table + 5, output  # counted as `wc -l`: a bar's updates share one line
    assert re.search(r"^accuracy +\d[.]\d{4} +\d[.]\d{4}$", output, re.MULTILINE)  # validation beside test


def test_log_level_info_brings_back_the_trainers_blocks(tmp_path):
    """`--log_level info` sets transformers' level as the Trainer documents: its blocks are back, ours stay."""
    short = ["--max_steps", "1", "--image_size", "16", "--per_device_train_batch_size", "16", "--eval_strategy",
             "no", "--figures", "false", "--torch_threads", "1"]  # fmt: skip
    result = run_script_here(
        "train.py", "configs/demo.yaml", *short, "--log_level", "info", "--output_dir", str(tmp_path / "out"),
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "***** Running training *****" in output and "Do not forget to share your model" in output
    assert re.search(r"aduni_hf\.recipes\.run_data - train \d+ images", output)


def test_trainer_state_keeps_the_history(demo_run):
    output_dir, _ = demo_run
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    training = [log for log in history if "loss" in log]
    assert [log["epoch"] for log in training] == [1.0, 2.0]
    assert all({"alpha", "learning_rate", "grad_norm"} <= set(log) for log in training)
    assert [log["epoch"] for log in history if "eval_macro_f1" in log] == [1.0, 2.0]


def test_output_files_are_readable_by_everyone(demo_run):
    output_dir, _ = demo_run
    umask = os.umask(0)
    os.umask(umask)
    for name in ("model.safetensors", "README.md", "run_config.yaml", "config.json", "test_results.json"):
        mode = stat.S_IMODE((output_dir / name).stat().st_mode)
        assert mode == 0o666 & ~umask, f"{name}: {oct(mode)}"


def test_official_recipe_runs_without_clipping(demo_run):
    output_dir, _ = demo_run
    run_config = yaml.safe_load((output_dir / "run_config.yaml").read_text())
    assert run_config["AdUniTrainingArguments"]["max_grad_norm"] == 0.0


def documented_outputs() -> set[str]:
    """The files of the README's list "The demo writes `outputs/demo/`:" (a folder ends with "/"; the files of
    `figures/` as figures/<name>)."""
    text = (REPO / "README.md").read_text()
    start = text.index("The demo writes `outputs/demo/`:\n\n") + len("The demo writes `outputs/demo/`:\n\n")
    names = set()
    for item in text[start : text.index("\n\n", start)].split("\n- "):
        files = re.findall(r"`([\w.-]+(?:\.\w+|/))`", item)
        folder = files[0] if files and files[0].endswith("/") else ""
        names |= {name if not folder or name == folder else folder + name for name in files}
    return names


def test_output_dir_holds_the_documented_files(demo_run):
    """The README's list of the demo's output files is complete and exact."""
    output_dir, _ = demo_run
    written = {
        str(path.relative_to(output_dir)) + ("/" if path.is_dir() else "")
        for path in [*output_dir.iterdir(), *(output_dir / "figures").iterdir()]
    }
    assert written == documented_outputs()
    config = json.loads((output_dir / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForImageClassification"}
    assert config["id2label"]["9"] == "9" and config["image_size"] == 32


def test_results_and_table(demo_run):
    output_dir, stdout = demo_run
    results = json.loads((output_dir / "test_results.json").read_text())
    for key in ["test_accuracy", "test_macro_f1", "test_balanced_accuracy"] + [
        f"test_f1_{c}" for c in range(10)
    ]:
        assert 0.0 <= results[key] <= 1.0, key
    assert "macro-F1" in stdout and "F1 9" in stdout
    run_config = yaml.safe_load((output_dir / "run_config.yaml").read_text())
    assert run_config["MethodArguments"]["alpha_decay"] == 22
    assert run_config["AdUniTrainingArguments"]["num_train_epochs"] == 2


def test_model_card_carries_the_results(demo_run):
    output_dir, _ = demo_run
    card = ModelCard.load(output_dir / "README.md")
    results = json.loads((output_dir / "test_results.json").read_text())
    by_type = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert by_type["accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-4)
    assert by_type["f1"] == pytest.approx(results["test_macro_f1"], abs=1e-4)
    assert "digits_lt" in card.text and "| 9 |" in card.text


def test_model_card_states_the_recipe_in_force_and_how_to_load_the_model(demo_run):
    """The card's recipe table is run_config.yaml's values in force; without hub_model_id its usage snippet names a
    marked placeholder, not the output folder."""
    output_dir, _ = demo_run
    text = ModelCard.load(output_dir / "README.md").text
    table = recipe_table(text)
    check_recipe_table(table, yaml.safe_load((output_dir / "run_config.yaml").read_text()))
    assert table["epochs"] == "2" and table["batch"] == "64 per device × 1 process × 1 accumulation step = 64"
    assert f'model="{MODEL_ID_PLACEHOLDER}", trust_remote_code=True' in usage_snippet(text)
    assert f"`{MODEL_ID_PLACEHOLDER}` is a placeholder" in text and 'model="out"' not in text


def test_saved_model_runs_in_a_pipeline(demo_run):
    from transformers import pipeline

    import aduni_hf  # noqa: F401  (registers the Auto classes)

    output_dir, _ = demo_run
    classifier = pipeline("image-classification", model=str(output_dir), device="cpu")
    predictions = classifier(Image.new("RGB", (8, 8), color=(30, 30, 30)), top_k=3)
    assert len(predictions) == 3 and {p["label"] for p in predictions} <= {str(c) for c in range(10)}
