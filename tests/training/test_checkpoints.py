"""The run folder's rules, the method-state hook, the numerical guard, and what is never written or loaded unsafely.

The end-to-end kill-and-resume runs are in test_resume.py; these run the same code in-process on tiny trainers.
"""

import ast
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from aduni_hf import AduCLoss, AdUniForImageClassification
from aduni_hf.recipes.run_folder import RunFolderError, check_resume, prepare_output_dir, run_record
from aduni_hf.training import AdUniTrainingArguments, NonFiniteTrainingError
from aduni_hf.training.checkpoints import (
    FILES_KEY,
    METHOD_STATE_NAME,
    RUN_RECORD_NAME,
    checkpoint_files,
    last_checkpoint,
)
from aduni_hf.training.guard import FAILURE_NAME
from tests.training.trainer_helpers import NUM_TRAIN, RecordingViews, digits_splits, make_trainer

REPO = Path(__file__).resolve().parents[2]
SECRET = "hf_NotARealTokenButSecretAll0f1t"


def make_checkpoint(folder: Path, step: int, complete: bool = True, record: dict | None = None) -> Path:
    """A checkpoint with every file its record lists, each readable as what it is (complete=False: no record)."""
    checkpoint = folder / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    record = record if record is not None else {"fields": {}, "data": {}, "num_processes": 1}
    files = checkpoint_files(record["fields"].get("save_only_model", False), record["num_processes"], False)
    for name in files:
        path = checkpoint / name
        if name == RUN_RECORD_NAME:
            if complete:
                path.write_text(json.dumps({**record, FILES_KEY: files}))
        elif path.suffix == ".json":
            path.write_text("{}")
        elif path.suffix == ".safetensors":
            safetensors.torch.save_file({"weight": torch.zeros(2)}, str(path))
        else:
            torch.save({"state": 1}, path)
    return checkpoint


# ---- the run folder ------------------------------------------------------------------------------------------
def test_last_checkpoint_is_the_highest_complete_one(tmp_path):
    make_checkpoint(tmp_path, 8)
    make_checkpoint(tmp_path, 30)
    make_checkpoint(tmp_path, 40, complete=False)  # e.g. copied half-way
    (make_checkpoint(tmp_path, 45) / "trainer_state.json").write_text('{"log_history": [')  # killed mid-write
    (tmp_path / "tmp-checkpoint-50").mkdir()
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-30"
    assert last_checkpoint(tmp_path / "missing") is None


def test_fresh_folder_starts_fresh_and_interrupted_one_resumes(tmp_path):
    assert prepare_output_dir(tmp_path / "new", None, overwrite=False) is None
    assert (tmp_path / "new").is_dir()
    make_checkpoint(tmp_path / "run", 12)
    make_checkpoint(tmp_path / "run", 24)
    (tmp_path / "run" / "tmp-checkpoint-36").mkdir()  # a save killed before this version's ordered writes
    (make_checkpoint(tmp_path / "run", 48) / "trainer_state.json").unlink()  # killed before the Trainer's last file
    assert prepare_output_dir(tmp_path / "run", None, overwrite=False) == tmp_path / "run" / "checkpoint-24"
    assert not (tmp_path / "run" / "tmp-checkpoint-36").exists()
    assert not (tmp_path / "run" / "checkpoint-48").exists()  # removed: rotation and resume never see it


def test_explicit_checkpoint_must_be_complete(tmp_path):
    explicit = make_checkpoint(tmp_path / "old", 5)
    assert prepare_output_dir(tmp_path / "run", str(explicit), overwrite=False) == explicit
    broken = make_checkpoint(tmp_path / "old", 6, complete=False)
    with pytest.raises(RunFolderError, match=r"cannot resume from .*checkpoint-6: no readable aduni_run.json"):
        prepare_output_dir(tmp_path / "run", str(broken), overwrite=False)
    with pytest.raises(RunFolderError, match="nowhere: the folder does not exist"):
        prepare_output_dir(tmp_path / "run", str(tmp_path / "nowhere"), overwrite=False)


def test_finished_run_is_refused_and_overwrite_clears_it(tmp_path):
    run = tmp_path / "run"
    make_checkpoint(run, 10)
    (run / "test_results.json").write_text(json.dumps({"test_accuracy": 0.9, "test_macro_f1": 0.8}))
    (run / "all_results.json").write_text("{}")
    (run / FAILURE_NAME).write_text("{}")
    (run / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match=r"holds a finished run .*accuracy 0.9000, macro-F1 0.8000.*"
                                             r"--overwrite_output_dir true"):  # fmt: skip
        prepare_output_dir(run, None, overwrite=False)
    with pytest.raises(RunFolderError, match=r"holds a finished run"):
        prepare_output_dir(run, str(run / "checkpoint-10"), overwrite=False)
    with pytest.raises(RunFolderError, match="give one of them"):
        prepare_output_dir(run, str(run / "checkpoint-10"), overwrite=True)
    assert prepare_output_dir(run, None, overwrite=True) is None
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]  # the user's own files stay


