"""Two-stage methods (decouple = cRT, cicl) through `run_training`: one command trains both stages into one model
folder. What stage 2 does to the model (frozen encoder, re-initialised classifier, BatchNorm mode, an optimiser
over the classifier only), tau-normalisation chosen on the validation split, and a run interrupted in either stage
that the same command finishes exactly as an uninterrupted one, without training stage 1 again.

The runs: the demo recipe with timm's test network at 16x16 (TINY_RUN: the stages' mechanics are tested, not the
encoder), batch 16, `max_steps` capping each stage (docs: a quick run trains `max_steps` steps of every stage).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification

from aduni_hf import AdUniConfig, AdUniForImageClassification
from aduni_hf.data import SAMPLERS, FirstDraws, SingleViewDataset, build_sampler
from aduni_hf.evaluation import tau_norm as tau_norm_module
from aduni_hf.evaluation.tau_norm import TAUS, select_tau, tau_norm_evaluation, tau_norm_logits
from aduni_hf.losses import CrossEntropyLoss, SupConLoss
from aduni_hf.methods import METHODS, LossInputs
from aduni_hf.recipes import ARGUMENT_CLASSES, RecipeError, RunFolderError, parse_recipe, run_training
from aduni_hf.recipes.staged_training import (
    STAGE_FINISHED_NAME,
    fresh_classifier_weights,
    prepare_model,
    prepare_stage_dirs,
    resolve_stage,
    stage_dir,
)
from aduni_hf.training import AdUniTrainer
from tests.tiny_run import TINY_RUN
from tests.training.fake_hub import install
from tests.training.test_cli import DEMO as DEMO_PATH

pytestmark = pytest.mark.slow  # end-to-end runs (a training run in a fixture)


QUICK = [str(DEMO_PATH), *TINY_RUN, "--per_device_train_batch_size", "16", "--eval_strategy", "no",
         "--logging_strategy", "steps", "--logging_steps", "1", "--disable_tqdm", "true",
         "--torch_threads", "1"]  # fmt: skip  (one thread: many times faster on a busy 2-core machine)
# The interrupted-run recipe: 4 steps per stage, a checkpoint every 2.
RESUMABLE = [*QUICK, "--method", "decouple", "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2"]


def arguments(*flags: str):
    return parse_recipe(ARGUMENT_CLASSES, list(flags))


def tiny_model(seed: int = 0, num_labels: int = 4) -> AdUniForImageClassification:
    torch.manual_seed(seed)
    return AdUniForImageClassification(AdUniConfig(num_labels=num_labels, image_size=16))


def encoder_parameter_names(model: torch.nn.Module) -> set[str]:
    return {f"aduni.{name}" for name, _ in model.aduni.named_parameters()}


def running_statistics(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in weights.items() if k.endswith(("running_mean", "running_var"))}


class Recorder:
    """Wraps `AdUniTrainer.train` (the real one runs): which stage trained, and the model's weights at its start."""

    def __init__(self, monkeypatch, interrupt: tuple[str, int] | None = None):
        self.trained: list[tuple[AdUniTrainer, dict[str, torch.Tensor]]] = []
        self.stages: list[str] = []  # the folder each trainer trained in
        original_train, original_step = AdUniTrainer.train, AdUniTrainer.training_step
        recorder = self

        def train(self, *args, **kwargs):
            start = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            recorder.trained.append((self, start))
            recorder.stages.append(Path(self.args.output_dir).name)
            return original_train(self, *args, **kwargs)

        def training_step(self, *args, **kwargs):
            if interrupt is not None and (Path(self.args.output_dir).name, self.state.global_step) == interrupt:
                raise Interrupted(f"killed at {interrupt}")
            return original_step(self, *args, **kwargs)

        monkeypatch.setattr(AdUniTrainer, "train", train)
        monkeypatch.setattr(AdUniTrainer, "training_step", training_step)


class Interrupted(Exception):
    """Stands for a kill in the middle of training."""


def method_stages(name: str):
    return METHODS[name].stages


