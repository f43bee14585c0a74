"""Pushing to the Hub, faked at the huggingface_hub API boundary (tests/training/fake_hub.py: no network):

- the finished run is uploaded with OUR model card, after everything is saved;
- `hub_strategy` as transformers documents it: `every_save` uploads the model at each save, `checkpoint` also the
  checkpoint to `last-checkpoint/`, `all_checkpoints` to `checkpoint-N/`, `end` nothing before the end; each push
  in the background, each README ours (never the Trainer's draft), no lock file, token or selection weights;
- a pushed checkpoint read back is whole (its run record's files) and one save (its manifest), or is refused;
- without network: pushing while training fails before training; `end` fails after everything is saved.
"""

import json
import logging
import shutil
import threading
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from transformers import TrainerCallback
from transformers.trainer_utils import HubStrategy

from aduni_hf.hub.push import (
    PUSH_MANIFEST_NAME,
    CheckpointPusher,
    HubLocation,
    PushError,
    download_folder,
    manifest_problems,
)
from aduni_hf.recipes import ARGUMENT_CLASSES, parse_recipe, run_training
from aduni_hf.recipes.errors import RecipeError, RunFolderError
from aduni_hf.recipes.run_folder import prepare_output_dir
from aduni_hf.training.checkpoints import RUN_RECORD_NAME, checkpoint_problems, expected_files
from tests.tiny_run import TINY_RUN
from tests.training.fake_hub import FakeHubApi, install
from tests.training.trainer_helpers import digits_splits, make_trainer

__all__ = ["FakeHubApi"]  # other tests take the fake from here

pytestmark = pytest.mark.slow  # end-to-end runs (a training run in a fixture)


REPO = Path(__file__).resolve().parents[2]
SECRET = "hf_NeverPushThisTokenAnywhere0123456789"
# 4 optimiser steps of 16 images with the tiny encoder (what is pushed is tested, not the model), a checkpoint
# every 2 (steps 2 and 4), no validation: a few seconds of training.
SHORT = ["--max_steps", "4", "--per_device_train_batch_size", "16", *TINY_RUN, "--eval_strategy", "no",
         "--save_strategy", "steps", "--save_steps", "2", "--figures", "false"]  # fmt: skip


def recipe(output_dir: Path, *flags: str):
    return parse_recipe(
        ARGUMENT_CLASSES, [str(REPO / "configs" / "demo.yaml"), *SHORT, "--output_dir", str(output_dir), *flags]
    )


def is_our_card(text: bytes) -> bool:
    """Our cards (the results card and the training card) are tagged `aduni`; the Trainer's draft is tagged
    `generated_from_trainer` and says the model is "a fine-tuned version of" something."""
    card = ModelCard(text.decode())
    tags = card.data.tags or []
    return "aduni" in tags and "generated_from_trainer" not in tags and "fine-tuned version of" not in card.text


def check_every_push(repo_id: str) -> list[dict]:
    """What every commit of `repo_id` must be: READMEs ours, no hidden file, no token, no pickled arguments or
    selection weights at a run's level (a checkpoint holds training_args.bin: the Trainer resumes from it)."""
    commits = FakeHubApi.commits(repo_id)
    store = FakeHubApi.repo_dir(repo_id) / "revisions"
    for commit in commits:
        for name in commit["files"]:
            content = (store / commit["revision"] / name).read_bytes()
            assert SECRET.encode() not in content, name
            parts = name.split("/")
            assert not any(part.startswith(".") for part in parts), name
            if parts[-1] == "README.md":
                assert is_our_card(content), (commit["message"], name)
            in_checkpoint = any(part == "last-checkpoint" or part.startswith("checkpoint-") for part in parts)
            if not in_checkpoint:
                assert parts[-1] not in ("training_args.bin", "best_validation.safetensors"), name
    return commits


