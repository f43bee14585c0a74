"""push_to_hub uploads the whole output_dir with OUR model card (the Hub client is faked: no network)."""

from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub import ModelCard

from aduni_hf.training import ARGUMENT_CLASSES, parse_recipe, run_training

REPO = Path(__file__).resolve().parents[2]


class FakeHubApi:
    """Records what the Trainer would send to the Hub."""

    def __init__(self):
        self.created, self.uploads = [], []

    def create_repo(self, repo_id, **kwargs):
        self.created.append(repo_id)
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, repo_id, folder_path, run_as_future=False, ignore_patterns=(), **kwargs):
        folder = Path(folder_path)
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        self.uploads.append((repo_id, files))
        if run_as_future:
            future = Future()
            future.set_result(None)
            return future
        return None


@pytest.mark.slow
def test_push_uploads_the_results_card(tmp_path, monkeypatch):
    api = FakeHubApi()
    monkeypatch.setattr("transformers.trainer.hf_api", lambda: api)
    arguments = parse_recipe(
        ARGUMENT_CLASSES,
        [str(REPO / "configs" / "demo.yaml"), "--num_train_epochs", "1", "--output_dir", str(tmp_path / "out"),
         "--push_to_hub", "true", "--hub_model_id", "someone/aduni-demo", "--image_size", "16"],
    )  # fmt: skip
    results = run_training(*arguments)
    assert api.created == ["someone/aduni-demo"]
    repo_id, files = api.uploads[-1]
    assert repo_id == "someone/aduni-demo"
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "configuration_aduni.py",
                 "modeling_aduni.py", "README.md", "test_results.json"):  # fmt: skip
        assert name in files, name
    card_path = tmp_path / "card.md"
    card_path.write_bytes(files["README.md"])
    card = ModelCard.load(card_path)
    accuracy = next(r.metric_value for r in card.data.eval_results if r.metric_type == "accuracy")
    assert accuracy == pytest.approx(results["test_accuracy"], abs=1e-4)
    assert "someone/aduni-demo" in card.text