def stage_loss(stage, method_args):
    return stage.loss(LossInputs(10, [5] * 10, tiny_model(num_labels=10), method_args))


# ---- the methods and the recipe fields ---------------------------------------------------------------------------
def test_two_stage_methods_are_methods_with_a_second_stage():
    _, _, method_args, _ = arguments(*QUICK)
    assert "supcon" not in METHODS  # SupCon is CICL's stage-1 loss, not a Table 1 row of its own
    decouple, cicl = method_stages("decouple"), method_stages("cicl")
    assert len(method_stages("aduni")) == 1 and len(method_stages("ce")) == 1
    assert type(stage_loss(decouple[0], method_args)) is CrossEntropyLoss and decouple[0].sampler is None
    assert type(stage_loss(cicl[0], method_args)) is SupConLoss and cicl[0].freeze_classifier
    assert not (decouple[0].freeze_encoder or decouple[0].reinit_classifier or cicl[0].freeze_encoder)
    for second in (decouple[1], cicl[1]):
        assert type(stage_loss(second, method_args)) is CrossEntropyLoss
        assert second.freeze_encoder and second.reinit_classifier and not second.freeze_classifier
        assert second.sampler in SAMPLERS
    assert (decouple[1].sampler, decouple[1].bn_mode, decouple[1].epoch_length) == ("class_aware", "train", "dataset")
    assert (cicl[1].sampler, cicl[1].bn_mode, cicl[1].epoch_length) == ("upsample", "eval", "sampler")
    assert cicl[0].num_views == 2 and decouple[0].num_views == 1 and decouple[1].num_views == cicl[1].num_views == 1
    assert METHODS["decouple"].recommended_sampler == "none" and METHODS["cicl"].recommended_sampler == "upsample"
    assert METHODS["decouple"].after_training is not None and METHODS["cicl"].after_training is None


def test_stage2_fields_parse_and_resolve():
    _, _, method, training = arguments(*QUICK, "--method", "cicl", "--sampler", "upsample")
    assert (method.stage2_epochs, method.stage2_learning_rate, method.stage2_bn) == (10, 0.05, None)
    first, second = (resolve_stage(s, i, method) for i, s in enumerate(method_stages("cicl")))
    assert first.sampler == "upsample" and second.sampler == "upsample" and second.bn_mode == "eval"
    assert second.encoder_mode == "eval" and first.encoder_mode is None
    _, _, method, _ = arguments(*QUICK, "--method", "decouple", "--stage2_bn", "eval", "--stage2_epochs", "3")
    second = resolve_stage(method_stages("decouple")[1], 1, method)
    assert second.bn_mode == "eval" and second.sampler == "class_aware" and method.stage2_epochs == 3
    assert resolve_stage(method_stages("decouple")[0], 0, method).bn_mode == "train"  # stage2_bn: stage 2 only


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--stage2_epochs", "0"], "stage2_epochs must be an integer >= 1"),
        (["--stage2_learning_rate", "0"], "stage2_learning_rate must be > 0"),
        (["--stage2_bn", "frozen"], "stage2_bn must be one of"),
    ],
)
def test_bad_stage2_fields_name_the_field(flags, message):
    with pytest.raises(RecipeError, match=message):
        arguments(*QUICK, "--method", "decouple", *flags)


def test_a_stage2_learning_rate_below_the_cosine_floor_is_refused_before_any_work(tmp_path):
    output_dir = tmp_path / "out"
    with pytest.raises(RecipeError, match="stage2_learning_rate=5e-05 is below min_learning_rate=0.0001"):
        run_training(*arguments(*QUICK, "--method", "cicl", "--stage2_learning_rate", "5e-5",
                                "--output_dir", str(output_dir)))  # fmt: skip
    assert not output_dir.exists() or not any(output_dir.iterdir())
    # One-stage methods ignore the stage-2 fields.
    from aduni_hf.recipes.checks import check_recipe

    check_recipe(*arguments(*QUICK, "--method", "ce", "--stage2_learning_rate", "5e-5"), METHODS["ce"])