@pytest.fixture(scope="module")
def pushed_run(tmp_path_factory):
    """A short run pushing its checkpoints to `last-checkpoint/`, with the validation on (selection carried)."""
    base = tmp_path_factory.mktemp("pushed")
    patch = pytest.MonkeyPatch()
    install(patch.setattr, base / "hub")
    try:
        # hub_always_push: every save is pushed, however slow this machine is (the default skips a save while
        # the previous push still uploads, which would make the sequence below depend on timing).
        results = run_training(*recipe(base / "run", "--push_to_hub", "true", "--hub_model_id", "someone/pushed",
                                       "--hub_strategy", "checkpoint", "--hub_always_push", "true",
                                       "--eval_strategy", "steps", "--eval_steps", "2",
                                       "--hub_token", SECRET))  # fmt: skip
    finally:
        patch.undo()
    return base, results


@pytest.mark.slow
def test_checkpoint_strategy_pushes_each_checkpoint_in_the_background_with_our_card(pushed_run):
    base, results = pushed_run
    FakeHubApi.store = base / "hub"
    commits = check_every_push("someone/pushed")
    messages = [c["message"] for c in commits]
    assert messages == ["Training in progress, step 2, checkpoint", "Training in progress, step 2",
                        "Training in progress, step 4, checkpoint", "Training in progress, step 4",
                        "AdUni, aduni, test fold 0"]  # fmt: skip
    assert [c["background"] for c in commits] == [True, True, True, True, False]  # uploads never block training
    record = json.loads((base / "run" / "checkpoint-4" / RUN_RECORD_NAME).read_text())
    for commit in (commits[0], commits[2]):
        pushed = {name.removeprefix("last-checkpoint/") for name in commit["files"]}
        assert set(expected_files(record)) <= pushed  # every file the checkpoint holds once whole
        assert PUSH_MANIFEST_NAME in pushed and "best_validation.safetensors" in pushed  # the selection travels
    assert {"README.md", "model.safetensors", "config.json", "modeling_aduni.py"} <= set(commits[1]["files"])
    card = ModelCard((FakeHubApi.repo_dir("someone/pushed") / "revisions" / "2" / "README.md").read_text())
    assert "training in progress" in card.text and "hub:someone/pushed/last-checkpoint" in card.text
    final = FakeHubApi.files("someone/pushed")
    accuracy = next(r.metric_value for r in ModelCard(final["README.md"].read_text()).data.eval_results
                    if r.metric_type == "accuracy")  # fmt: skip
    assert accuracy == pytest.approx(results["test_accuracy"], abs=1e-4)  # the results card replaced ours at the end


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["every_save", "all_checkpoints", "end"])
def test_each_hub_strategy_pushes_what_transformers_documents(tmp_path, monkeypatch, strategy):
    install(monkeypatch.setattr, tmp_path / "hub")
    repo = f"someone/{strategy}"
    run_training(*recipe(tmp_path / "run", "--push_to_hub", "true", "--hub_model_id", repo, "--hub_strategy",
                         strategy, "--hub_always_push", "true"))  # fmt: skip
    commits = check_every_push(repo)
    folders = {name.split("/")[0] for c in commits for name in c["files"] if "/" in name}
    during = [c for c in commits if c["message"].startswith("Training in progress")]
    if strategy == "end":
        assert during == [] and len(commits) == 1  # pushed once, when training has ended
    elif strategy == "every_save":
        assert [c["message"] for c in during] == ["Training in progress, step 2", "Training in progress, step 4"]
        assert folders <= {"figures"}  # the model at each save, no training state
    else:
        assert {"checkpoint-2", "checkpoint-4"} <= folders and "last-checkpoint" not in folders
    assert "test_results.json" in commits[-1]["files"] and not commits[-1]["background"]


