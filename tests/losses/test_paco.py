"""Tests of PaCo (Cui et al., ICCV 2021; official JIA-Lab-research/Parametric-Contrastive-Learning, PaCo/LT):
the loss of its `losses.py` PaCoLoss, and the momentum key encoder and labelled queue of its `moco/builder.py`.

The oracle below is the loss written from the paper's definition as the official code computes it (anchors the
B queries; class columns logits + log(prior + 1e-9), weight beta on the own class; sample columns q_i.f_j / T
over [q; k; queue] except self; positives weight alpha: every other same-label entry, the own key included;
denominator sum_c exp(class) + gamma * sum_{j != i} exp(sample); normaliser beta + alpha |P(i)|; mean over the
queries), in Python loops on float64. It shares no code with `aduni_hf.losses.paco_loss`.
"""

from __future__ import annotations

import copy
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from aduni_hf import AdUniConfig, AdUniForImageClassification
from aduni_hf.losses import LossOutput, PaCoLoss
from aduni_hf.methods import METHODS, LossInputs, MethodArguments
from aduni_hf.schedules import AlphaSchedule
from aduni_hf.training import AlphaScheduleCallback
from aduni_hf.training.checkpoints import METHOD_STATE_NAME
from tests.tiny_run import TINY_BACKBONE
from tests.training.trainer_helpers import IMAGE_SIZE, NUM_TRAIN, digits_splits, make_trainer

NUM_CLASSES = 4
DIM = 6
CLASS_COUNTS = [50, 10, 3, 1]
LABELS = [0, 0, 1, 3, 0]  # repeated class 0, singletons 1 and 3, absent class 2
QUEUE_LABELS = [0, 2, 1, 0, 3, 3, 1, 0]


# ----------------------------------------------------------------------------------------------------------
# Oracle and inputs
# ----------------------------------------------------------------------------------------------------------


def paco_oracle(
    q, k, logits, labels, queue, queue_labels, alpha, beta, gamma, temperature, class_counts=None
):
    """Mean over the B queries of L_i, by loops in float64 Python arithmetic."""
    q, k, queue = q.detach().double().tolist(), k.detach().double().tolist(), queue.detach().double().tolist()
    logits = logits.detach().double().tolist()
    labels, queue_labels = [int(y) for y in labels], [int(y) for y in queue_labels]
    contrast = q + k + queue
    contrast_labels = labels + labels + queue_labels
    num_classes = len(logits[0])
    if class_counts is None:
        log_prior = [0.0] * num_classes
    else:
        log_prior = [math.log(n / sum(class_counts) + 1e-9) for n in class_counts]
    losses = []
    for i in range(len(q)):
        class_columns = [logits[i][c] + log_prior[c] for c in range(num_classes)]
        samples = [sum(a * b for a, b in zip(q[i], f, strict=True)) / temperature for f in contrast]
        denominator = sum(math.exp(u) for u in class_columns)
        denominator += gamma * sum(math.exp(s) for j, s in enumerate(samples) if j != i)
        log_d = math.log(denominator)
        total = beta * (class_columns[labels[i]] - log_d)
        positives = 0
        for j, s in enumerate(samples):
            if j != i and contrast_labels[j] == labels[i]:
                total += alpha * (s - log_d)
                positives += 1
        losses.append(-total / (beta + alpha * positives))
    return torch.tensor(sum(losses) / len(losses), dtype=torch.float64)


def make_inputs(seed=0, batch=None, queue_size=None, dtype=torch.float64):
    batch = len(LABELS) if batch is None else batch
    queue_size = len(QUEUE_LABELS) if queue_size is None else queue_size
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(batch, DIM, generator=g, dtype=dtype), dim=1)
    k = F.normalize(torch.randn(batch, DIM, generator=g, dtype=dtype), dim=1)
    queue = F.normalize(torch.randn(queue_size, DIM, generator=g, dtype=dtype), dim=1)
    logits = 2.0 * torch.randn(batch, NUM_CLASSES, generator=g, dtype=dtype)
    return q, k, logits, queue


