"""push_to_hub uploads the final model folder with OUR model card, once, after the run is saved (the Hub client
is faked at the huggingface_hub API boundary: no network)."""

from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.utils import filter_repo_objects

from aduni_hf.recipes import ARGUMENT_CLASSES, parse_recipe, run_training

REPO = Path(__file__).resolve().parents[2]


class FakeHubApi:
    """The huggingface_hub client as aduni_hf.hub.push uses it; records what would be uploaded (no network)."""

    created: list = []
    uploads: list = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, private=None, exist_ok=False):
        FakeHubApi.created.append(repo_id)
        return repo_id

    def upload_folder(
        self, repo_id, folder_path, allow_patterns=None, ignore_patterns=None, commit_message=""
    ):
        folder = Path(folder_path)
        every = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
        chosen = filter_repo_objects(every, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns)
        FakeHubApi.uploads.append((repo_id, {name: (folder / name).read_bytes() for name in chosen}))
        return f"https://huggingface.co/{repo_id}/commit/0"


@pytest.mark.slow
def test_push_uploads_the_results_card(tmp_path, monkeypatch):
    api = FakeHubApi
    monkeypatch.setattr("aduni_hf.hub.push.HfApi", FakeHubApi)
    arguments = parse_recipe(
        ARGUMENT_CLASSES,
        [str(REPO / "configs" / "demo.yaml"), "--num_train_epochs", "1", "--output_dir", str(tmp_path / "out"),
         "--push_to_hub", "true", "--hub_model_id", "someone/aduni-demo", "--image_size", "16",
         "--save_strategy", "epoch"],
    )  # fmt: skip
    results = run_training(*arguments)
    assert api.created[-1] == "someone/aduni-demo"
    repo_id, files = api.uploads[-1]
    assert repo_id == "someone/aduni-demo"
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "configuration_aduni.py",
                 "modeling_aduni.py", "README.md", "test_results.json"):  # fmt: skip
        assert name in files, name
    assert (tmp_path / "out" / "checkpoint-8").is_dir()  # saved locally, not uploaded
    assert not [
        name for name in files if name.startswith(("checkpoint-", "_")) or name == "training_args.bin"
    ]
    assert "figures/confusion_matrix.png" in files
    card_path = tmp_path / "card.md"
    card_path.write_bytes(files["README.md"])
    card = ModelCard.load(card_path)
    accuracy = next(r.metric_value for r in card.data.eval_results if r.metric_type == "accuracy")
    assert accuracy == pytest.approx(results["test_accuracy"], abs=1e-4)
    assert "someone/aduni-demo" in card.text


@pytest.mark.slow
def test_without_network_the_push_fails_clearly_after_the_run_is_saved(tmp_path):
    """HF_HUB_OFFLINE=1 (set for every test) stands for no network: the real Hub client refuses."""
    from aduni_hf.hub.push import PushError

    output_dir = tmp_path / "out"
    arguments = parse_recipe(
        ARGUMENT_CLASSES,
        [str(REPO / "configs" / "demo.yaml"), "--max_steps", "2", "--output_dir", str(output_dir),
         "--push_to_hub", "true", "--hub_model_id", "someone/offline", "--image_size", "16", "--figures", "false"],
    )  # fmt: skip
    with pytest.raises(PushError, match="Nothing is lost") as failure:
        run_training(*arguments)
    assert "someone/offline" in str(failure.value) and str(output_dir) in str(failure.value)
    for name in ("model.safetensors", "README.md", "test_results.json"):
        assert (output_dir / name).is_file(), name