# ---- the model between the stages --------------------------------------------------------------------------------
def test_prepare_model_freezes_the_encoder_and_reinitialises_the_classifier_from_the_seed():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)  # whatever the global RNG holds, the new classifier is a function of the seed
    prepare_model(model, method_stages("decouple")[1], seed=7)
    assert all(not p.requires_grad for p in model.aduni.parameters())
    assert all(p.requires_grad for p in model.classifier.parameters())
    after = model.state_dict()
    assert not torch.equal(after["classifier.dense.weight"], before["classifier.dense.weight"])
    assert not torch.equal(after["classifier.dense.bias"], before["classifier.dense.bias"])
    for name in encoder_parameter_names(model):
        assert torch.equal(after[name], before[name]), name
    other = tiny_model(seed=1)
    prepare_model(other, method_stages("decouple")[1], seed=7)
    assert torch.equal(other.classifier.dense.weight, model.classifier.dense.weight)
    bound = 1 / model.aduni.feature_dim**0.5  # PyTorch's default Linear init (the official heads')
    assert model.classifier.dense.weight.abs().max() <= bound and model.classifier.dense.bias.abs().max() <= bound
    prepare_model(model, method_stages("cicl")[0], seed=7)  # CICL stage 1: encoder trains, classifier frozen
    assert all(p.requires_grad for p in model.aduni.parameters())
    assert all(not p.requires_grad for p in model.classifier.parameters())


def test_stage_folders_rules(tmp_path):
    (tmp_path / "_stage1" / "tmp-checkpoint-4").mkdir(parents=True)
    (tmp_path / "_stage1" / "checkpoint-6").mkdir()  # cut short: no trainer_state.json
    (tmp_path / "_stage1" / "checkpoint-6" / "model.safetensors").write_bytes(b"")
    (tmp_path / "_stage2").mkdir()
    with pytest.raises(RunFolderError, match="stage folders of a two-stage run"):
        prepare_stage_dirs(tmp_path, num_stages=1, overwrite=False)
    prepare_stage_dirs(tmp_path, num_stages=2, overwrite=False)  # an interrupted write is cleared away
    assert (tmp_path / "_stage1").is_dir() and not (tmp_path / "_stage1" / "tmp-checkpoint-4").exists()
    assert not (tmp_path / "_stage1" / "checkpoint-6").exists()
    prepare_stage_dirs(tmp_path, num_stages=1, overwrite=True)
    assert not (tmp_path / "_stage1").exists() and not (tmp_path / "_stage2").exists()


def test_first_draws_are_the_samplers_own_epoch_by_epoch():
    labels = [0] * 30 + [1] * 6 + [2] * 3
    inner = build_sampler("class_aware", labels, seed=3)
    capped = FirstDraws(build_sampler("class_aware", labels, seed=3), 32)
    assert len(capped) == 32 and len(inner) == 90
    for epoch in (0, 1, 5):
        inner.set_epoch(epoch)
        capped.set_epoch(epoch)
        assert list(capped) == list(inner)[:32] and capped.epoch == epoch


# ---- tau-normalisation -------------------------------------------------------------------------------------------
def test_tau_norm_logits_rescale_the_rows_and_drop_the_bias():
    weight = torch.tensor([[3.0, 4.0], [0.0, 0.5]])
    features = torch.tensor([[1.0, 2.0]])
    torch.testing.assert_close(tau_norm_logits(features, weight, 0.0), features @ weight.T)
    torch.testing.assert_close(tau_norm_logits(features, weight, 1.0), torch.tensor([[11 / 5, 2.0]]))
    torch.testing.assert_close(tau_norm_logits(features, weight, 2.0), torch.tensor([[11 / 25, 4.0]]))