class TinyEncoder(nn.Module):
    """A stand-in for AdUniForImageClassification without BatchNorm: `.features` (normalised) and `.logits`,
    deterministic in its input, so a test can recompute exactly the keys the key encoder produced."""

    def __init__(self, num_classes=NUM_CLASSES, dim=DIM, pixels=3 * 2 * 2, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.config = SimpleNamespace(projection_dim=dim)
        self.body = nn.Linear(pixels, 8)
        self.head = nn.Linear(8, dim)
        self.classifier = nn.Linear(8, num_classes)

    def forward(self, pixel_values):
        hidden = torch.tanh(self.body(pixel_values.flatten(1)))
        return SimpleNamespace(features=F.normalize(self.head(hidden), dim=1), logits=self.classifier(hidden))


def views(batch, seed, size=2):
    return torch.randn(batch, 2, 3, size, size, generator=torch.Generator().manual_seed(seed))


def step_labels(batch, seed):
    return torch.randint(0, NUM_CLASSES, (batch,), generator=torch.Generator().manual_seed(1000 + seed))


def tiny_aduni(num_labels=NUM_CLASSES, seed=0):
    torch.manual_seed(seed)
    config = AdUniConfig(num_labels=num_labels, image_size=IMAGE_SIZE, backbone=TINY_BACKBONE)
    return AdUniForImageClassification(config)


# ----------------------------------------------------------------------------------------------------------
# (1)-(3) the loss alone
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("logit_adjustment", [True, False], ids=["adjusted", "raw"])
@pytest.mark.parametrize("beta", [1.0, 0.5])
@pytest.mark.parametrize("alpha", [0.05, 1.0])
@pytest.mark.parametrize("gamma", [1.0, 0.0])
def test_loss_matches_loop_oracle(gamma, alpha, beta, logit_adjustment):
    q, k, logits, queue = make_inputs(seed=0)
    labels, queue_labels = torch.tensor(LABELS), torch.tensor(QUEUE_LABELS)
    loss_fn = PaCoLoss(
        NUM_CLASSES, CLASS_COUNTS, model=TinyEncoder(), temperature=0.2, paco_beta=beta, paco_gamma=gamma,
        queue_size=8, logit_adjustment=logit_adjustment,
    )  # fmt: skip
    got = loss_fn(q, k, logits, labels, alpha, queue, queue_labels)
    expected = paco_oracle(
        q, k, logits, labels, queue, queue_labels, alpha, beta, gamma, 0.2,
        CLASS_COUNTS if logit_adjustment else None,
    )  # fmt: skip
    assert got.dtype == torch.float64 and got.shape == ()
    torch.testing.assert_close(got, expected)


def test_loss_is_float32_under_bf16_autocast():
    q, k, logits, queue = make_inputs(seed=4, dtype=torch.float32)
    labels, queue_labels = torch.tensor(LABELS), torch.tensor(QUEUE_LABELS)
    loss_fn = PaCoLoss(NUM_CLASSES, CLASS_COUNTS, model=TinyEncoder(), temperature=0.05, queue_size=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss_fn(q, k, logits, labels, 0.05, queue, queue_labels)
    expected = paco_oracle(q, k, logits, labels, queue, queue_labels, 0.05, 1.0, 1.0, 0.05, CLASS_COUNTS)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_alpha_and_gamma_zero_is_balanced_softmax_cross_entropy():
    q, k, logits, queue = make_inputs(seed=1)
    labels, queue_labels = torch.tensor(LABELS), torch.tensor(QUEUE_LABELS)
    loss_fn = PaCoLoss(
        NUM_CLASSES,
        CLASS_COUNTS,
        model=TinyEncoder(),
        temperature=1.0,
        paco_alpha=0.0,
        paco_gamma=0.0,
        queue_size=8,
    )
    got = loss_fn(q, k, logits, labels, 0.0, queue, queue_labels)
    counts = torch.tensor(CLASS_COUNTS, dtype=torch.float64)
    balanced_softmax = F.cross_entropy(logits + torch.log(counts / counts.sum() + 1e-9), labels)
    # Equal but for the official 1e-12 added to the max-shifted sum inside the log (about 1e-8 here).
    torch.testing.assert_close(got, balanced_softmax, rtol=0, atol=1e-7)
    # With the samples in the denominator it is no longer that cross-entropy.
    with_samples = PaCoLoss(NUM_CLASSES, CLASS_COUNTS, model=TinyEncoder(), temperature=1.0, queue_size=8)
    assert not torch.allclose(with_samples(q, k, logits, labels, 0.0, queue, queue_labels), balanced_softmax)


@pytest.mark.parametrize("gamma", [1.0, 0.0])
def test_gradcheck(gamma):
    q, k, logits, queue = make_inputs(seed=2, batch=4, queue_size=4)
    q, k, logits = (t.clone().requires_grad_() for t in (q, k, logits))
    labels, queue_labels = torch.tensor([0, 1, 0, 3]), torch.tensor([0, 3, 2, 1])
    loss_fn = PaCoLoss(
        NUM_CLASSES,
        CLASS_COUNTS,
        model=TinyEncoder(),
        temperature=0.5,
        paco_alpha=0.3,
        paco_gamma=gamma,
        queue_size=4,
    )
    assert torch.autograd.gradcheck(
        lambda a, b, c: loss_fn(a, b, c, labels, 0.3, queue, queue_labels), (q, k, logits)
    )


# ----------------------------------------------------------------------------------------------------------
# (4) the queue, (5) the momentum key encoder
# ----------------------------------------------------------------------------------------------------------


def test_initial_queue_is_the_official_one_and_deterministic():
    a = PaCoLoss(NUM_CLASSES, CLASS_COUNTS, model=TinyEncoder(), queue_size=16)
    b = PaCoLoss(NUM_CLASSES, CLASS_COUNTS, model=TinyEncoder(seed=3), queue_size=16)
    assert torch.equal(a.queue, b.queue) and torch.equal(a.queue_labels, b.queue_labels)
    assert a.queue.shape == (16, DIM) and a.queue_labels.dtype == torch.int64
    torch.testing.assert_close(a.queue.norm(dim=0), torch.ones(DIM))  # normalised along dim=0 (official)
    assert int(a.queue_ptr) == 0 and a.queue_ptr.shape == ()
    assert set(a.state_dict()) >= {"queue", "queue_labels", "queue_ptr", "global_batch_size"}
    assert "log_prior" not in a.state_dict()


def test_construction_leaves_the_global_random_state_alone():
    model = TinyEncoder()
    state = torch.get_rng_state()
    PaCoLoss(NUM_CLASSES, CLASS_COUNTS, model=model, queue_size=16)
    assert torch.equal(state, torch.get_rng_state())


def test_queue_is_fifo_and_the_contrast_set_is_taken_before_enqueueing():
    model = TinyEncoder()
    loss_fn = PaCoLoss(
        NUM_CLASSES, CLASS_COUNTS, model=model, temperature=0.2, queue_size=8, paco_momentum=0.5
    )
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    enqueued_keys, enqueued_labels = [], []
    for step, batch in enumerate([4, 4, 4, 2, 4]):  # 18 keys: the pointer wraps twice, once mid-batch
        pixel_values, labels = views(batch, seed=step), step_labels(batch, step)
        queue_before, queue_labels_before = loss_fn.queue.clone(), loss_fn.queue_labels.clone()
        with torch.no_grad():
            q_out = model(pixel_values[:, 0])
        out = loss_fn.forward_views(model, pixel_values, labels)  # plain PaCo: alpha is paco_alpha, 0.05
        assert isinstance(out, LossOutput)
        loss, logits = out.loss, out.logits
        with torch.no_grad():
            keys = loss_fn.key_encoder(pixel_values[:, 1]).features  # the key encoder as it was used
        torch.testing.assert_close(logits, q_out.logits)
        expected = paco_oracle(
            q_out.features, keys, q_out.logits, labels, queue_before, queue_labels_before, 0.05, 1.0, 1.0, 0.2,
            CLASS_COUNTS,
        )  # fmt: skip
        torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
        # The keys are in the contrast set once: with the queue after enqueueing they would be there twice.
        twice = paco_oracle(
            q_out.features, keys, q_out.logits, labels, loss_fn.queue, loss_fn.queue_labels, 0.05, 1.0, 1.0,
            0.2, CLASS_COUNTS,
        )  # fmt: skip
        assert abs(float(twice) - float(expected)) > 1e-4
        enqueued_keys.append(keys)
        enqueued_labels.append(labels)
        total = sum(len(y) for y in enqueued_labels)
        assert int(loss_fn.queue_ptr) == total % 8
        if total >= 8:  # oldest first from the pointer: the last 8 keys in order of arrival
            oldest_first = torch.roll(loss_fn.queue, -int(loss_fn.queue_ptr), dims=0)
            torch.testing.assert_close(oldest_first, torch.cat(enqueued_keys)[-8:], rtol=0, atol=1e-6)
            assert torch.equal(
                torch.roll(loss_fn.queue_labels, -int(loss_fn.queue_ptr)), torch.cat(enqueued_labels)[-8:]
            )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert total == 18 and int(loss_fn.queue_ptr) == 2 and int(loss_fn.global_batch_size) == 4


@pytest.mark.slow
def test_key_encoder_is_the_momentum_average_of_the_model_and_untrained():
    model = tiny_aduni()
    momentum, steps = 0.8, 3
    loss_fn = PaCoLoss(NUM_CLASSES, CLASS_COUNTS, model=model, queue_size=8, paco_momentum=momentum)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    expected = {name: p.detach().double().clone() for name, p in model.named_parameters()}
    # The official key encoder, by hand: the averaged parameters, its BatchNorm statistics left to its own
    # train-mode forward of view 2.
    reference = copy.deepcopy(model)
    for step in range(steps):
        pixel_values = torch.randn(
            4, 2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(step)
        )
        # theta_k <- m theta_k + (1 - m) theta_q, with the model as it is before this step's key forward
        for name, p in model.named_parameters():
            expected[name] = momentum * expected[name] + (1 - momentum) * p.detach().double()
        with torch.no_grad():
            for name, p in reference.named_parameters():
                p.copy_(expected[name])
            reference(pixel_values[:, 1])
        loss = loss_fn.forward_views(model, pixel_values, step_labels(4, step)).loss
        assert torch.isfinite(loss)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    key_parameters = dict(loss_fn.key_encoder.named_parameters())
    assert key_parameters.keys() == expected.keys()
    moved = 0.0
    for name, p in key_parameters.items():
        torch.testing.assert_close(p.double(), expected[name], rtol=0, atol=1e-6, msg=name)
        moved = max(moved, (p.double() - dict(model.named_parameters())[name].double()).abs().max().item())
    assert moved > 1e-3  # an average, not a copy of the trained model
    # Not trained: no gradient, not among the model's (the optimiser's) parameters.
    assert all(not p.requires_grad and p.grad is None for p in key_parameters.values())
    model_tensors = {id(p) for p in model.parameters()} | {p.data_ptr() for p in model.parameters()}
    assert not any(id(p) in model_tensors or p.data_ptr() in model_tensors for p in key_parameters.values())
    optimised = {id(p) for group in optimiser.param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in key_parameters.values()}
    # BatchNorm buffers are not averaged (official): the key encoder's evolve by its own train-mode forward.
    key_buffers, model_buffers = dict(loss_fn.key_encoder.named_buffers()), dict(model.named_buffers())
    # num_batches_tracked: copied from the model (0) at the first step, then one per key forward.
    tracked = [name for name in key_buffers if name.endswith("num_batches_tracked")]
    assert tracked and all(int(key_buffers[name]) == steps for name in tracked)
    means = [name for name in key_buffers if name.endswith("running_mean")]
    assert any(not torch.allclose(key_buffers[n], model_buffers[n]) for n in means)
    for name, buffer in reference.named_buffers():
        torch.testing.assert_close(key_buffers[name], buffer, rtol=1e-4, atol=1e-5, msg=name)


def test_key_encoder_starts_from_the_model_weights_at_the_first_step():
    """A loss built before the model's weights were loaded still starts its key encoder from those weights."""
    model = TinyEncoder(seed=0)
    loss_fn = PaCoLoss(NUM_CLASSES, CLASS_COUNTS, model=model, queue_size=8, paco_momentum=0.9)
    model.load_state_dict(TinyEncoder(seed=5).state_dict())  # weights loaded after the loss was built
    loss_fn.forward_views(model, views(4, seed=0), step_labels(4, 0))
    for (name, p), k in zip(model.named_parameters(), loss_fn.key_encoder.parameters(), strict=True):
        torch.testing.assert_close(k, p, rtol=0, atol=1e-6, msg=name)


# ----------------------------------------------------------------------------------------------------------
# (7) queue size, (8) alpha
# ----------------------------------------------------------------------------------------------------------


def test_queue_size_not_a_multiple_of_the_batch_is_refused():
    model = TinyEncoder()
    loss_fn = PaCoLoss(NUM_CLASSES, CLASS_COUNTS, model=model, queue_size=30)
    with pytest.raises(
        ValueError, match=r"queue_size \(30\) must be a multiple of the global batch size \(4"
    ):
        loss_fn.forward_views(model, views(4, seed=0), step_labels(4, 0))
    with pytest.raises(ValueError, match="queue_size"):
        PaCoLoss(NUM_CLASSES, CLASS_COUNTS, model=model, queue_size=0)
    with pytest.raises(ValueError, match="needs `model`"):
        PaCoLoss(NUM_CLASSES, CLASS_COUNTS)


def method_loss(method, model, **options):
    """The loss of `method`'s (only) stage, for the recipe's method fields `options`."""
    args = MethodArguments(method=method, **options)
    return METHODS[method].stages[0].loss(LossInputs(NUM_CLASSES, CLASS_COUNTS, model, args))


def test_the_paco_methods_train_on_two_views_unchunked():
    for method in ("paco", "paco_aduc"):
        (stage,) = METHODS[method].stages
        # the key view goes through the loss's own encoder: the batch cannot be split into chunks
        assert stage.num_views == 2 and not stage.chunkable
        assert METHODS[method].classifier_type == "linear"
    assert PaCoLoss.own_forward
    assert "paco_alpha" in METHODS["paco"].fields and "paco_alpha" not in METHODS["paco_aduc"].fields
    assert "alpha_schedule" in METHODS["paco_aduc"].fields and "alpha_schedule" not in METHODS["paco"].fields


def test_paco_aduc_uses_the_scheduled_alpha_and_paco_its_constant():
    model = TinyEncoder()
    pixel_values, labels = views(4, seed=0), step_labels(4, 0)
    with torch.no_grad():
        q_out = model(pixel_values[:, 0])
    epoch, num_epochs = 100, 400
    scheduled = AlphaSchedule()(epoch, num_epochs)  # the official schedule: 0.4387
    results = {}
    for method in ("paco", "paco_aduc"):
        # The method passes PaCo's fields and not AduC's (base_temperature, beta).
        loss_fn = method_loss(
            method, model, temperature=0.2, paco_alpha=0.05, queue_size=8, base_temperature=0.07, beta=0.5
        )
        assert type(loss_fn) is PaCoLoss and loss_fn.paco_beta == 1.0 and loss_fn.temperature == 0.2
        loss_fn.set_epoch(epoch, num_epochs)  # as the trainer's AlphaScheduleCallback at the epoch start
        queue, queue_labels = loss_fn.queue.clone(), loss_fn.queue_labels.clone()
        loss = loss_fn.forward_views(model, pixel_values, labels).loss
        with torch.no_grad():
            keys = loss_fn.key_encoder(pixel_values[:, 1]).features
        results[method] = (loss_fn, loss, keys, queue, queue_labels)
    assert results["paco"][0].alpha_schedule is None and results["paco"][0].epoch_logs() == {}
    assert results["paco_aduc"][0].alpha_schedule == AlphaSchedule()
    assert results["paco_aduc"][0].epoch_logs() == {"alpha": pytest.approx(scheduled)}
    for method, alpha in (("paco", 0.05), ("paco_aduc", scheduled)):
        loss_fn, loss, keys, queue, queue_labels = results[method]
        assert loss_fn.alpha == pytest.approx(alpha)
        expected = paco_oracle(q_out.features, keys, q_out.logits, labels, queue, queue_labels, alpha, 1.0, 1.0,
                               0.2, CLASS_COUNTS)  # fmt: skip
        torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    assert abs(results["paco"][1].item() - results["paco_aduc"][1].item()) > 1e-3


def test_paco_aduc_follows_the_recipes_alpha_schedule():
    loss_fn = method_loss(
        "paco_aduc", TinyEncoder(), queue_size=8, alpha_schedule="step", alpha_max=0.8, alpha_min=0.1,
        alpha_decay=5,
    )  # fmt: skip
    assert loss_fn.alpha == 0.8  # epoch 0 before any set_epoch
    for epoch, alpha in ((0, 0.8), (4, 0.8), (5, 0.1), (9, 0.1)):
        loss_fn.set_epoch(epoch, 10)
        assert loss_fn.alpha == alpha and loss_fn.epoch_logs() == {"alpha": alpha}
    plain = method_loss(
        "paco", TinyEncoder(), queue_size=8, paco_alpha=0.2, alpha_schedule="step", alpha_decay=5
    )
    for epoch in (0, 5, 9):
        plain.set_epoch(epoch, 10)
        assert plain.alpha == 0.2


# ----------------------------------------------------------------------------------------------------------
# (6) a real AdUniTrainer: training, the checkpoint's method state, and an exact resume
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def splits():
    return digits_splits()


def trainer_loss(splits, method="paco"):
    counts = np.bincount(splits.train.select(range(NUM_TRAIN))["label"], minlength=10).tolist()
    # The model make_trainer builds (same seed and config); the key encoder is set from the trained model at
    # the first step in any case.
    args = MethodArguments(method=method, queue_size=32, paco_momentum=0.9)
    return METHODS[method].stages[0].loss(LossInputs(10, counts, tiny_aduni(num_labels=10), args))


def test_the_trainer_moves_paco_aducs_alpha_and_leaves_pacos(tmp_path, splits):
    """Every trainer tells its loss the epoch (AlphaScheduleCallback); only PaCo+AduC's alpha follows it."""
    for method, expected in (("paco", 0.05), ("paco_aduc", AlphaSchedule()(2, 3))):
        loss_fn = trainer_loss(splits, method)
        trainer = make_trainer(tmp_path / method, splits, loss_fn=loss_fn)
        (callback,) = [c for c in trainer.callback_handler.callbacks if isinstance(c, AlphaScheduleCallback)]
        assert callback.loss is loss_fn
        trainer.state.epoch = 2.0  # the start of the third and last epoch
        callback.on_epoch_begin(trainer.args, trainer.state, trainer.control)
        assert loss_fn.alpha == pytest.approx(expected)
    assert AlphaSchedule()(2, 3) != pytest.approx(0.05)


@pytest.mark.slow
def test_trains_saves_its_state_and_resumes_exactly(tmp_path, splits):
    save = dict(epochs=2, save_strategy="steps", save_steps=4)  # 16 + 16 + 8 keys per epoch, K = 32
    uninterrupted = make_trainer(tmp_path / "a", splits, loss_fn=trainer_loss(splits), **save)
    uninterrupted.train()
    losses = [log["loss"] for log in uninterrupted.state.log_history if "loss" in log]
    assert len(losses) == 6 and all(math.isfinite(value) for value in losses)
    final = uninterrupted.loss_fn
    assert int(final.queue_ptr) == 80 % 32 and int(final.global_batch_size) == 16

    checkpoint = tmp_path / "a" / "run" / "checkpoint-4"
    saved = safetensors.torch.load_file(checkpoint / METHOD_STATE_NAME)
    assert {"queue", "queue_labels", "queue_ptr", "global_batch_size"} <= saved.keys()
    assert saved.keys() == set(final.state_dict())
    assert any(name.startswith("key_encoder.") and "running_mean" in name for name in saved)
    assert int(saved["queue_ptr"]) == (16 + 16 + 8 + 16) % 32

    resumed = make_trainer(tmp_path / "b", splits, loss_fn=trainer_loss(splits), **save)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert torch.equal(resumed.loss_fn.queue_labels, final.queue_labels)
    assert int(resumed.loss_fn.queue_ptr) == int(final.queue_ptr)
    for (name, a), b in zip(final.state_dict().items(), resumed.loss_fn.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6, msg=name)  # queue and key encoder
    for (name, a), b in zip(
        uninterrupted.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6, msg=name)
    # The resumed run's key encoder came from the checkpoint: it differs from the model it was built with.
    assert not torch.equal(
        saved["key_encoder.classifier.dense.weight"], tiny_aduni(10).classifier.dense.weight
    )


# ----------------------------------------------------------------------------------------------------------
# Several processes (gloo on CPU): every rank's keys reach every queue, K is checked against the global batch
# ----------------------------------------------------------------------------------------------------------

DDP_WORKER = """
import sys
from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from aduni_hf.losses import PaCoLoss


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.config = SimpleNamespace(projection_dim=6)
        self.body, self.head, self.classifier = nn.Linear(12, 8), nn.Linear(8, 6), nn.Linear(8, 4)

    def forward(self, pixel_values):
        hidden = torch.tanh(self.body(pixel_values.flatten(1)))
        return SimpleNamespace(features=F.normalize(self.head(hidden), dim=1), logits=self.classifier(hidden))


def batch(rank, step):
    g = torch.Generator().manual_seed(100 * step + rank)
    return torch.randn(2, 2, 3, 2, 2, generator=g), torch.randint(0, 4, (2,), generator=g)


dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
assert world == 2
model = Tiny()  # never trained here: the key encoder stays equal to it
loss_fn = PaCoLoss(4, [5, 3, 2, 1], model=model, queue_size=8)
keys, labels = [], []
for step in range(3):
    pixel_values, y = batch(rank, step)
    loss = loss_fn.forward_views(model, pixel_values, y).loss
    assert torch.isfinite(loss)
    for r in range(world):  # every rank's keys, recomputed here from its inputs, in rank order
        pv, yr = batch(r, step)
        with torch.no_grad():
            keys.append(model(pv[:, 1]).features)
        labels.append(yr)
assert int(loss_fn.global_batch_size) == 4 and int(loss_fn.queue_ptr) == 12 % 8
ptr = int(loss_fn.queue_ptr)
torch.testing.assert_close(torch.roll(loss_fn.queue, -ptr, dims=0), torch.cat(keys)[-8:], rtol=0, atol=1e-6)
assert torch.equal(torch.roll(loss_fn.queue_labels, -ptr), torch.cat(labels)[-8:])

too_small = PaCoLoss(4, [5, 3, 2, 1], model=model, queue_size=6)  # a multiple of the local batch 2, not of 4
try:
    too_small.forward_views(model, *batch(rank, 0))
    raise AssertionError("queue_size 6 with a global batch of 4 was accepted")
except ValueError as error:
    assert "queue_size (6)" in str(error) and "global batch size (4 = per-device batch 2 x 2 processes)" in str(error)
dist.barrier()
if rank == 0:
    open(sys.argv[1], "w").write("ok")
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_queue_gathers_every_process_keys(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    worker, result_file = tmp_path / "paco_ddp_worker.py", tmp_path / "result.txt"
    worker.write_text(DDP_WORKER)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               str(worker), str(result_file)]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(repo))
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=repo, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result_file.read_text() == "ok"