@pytest.mark.slow
def test_a_checkpoint_read_back_is_whole_and_one_save(pushed_run, tmp_path, monkeypatch):
    base, _ = pushed_run
    install(monkeypatch.setattr, base / "hub")
    folder = download_folder(HubLocation("someone/pushed", "last-checkpoint"), tmp_path / "download")
    assert checkpoint_problems(folder) == [] and manifest_problems(folder) == []

    # Another machine: an empty output_dir resumes the Hub's checkpoint, with the reported model chosen so far.
    output_dir = tmp_path / "machine_b"
    checkpoint = prepare_output_dir(output_dir, "hub:someone/pushed/last-checkpoint", False)
    assert checkpoint == output_dir / "checkpoint-4" and checkpoint_problems(checkpoint) == []
    assert (output_dir / "best_validation.json").read_text() == (base / "run" / "best_validation.json").read_text()
    assert not (output_dir / "_hub_download").exists()
    # The same command again there: its own checkpoint is as new as the Hub's, and nothing is downloaded again.
    assert prepare_output_dir(output_dir, "hub:someone/pushed/last-checkpoint", False) == checkpoint


@pytest.mark.slow
def test_a_torn_or_incomplete_checkpoint_on_the_hub_is_refused_naming_the_file(pushed_run, tmp_path, monkeypatch):
    base, _ = pushed_run
    install(monkeypatch.setattr, base / "hub")
    api = FakeHubApi()
    # A push cut between two commits: last-checkpoint/ holds the optimiser of step 2 beside the rest of step 4.
    torn = tmp_path / "torn"
    shutil.copytree(FakeHubApi.head("someone/pushed") / "last-checkpoint", torn)
    shutil.copyfile(FakeHubApi.repo_dir("someone/pushed") / "revisions" / "1" / "last-checkpoint" / "optimizer.pt",
                    torn / "optimizer.pt")  # fmt: skip
    api.upload_folder(repo_id="someone/torn", folder_path=str(torn), path_in_repo="last-checkpoint")
    torn_message = "not one whole checkpoint: optimizer.pt is not the file that was pushed"
    with pytest.raises(RunFolderError, match=torn_message):
        prepare_output_dir(tmp_path / "b1", "hub:someone/torn/last-checkpoint", False)
    assert not (tmp_path / "b1" / "checkpoint-4").exists() and not (tmp_path / "b1" / "_hub_download").exists()

    # A checkpoint uploaded by another tool (no manifest) without its scheduler: the run record's list refuses it.
    incomplete = tmp_path / "incomplete"
    shutil.copytree(FakeHubApi.head("someone/pushed") / "last-checkpoint", incomplete)
    (incomplete / "scheduler.pt").unlink()
    (incomplete / PUSH_MANIFEST_NAME).unlink()
    api.upload_folder(repo_id="someone/incomplete", folder_path=str(incomplete), path_in_repo="last-checkpoint")
    with pytest.raises(RunFolderError, match="cannot resume from .*checkpoint-4: no scheduler.pt"):
        prepare_output_dir(tmp_path / "b2", "hub:someone/incomplete/last-checkpoint", False)


