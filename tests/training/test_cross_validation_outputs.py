"""A cross-validation's summary card, figures and push: the card parses with huggingface_hub and carries the CV
means, its recipe table is the folds' recipe in force and its usage snippet loads a fold's model; the push uploads
the summary, the remote code and the folds' final models only (the Hub client faked at the huggingface_hub API
boundary); without network it fails clearly after everything is saved."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard
from PIL import Image

from aduni_hf.hub.push import REMOTE_CODE_FILES, PushError
from aduni_hf.recipes import ARGUMENT_CLASSES, parse_recipe
from aduni_hf.recipes.cross_validation import CV_MARKDOWN_NAME, CrossValidationArguments, run_cross_validation
from tests.card_helpers import check_recipe_table, recipe_table, usage_snippet
from tests.tiny_run import TINY_RUN
from tests.training.fake_hub import FakeHubApi, install
from tests.training.test_cli import DEMO

pytestmark = pytest.mark.slow  # end-to-end runs (a training run in a fixture)


# The tiny encoder: the outputs are tested, not the model (the card names whichever backbone was trained).
QUICK = [*TINY_RUN, "--max_steps", "2", "--per_device_train_batch_size", "16", "--logging_strategy",
         "steps", "--logging_steps", "1", "--save_strategy", "steps", "--save_steps", "1"]  # fmt: skip


def _cross_validate(output_dir, *flags):
    *recipe, _ = parse_recipe(
        (*ARGUMENT_CLASSES, CrossValidationArguments),
        [str(DEMO), *QUICK, "--output_dir", str(output_dir), *flags],
    )
    return run_cross_validation(*recipe, folds=[0])


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    base = tmp_path_factory.mktemp("cv")
    output_dir = base / "demo_cv"
    patch = pytest.MonkeyPatch()
    install(patch.setattr, base / "hub")
    try:
        results = _cross_validate(
            output_dir, "--push_to_hub", "true", "--hub_model_id", "someone/aduni-demo-cv"
        )
    finally:
        patch.undo()
    return output_dir, results


def test_the_summary_card_parses_and_carries_the_cross_validation_means(pushed):
    output_dir, results = pushed
    card = ModelCard.load(output_dir / "README.md")
    values = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert values["accuracy"] == pytest.approx(results["mean"]["accuracy"], abs=1e-4)
    assert values["f1"] == pytest.approx(results["mean"]["macro_f1"], abs=1e-4)
    assert "Research use only" in card.text and "not medical images" in card.text  # the demo data's caveat
    assert "best validation" in card.text  # every reported model, not only the last epoch's
    assert "## Use" in card.text and "## Training recipe (every fold)" in card.text
    for figure in ("per_class_f1.png", "tsne_aduni.png", "confusion_aduni.png", "class_loss_aduni.png"):
        assert (output_dir / "figures" / figure).is_file()
        assert f"figures/{figure}" in card.text
    assert sorted(path.name for path in output_dir.iterdir()) == sorted([  # as the README lists them
        "README.md", "cv_recipe.json", "cv_results.json", CV_MARKDOWN_NAME, "figures", "fold_0", *REMOTE_CODE_FILES
    ])  # fmt: skip


def test_the_recipe_table_is_the_folds_recipe_in_force(pushed):
    """Every value of the summary card's recipe table is the one in force in the fold's run_config.yaml (SGD and
    the official schedule, not the Trainer's optim and scheduler; max_steps, which overrides the epochs), and the
    fold's own card shows the same table."""
    output_dir, _ = pushed
    table = recipe_table(ModelCard.load(output_dir / "README.md").text)
    check_recipe_table(table, yaml.safe_load((output_dir / "fold_0" / "run_config.yaml").read_text()))
    assert table["epochs"] == "2 optimiser steps (max_steps)"
    assert table["optimiser"] == "SGD, lr 0.1, momentum 0.9, weight decay 0.0001 (all parameters)"
    assert recipe_table(ModelCard.load(output_dir / "fold_0" / "README.md").text) == table


def test_the_usage_snippet_loads_a_fold_from_the_hub_id(pushed, tmp_path):
    """Both cards load fold 0 from the experiment's repository with `subfolder`; the summary card's snippet, run
    as printed on the local folder (its Hub id replaced by the path) without aduni_hf, classifies an image."""
    output_dir, _ = pushed
    summary, fold = (ModelCard.load(path / "README.md").text for path in (output_dir, output_dir / "fold_0"))
    snippet = usage_snippet(summary)
    assert snippet == usage_snippet(fold)
    assert '"someone/aduni-demo-cv", subfolder="fold_0", trust_remote_code=True' in snippet
    Image.new("RGB", (16, 16), color=(40, 90, 160)).save(tmp_path / "image.png")
    local = snippet.replace("someone/aduni-demo-cv", str(output_dir))
    check = 'print(classifier("image.png"))\nassert "aduni_hf" not in sys.modules\n'
    result = subprocess.run(
        [sys.executable, "-c", f"import sys\n{local}{check}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "PYTHONPATH": ""},  # the remote code of the folder, not the installed package
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'label': '" in result.stdout and "'score': " in result.stdout


def test_the_push_uploads_the_summary_and_the_final_fold_models_only(pushed):
    output_dir, _ = pushed
    repo_id, uploaded = FakeHubApi.uploads[-1]
    files = sorted(uploaded)
    assert repo_id == "someone/aduni-demo-cv"
    for name in ("README.md", "cv_results.json", CV_MARKDOWN_NAME, "figures/per_class_f1.png", *REMOTE_CODE_FILES,
                 "fold_0/model.safetensors", "fold_0/config.json", "fold_0/modeling_aduni.py",
                 "fold_0/test_results.json", "fold_0/README.md"):  # fmt: skip
        assert name in files, name
    assert (output_dir / "fold_0" / "checkpoint-2").is_dir()
    assert not [f for f in files if "checkpoint" in f or f.endswith("best_validation.safetensors")]


def test_without_network_the_push_fails_clearly_after_everything_is_saved(tmp_path):
    output_dir = tmp_path / "offline_cv"
    with pytest.raises(PushError, match="Nothing is lost") as failure:
        _cross_validate(output_dir, "--push_to_hub", "true", "--hub_model_id", "someone/offline", "--hub_strategy", "end")
    assert "someone/offline" in str(failure.value)
    results = json.loads((output_dir / "cv_results.json").read_text())  # HF_HUB_OFFLINE=1 in the tests
    assert sorted(results["folds"]) == ["0"] and (output_dir / "README.md").is_file()


def test_the_figures_script_draws_across_cross_validations(pushed, tmp_path):
    import os
    import subprocess
    import sys

    output_dir, _ = pushed
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, str(root / "scripts" / "figures.py"), str(output_dir), "--output", str(tmp_path / "figs")],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)}, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    names = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert names == ["class_loss_aduni.png", "confusion_aduni.png", "per_class_f1.png", "tsne_aduni.png"]
    assert all((tmp_path / "figs" / name).stat().st_size > 10_000 for name in names)  # drawn, not empty