def test_tau_is_chosen_on_validation_even_where_the_test_split_would_choose_another():
    """Class 0 has a row of norm 10, class 1 of norm 1: with features (1, r) class 0 wins iff r < 10^(1 - tau).
    Validation (r = 2 is class 0, r = 5 class 1) is right for tau in {0.4, 0.5, 0.6}; test (r = 0.5 class 0,
    r = 1.5 class 1) only for tau in 0.9..1.3. The choice is the smallest validation optimum, 0.4."""
    weight = torch.tensor([[10.0, 0.0], [0.0, 1.0]])
    val = torch.tensor([[1.0, 2.0], [1.0, 5.0]]), torch.tensor([0, 1])
    test = torch.tensor([[1.0, 0.5], [1.0, 1.5]]), torch.tensor([0, 1])
    names = ["head", "tail"]
    tau, scores = select_tau(*val, weight, names)
    assert tau == 0.4 and scores[0.4] == scores[0.6] == 1.0 and scores[0.0] < 1.0 and list(scores) == list(TAUS)
    test_tau, test_scores = select_tau(*test, weight, names)
    assert test_tau == 0.9 and test_scores[0.4] < 1.0  # the test optimum differs, and is not the one chosen


def test_tau_norm_evaluation_sweeps_on_validation_before_reading_the_test_split(monkeypatch):
    from aduni_hf.data import build_dataset, eval_transform, split_by_fold

    splits = split_by_fold(build_dataset("digits_lt"), test_fold=0, val_fraction=0.1, seed=42)
    names = [str(c) for c in range(10)]
    read = []

    class Recording(SingleViewDataset):
        def __init__(self, name, *args):
            super().__init__(*args)
            self.name = name

        def __getitem__(self, index):
            read.append(self.name)
            return super().__getitem__(index)

    val = Recording("val", splits.val, eval_transform(16))
    test = Recording("test", splits.test, eval_transform(16))
    swept = []
    real_select = tau_norm_module.select_tau

    def select(features, labels, weight, class_names, taus=TAUS):
        swept.append((len(labels), set(read)))
        return real_select(features, labels, weight, class_names, taus)

    monkeypatch.setattr(tau_norm_module, "select_tau", select)
    model = tiny_model(num_labels=10)
    eval_metrics, test_metrics = tau_norm_evaluation(model, val, test, names, 64, torch.device("cpu"))
    assert swept == [(len(splits.val), {"val"})]  # the sweep saw the validation split, the test split unread
    assert "test" in read and test_metrics["tau_norm_tau"] in TAUS
    assert {"test_tau_norm_accuracy", "test_tau_norm_macro_f1"} <= set(test_metrics)
    assert {"eval_tau_norm_accuracy", "eval_tau_norm_macro_f1"} <= set(eval_metrics)
    assert tau_norm_evaluation(model, None, test, names, 64, torch.device("cpu")) == ({}, {})


# ---- decouple end to end -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def decouple_run(tmp_path_factory):
    """The uninterrupted decouple run (the reference of the resume tests), with the trainers it used."""
    output_dir = tmp_path_factory.mktemp("decouple") / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        recorder = Recorder(monkeypatch)
        results = run_training(*arguments(*RESUMABLE, "--output_dir", str(output_dir)))
    return output_dir, recorder, results