def test_a_save_while_a_push_uploads_is_skipped_and_a_failed_push_is_said(tmp_path, monkeypatch, caplog):
    """The Trainer's rules (a save while the previous push still uploads is not pushed unless hub_always_push;
    training never waits for or fails with an upload), and what it leaves unsaid: both are logged."""
    install(monkeypatch.setattr, tmp_path / "hub")
    release = threading.Event()

    def slow_then_failing(self, **kwargs):
        release.wait(120)
        raise ConnectionError("the network went away")

    class ReleaseAfterStep2(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 2:
                release.set()

    monkeypatch.setattr(FakeHubApi, "upload_folder", slow_then_failing)
    caplog.set_level(logging.WARNING, logger="aduni_hf")
    trainer = make_trainer(tmp_path, digits_splits(), epochs=1, save_strategy="steps", save_steps=1,
                           callbacks=[ReleaseAfterStep2()])  # fmt: skip
    trainer.hub_pusher = CheckpointPusher("someone/flaky", "checkpoint")
    trainer.args.push_to_hub, trainer.args.hub_strategy = True, HubStrategy.CHECKPOINT
    trainer.init_hf_repo()
    trainer.train()  # 3 steps, a save at each: 1 pushed (blocked, then failing), 2 skipped, 3 pushed (failing)
    FakeHubApi._pool.submit(lambda: None).result()  # the failed jobs' callbacks have run
    log = caplog.text
    assert "checkpoint-2 is not pushed: the previous push to someone/flaky is still uploading" in log
    for name in ("checkpoint-1", "checkpoint-3"):
        assert f"the push of {name} to someone/flaky failed (ConnectionError: the network went away)" in log
    assert trainer.state.global_step == 3 and (tmp_path / "run" / "checkpoint-3" / "trainer_state.json").is_file()


def test_a_hub_location_that_names_no_checkpoint_is_refused_naming_the_field(tmp_path, monkeypatch):
    install(monkeypatch.setattr, tmp_path / "hub")
    with pytest.raises(RunFolderError, match=r"resume_from_checkpoint='hub:someone': expected hub:<owner>/<name>/"):
        prepare_output_dir(tmp_path / "a", "hub:someone", False)
    FakeHubApi().create_repo("someone/empty")
    with pytest.raises(RunFolderError, match="hub:someone/empty/last-checkpoint: cannot read its trainer_state.json"):
        prepare_output_dir(tmp_path / "b", "hub:someone/empty/last-checkpoint", False)


def test_a_two_stage_method_refuses_to_push_checkpoints_before_reading_data(tmp_path, monkeypatch):
    install(monkeypatch.setattr, tmp_path / "hub")
    arguments = recipe(tmp_path / "run", "--method", "decouple", "--push_to_hub", "true", "--hub_model_id",
                       "someone/decouple", "--hub_strategy", "checkpoint")  # fmt: skip
    with pytest.raises(RecipeError, match="hub_strategy='checkpoint': method 'decouple' trains in 2 stages"):
        run_training(*arguments)
    assert FakeHubApi.commits("someone/decouple") == [] and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_push_uploads_the_results_card(tmp_path, monkeypatch):
    api = install(monkeypatch.setattr, tmp_path / "hub")
    arguments = parse_recipe(
        ARGUMENT_CLASSES,
        [str(REPO / "configs" / "demo.yaml"), "--num_train_epochs", "1", "--output_dir", str(tmp_path / "out"),
         "--push_to_hub", "true", "--hub_model_id", "someone/aduni-demo", *TINY_RUN,
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
    during = check_every_push("someone/aduni-demo")[:-1]  # every_save (the default): the model at the epoch's save
    assert [c["message"] for c in during] == ["Training in progress, epoch 1"]


@pytest.mark.slow
def test_without_network_pushing_while_training_fails_before_training(tmp_path):
    """HF_HUB_OFFLINE=1 (set for every test) stands for no network: the real Hub client refuses."""
    output_dir = tmp_path / "out"
    arguments = recipe(output_dir, "--push_to_hub", "true", "--hub_model_id", "someone/offline")
    with pytest.raises(PushError, match="before training: .*Nothing has been trained yet.*--hub_strategy end"):
        run_training(*arguments)
    assert not list(output_dir.glob("checkpoint-*")) and not (output_dir / "model.safetensors").exists()


@pytest.mark.slow
def test_without_network_the_push_fails_clearly_after_the_run_is_saved(tmp_path):
    """With `hub_strategy end` nothing is pushed before the end: the run is saved, then the push fails clearly."""
    output_dir = tmp_path / "out"
    arguments = recipe(output_dir, "--push_to_hub", "true", "--hub_model_id", "someone/offline",
                       "--hub_strategy", "end")  # fmt: skip
    with pytest.raises(PushError, match="Nothing is lost") as failure:
        run_training(*arguments)
    assert "someone/offline" in str(failure.value) and str(output_dir) in str(failure.value)
    for name in ("model.safetensors", "README.md", "test_results.json"):
        assert (output_dir / name).is_file(), name
