"""The README's demo command, shortened to one epoch: `accelerate launch scripts/train.py configs/demo.yaml`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("demo") / "out"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        str(REPO / "scripts" / "train.py"), str(REPO / "configs" / "demo.yaml"),
        "--num_train_epochs", "1", "--output_dir", str(output_dir),
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=REPO, env=dict(os.environ)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir, result.stdout


def test_output_dir_holds_what_design_md_lists(demo_run):
    output_dir, _ = demo_run
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "configuration_aduni.py",
                 "modeling_aduni.py", "README.md", "run_config.yaml", "train_results.json", "eval_results.json",
                 "test_results.json"):  # fmt: skip
        assert (output_dir / name).is_file(), name
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
    assert run_config["AdUniTrainingArguments"]["num_train_epochs"] == 1


def test_model_card_carries_the_results(demo_run):
    output_dir, _ = demo_run
    card = ModelCard.load(output_dir / "README.md")
    results = json.loads((output_dir / "test_results.json").read_text())
    by_type = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert by_type["accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-4)
    assert by_type["f1"] == pytest.approx(results["test_macro_f1"], abs=1e-4)
    assert "digits_lt" in card.text and "| 9 |" in card.text


def test_saved_model_runs_in_a_pipeline(demo_run):
    from transformers import pipeline

    import aduni_hf  # noqa: F401  (registers the Auto classes)

    output_dir, _ = demo_run
    classifier = pipeline("image-classification", model=str(output_dir), device="cpu")
    predictions = classifier(Image.new("RGB", (8, 8), color=(30, 30, 30)), top_k=3)
    assert len(predictions) == 3 and {p["label"] for p in predictions} <= {str(c) for c in range(10)}