def test_decouple_trains_two_stages_into_one_model_folder(decouple_run):
    output_dir, recorder, results = decouple_run
    assert recorder.stages == ["_stage1", "_stage2"]
    assert (stage_dir(output_dir, 0) / STAGE_FINISHED_NAME).is_file()
    assert sorted(p.name for p in stage_dir(output_dir, 1).glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    model = AutoModelForImageClassification.from_pretrained(output_dir)
    assert model.config.classifier_type == "linear"
    state = json.loads((output_dir / "trainer_state.json").read_text())  # stage 2's
    steps = [entry for entry in state["log_history"] if "loss" in entry]
    assert len(steps) == 4 and steps[0]["learning_rate"] == pytest.approx(0.05)  # no warm-up in stage 2
    train = json.loads((output_dir / "train_results.json").read_text())
    assert "stage1_train_loss" in train and "train_loss" in train
    assert 0 <= results["test_accuracy"] <= 1 and results["tau_norm_tau"] in TAUS
    saved = json.loads((output_dir / "test_results.json").read_text())
    assert {"test_tau_norm_accuracy", "test_tau_norm_macro_f1", "tau_norm_tau"} <= set(saved)
    assert "eval_tau_norm_macro_f1" in json.loads((output_dir / "eval_results.json").read_text())


def test_stage2_keeps_the_encoder_bit_identical_and_trains_a_new_classifier_only(decouple_run):
    output_dir, recorder, _ = decouple_run
    stage1 = load_file(stage_dir(output_dir, 0) / "model.safetensors")
    final = load_file(output_dir / "model.safetensors")
    trainer, at_start = recorder.trained[1]
    names = encoder_parameter_names(trainer.model)
    assert names and all(torch.equal(final[name], stage1[name]) for name in names)  # bit-identical
    for name in ("classifier.dense.weight", "classifier.dense.bias"):
        assert not torch.equal(at_start[name], stage1[name])  # re-initialised at the start of stage 2 ...
        assert not torch.equal(final[name], at_start[name])  # ... and trained
    fresh = fresh_classifier_weights(trainer.model, seed=0)
    assert torch.equal(at_start["classifier.dense.weight"], fresh["weight"])
    # stage2_bn train (decouple's default): BatchNorm statistics follow the class-balanced batches.
    changed = [k for k, v in running_statistics(final).items() if not torch.equal(v, stage1[k])]
    assert changed
    # The optimiser of stage 2 holds the classifier's parameters and nothing else.
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in trainer.model.classifier.parameters()}
    first, _ = recorder.trained[0]
    assert len({id(p) for g in first.optimizer.param_groups for p in g["params"]}) == len(
        list(first.model.parameters())
    )
    # class-aware sampling, epochs of N/B batches (classifier-balancing's epoch_steps)
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, FirstDraws) and sampler.sampler.__class__ is SAMPLERS["class_aware"]
    assert len(sampler) == len(trainer.train_dataset.labels) // 16 * 16


@pytest.mark.parametrize(
    "interrupt",
    [("_stage1", 3), ("_stage2", 0), ("_stage2", 3)],
    ids=["in stage 1", "before any stage-2 checkpoint", "in stage 2"],
)
def test_an_interrupted_run_finishes_as_the_uninterrupted_one(decouple_run, tmp_path, monkeypatch, interrupt):
    reference_dir, _, reference = decouple_run
    output_dir = tmp_path / "run"
    recipe = [*RESUMABLE, "--output_dir", str(output_dir)]
    with monkeypatch.context() as patch:
        Recorder(patch, interrupt=interrupt)
        with pytest.raises(Interrupted):
            run_training(*arguments(*recipe))
    assert not (output_dir / "test_results.json").exists()
    finished_mark = stage_dir(output_dir, 0) / STAGE_FINISHED_NAME
    mark_time = finished_mark.stat().st_mtime_ns if finished_mark.exists() else None

    recorder = Recorder(monkeypatch)
    results = run_training(*arguments(*recipe))
    if interrupt[0] == "_stage2":  # stage 1 had finished: it is not trained again
        assert recorder.stages == ["_stage2"] and finished_mark.stat().st_mtime_ns == mark_time
    else:
        assert recorder.stages == ["_stage1", "_stage2"]
    a, b = load_file(reference_dir / "model.safetensors"), load_file(output_dir / "model.safetensors")
    difference = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    assert difference <= 1e-6
    for key in ("test_accuracy", "test_macro_f1", "test_tau_norm_macro_f1", "tau_norm_tau"):
        assert results[key] == reference[key], key


def test_resume_from_an_explicit_stage_2_checkpoint(decouple_run, tmp_path, monkeypatch):
    """A run killed after stage-2 checkpoint 2 (its finished stage 1 and that checkpoint, nothing else), resumed
    with --resume_from_checkpoint: stage 2 only, ending as the reference."""
    reference_dir, _, reference = decouple_run
    output_dir = tmp_path / "run"
    shutil.copytree(stage_dir(reference_dir, 0), stage_dir(output_dir, 0))
    checkpoint = stage_dir(output_dir, 1) / "checkpoint-2"
    shutil.copytree(stage_dir(reference_dir, 1) / "checkpoint-2", checkpoint)
    recorder = Recorder(monkeypatch)
    results = run_training(*arguments(*RESUMABLE, "--output_dir", str(output_dir), "--resume_from_checkpoint",
                                      str(checkpoint)))  # fmt: skip
    assert recorder.stages == ["_stage2"]
    assert torch.equal(recorder.trained[0][0].model.classifier.dense.weight,
                       load_file(reference_dir / "model.safetensors")["classifier.dense.weight"])  # fmt: skip
    assert results["test_macro_f1"] == reference["test_macro_f1"]