def test_unwritable_output_dir_fails_naming_it(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(RunFolderError, match=r"output_dir='.*a_file/out' is not writable"):
        prepare_output_dir(blocker / "out", None, overwrite=False)


def record(**changes) -> dict:
    recipe = {
        "DataArguments": {"dataset": "digits_lt", "dataset_path": "/data/a", "test_fold": 0,
                          "augmentation_device": "loader"},
        "MethodArguments": {"method": "aduni", "alpha_decay": 22},
        "AdUniTrainingArguments": {"seed": 0, "per_device_train_batch_size": 64, "num_train_epochs": 30.0,
                                   "dataloader_num_workers": 0, "output_dir": "/runs/a"},
    }  # fmt: skip
    for group in recipe.values():
        for name in group:
            group[name] = changes.pop(name, group[name])
    data = {"class_names": ["a", "b"], "digest": changes.pop("digest", "abc"), "num_images": {"train": 10}}
    return run_record(recipe, data, num_processes=changes.pop("num_processes", 1))


def test_resume_allows_place_workers_and_length_and_notes_the_length(tmp_path):
    checkpoint = make_checkpoint(tmp_path, 100, record=record())
    same_elsewhere = record(dataset_path="/moved/a", output_dir="/runs/b", dataloader_num_workers=2)
    assert check_resume(checkpoint, same_elsewhere) == []
    assert check_resume(checkpoint, record(num_train_epochs=40.0)) == ["num_train_epochs changed from 30.0 to 40.0"]


def test_resume_reads_a_field_added_later_as_the_value_that_reproduces_the_older_run(tmp_path):
    older = record()
    del older["fields"]["augmentation_device"]  # written before the field existed: its views came from the loader
    checkpoint = make_checkpoint(tmp_path, 100, record=older)
    assert check_resume(checkpoint, record(augmentation_device="loader")) == []
    with pytest.raises(RunFolderError, match="augmentation_device: 'loader' in the checkpoint, 'device' now"):
        check_resume(checkpoint, record(augmentation_device="device"))


def test_resume_refuses_fields_that_change_the_result(tmp_path):
    checkpoint = make_checkpoint(tmp_path, 100, record=record())
    with pytest.raises(RunFolderError) as error:
        check_resume(checkpoint, record(method="ce", test_fold=2, seed=1, per_device_train_batch_size=32))
    message = str(error.value)
    for line in ("method: 'aduni' in the checkpoint, 'ce' now", "test_fold: 0 in the checkpoint, 2 now",
                 "seed: 0 in the checkpoint, 1 now", "per_device_train_batch_size: 64 in the checkpoint, 32 now"):
        assert line in message  # fmt: skip
    assert "--overwrite_output_dir true" in message
    with pytest.raises(RunFolderError, match="number of processes: 1 in the checkpoint, 2 now"):
        check_resume(checkpoint, record(num_processes=2))
    with pytest.raises(RunFolderError, match="data set: its digest differ"):
        check_resume(checkpoint, record(digest="other"))


@pytest.fixture(scope="module")
def splits():
    return digits_splits()


# ---- method state ---------------------------------------------------------------------------------------------
class QueueAduC(AduCLoss):
    """AduC plus a FIFO queue of detached features and a step counter: training state like PaCo's."""

    def __init__(self, *args, queue_size: int = 8, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("queue", torch.zeros(queue_size, 128))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def from_outputs(self, outputs, labels):
        with torch.no_grad():
            self.queue = torch.cat([outputs.features.detach(), self.queue])[: len(self.queue)]
            self.steps += 1
        return super().from_outputs(outputs, labels)


def queue_loss(splits):
    labels = splits.train.select(range(NUM_TRAIN))["label"]
    return QueueAduC(10, class_counts=np.bincount(labels, minlength=10).tolist())


@pytest.mark.slow
def test_method_state_is_saved_with_the_checkpoint_and_restored(tmp_path, splits):
    save = dict(epochs=2, save_strategy="steps", save_steps=4)
    uninterrupted = make_trainer(tmp_path / "a", splits, loss_fn=queue_loss(splits), **save)
    uninterrupted.train()
    checkpoint = tmp_path / "a" / "run" / "checkpoint-4"
    saved = safetensors.torch.load_file(checkpoint / METHOD_STATE_NAME)
    assert saved.keys() == {"queue", "steps"} and saved["steps"].item() == 4

    resumed = make_trainer(tmp_path / "b", splits, loss_fn=queue_loss(splits), **save)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.loss_fn.steps.item() == uninterrupted.loss_fn.steps.item() == 6
    torch.testing.assert_close(resumed.loss_fn.queue, uninterrupted.loss_fn.queue, rtol=0, atol=1e-6)
    for (name, a), b in zip(uninterrupted.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)

    (checkpoint / METHOD_STATE_NAME).unlink()
    again = make_trainer(tmp_path / "c", splits, loss_fn=queue_loss(splits), **save)
    with pytest.raises(FileNotFoundError, match=r"no method_state.safetensors: the state of method QueueAduC"):
        again.train(resume_from_checkpoint=str(checkpoint))


@pytest.mark.slow
def test_stateless_methods_write_no_method_state(tmp_path, splits):
    trainer = make_trainer(tmp_path, splits, epochs=1, save_strategy="steps", save_steps=2)
    trainer.train()
    checkpoint = tmp_path / "run" / "checkpoint-2"
    assert (checkpoint / RUN_RECORD_NAME).is_file()
    assert not (checkpoint / METHOD_STATE_NAME).exists()


# ---- numerical guard -------------------------------------------------------------------------------------------
class PoisonedViews(RecordingViews):
    """The first draw of epoch 2 is all NaN: a corrupt sample arriving mid-training."""

    def __getitem__(self, key):
        item = super().__getitem__(key)
        if isinstance(key, tuple) and key.epoch == 1 and key.draw == 0:
            item["pixel_values"] = torch.full_like(item["pixel_values"], float("nan"))
        return item


@pytest.mark.slow
def test_poisoned_batch_stops_training_and_marks_the_run_failed(tmp_path, splits):
    trainer = make_trainer(tmp_path, splits, views_class=PoisonedViews, save_strategy="steps", save_steps=2)
    with pytest.raises(NonFiniteTrainingError) as error:
        trainer.train()  # 3 steps per epoch: step 4 is the first of epoch 2
    message = str(error.value)
    assert "non-finite loss (loss nan) at optimiser step 4, epoch 2/3, alpha" in message
    names = trainer.model.config.id2label
    counts = {names[c]: n for c, n in enumerate(trainer.guard.batch_labels.bincount(minlength=10).tolist())}
    assert f"batch class counts {counts}" in message
    run = tmp_path / "run"
    report = json.loads((run / FAILURE_NAME).read_text())
    assert report["step"] == 4 and report["epoch"] == 2 and report["error"] == "non-finite loss"
    assert report["alpha"] == pytest.approx(trainer.loss_fn.alpha) and sum(report["batch_class_counts"].values()) == 16
    assert report["last_checkpoint"] == str(run / "checkpoint-2")
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2"]  # nothing saved after it
    good = AdUniForImageClassification.from_pretrained(run / "checkpoint-2")
    assert all(torch.isfinite(t).all() for t in good.state_dict().values())


@pytest.mark.slow
def test_non_finite_gradient_with_a_finite_loss_stops_training(tmp_path, splits):
    trainer = make_trainer(tmp_path, splits, epochs=1)
    weight = trainer.model.classifier.dense.weight
    weight.register_hook(lambda grad: torch.where(grad == grad.max(), torch.inf, grad))
    with pytest.raises(NonFiniteTrainingError, match=r"non-finite gradient \(loss \d.*\) at optimiser step 1, "
                                                     r"epoch 1/1.*no checkpoint was saved before it"):  # fmt: skip
        trainer.train()
    assert json.loads((tmp_path / "run" / FAILURE_NAME).read_text())["last_checkpoint"] is None


# ---- nothing unsafe is written or loaded ---------------------------------------------------------------------
def test_every_torch_load_of_ours_is_weights_only():
    calls, paths = [], [*REPO.glob("aduni_hf/**/*.py"), *REPO.glob("scripts/*.py")]
    assert len(paths) > 40, "the scan is looking in the wrong place"
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
                if isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                    keywords = {k.arg: k.value for k in node.keywords}
                    safe = isinstance(keywords.get("weights_only"), ast.Constant) and keywords["weights_only"].value
                    calls.append((f"{path.relative_to(REPO)}:{node.lineno}", safe))
    assert all(safe for _, safe in calls), calls  # none left since timm loads pretrained weights itself


def test_training_arguments_pickle_and_dict_without_the_token(tmp_path):
    args = AdUniTrainingArguments(output_dir=str(tmp_path), hub_token=SECRET, use_cpu=True)
    assert args.hub_token == SECRET  # still usable for pushing in this process
    assert SECRET.encode() not in pickle.dumps(args)
    torch.save(args, tmp_path / "training_args.bin")
    assert SECRET.encode() not in (tmp_path / "training_args.bin").read_bytes()
    assert pickle.loads(pickle.dumps(args)).hub_token is None
    assert SECRET not in json.dumps(args.to_dict()) and SECRET not in repr(args)