def test_a_finished_stage_1_is_not_resumed_from_its_checkpoints(decouple_run, tmp_path):
    reference_dir, _, _ = decouple_run
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    shutil.copytree(stage_dir(reference_dir, 0), stage_dir(output_dir, 0))
    checkpoint = stage_dir(output_dir, 0) / "checkpoint-2"
    with pytest.raises(RunFolderError, match="is a stage-1 checkpoint, but stage 1 has finished"):
        run_training(*arguments(*RESUMABLE, "--output_dir", str(output_dir), "--resume_from_checkpoint",
                                str(checkpoint)))  # fmt: skip
    with pytest.raises(RunFolderError, match="method: 'decouple' in the checkpoint, 'cicl' now"):
        run_training(*arguments(*QUICK, "--method", "cicl", "--max_steps", "4", "--output_dir", str(output_dir)))


# ---- cicl end to end ---------------------------------------------------------------------------------------------
def test_cicl_freezes_the_encoder_and_its_batchnorm_in_stage_2_and_pushes_the_final_model_only(
    tmp_path, monkeypatch
):
    api = install(monkeypatch.setattr, tmp_path / "hub")
    recorder = Recorder(monkeypatch)
    output_dir = tmp_path / "cicl"
    run_training(*arguments(*QUICK, "--method", "cicl", "--sampler", "upsample", "--max_steps", "2",
                            "--output_dir", str(output_dir), "--push_to_hub", "true",
                            "--hub_model_id", "someone/cicl"))  # fmt: skip
    assert recorder.stages == ["_stage1", "_stage2"]
    (first, at_first), (second, _) = recorder.trained
    assert first.loss_fn.__class__ is SupConLoss and second.loss_fn.__class__ is CrossEntropyLoss
    assert second.sampler_name == "upsample" and second.encoder_mode == "eval"
    stage1 = load_file(stage_dir(output_dir, 0) / "model.safetensors")
    final = load_file(output_dir / "model.safetensors")
    # Stage 1 (SupCon) trained the encoder, not the classifier; stage 2 the reverse, BatchNorm frozen (eval).
    assert torch.equal(stage1["classifier.dense.weight"], at_first["classifier.dense.weight"])
    assert not all(torch.equal(stage1[k], at_first[k]) for k in encoder_parameter_names(first.model))
    for name, value in final.items():
        if name.startswith("aduni."):
            assert torch.equal(value, stage1[name]), name  # parameters and BatchNorm statistics alike
    assert not torch.equal(final["classifier.dense.weight"], stage1["classifier.dense.weight"])
    assert api.created[-1] == "someone/cicl"
    _, files = api.uploads[-1]
    assert "model.safetensors" in files and "test_results.json" in files
    assert not [name for name in files if name.startswith("_stage")]  # the stage folders stay local


def test_stage2_bn_train_updates_the_frozen_encoders_batchnorm_statistics(tmp_path):
    output_dir = tmp_path / "cicl"
    run_training(*arguments(*QUICK, "--method", "cicl", "--max_steps", "1", "--stage2_bn", "train",
                            "--output_dir", str(output_dir)))  # fmt: skip
    stage1 = load_file(stage_dir(output_dir, 0) / "model.safetensors")
    final = load_file(output_dir / "model.safetensors")
    changed = [k for k, v in running_statistics(final).items() if not torch.equal(v, stage1[k])]
    assert changed
    model = AutoModelForImageClassification.from_pretrained(output_dir)  # the run's encoder, for its names
    assert all(torch.equal(final[name], stage1[name]) for name in encoder_parameter_names(model))
