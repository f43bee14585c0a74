"""AdUniTrainer on a real (tiny) Trainer run: two-view batches, AduC, alpha and LR schedules, the sampler."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aduni_hf import AduCLoss, AlphaScheduleCallback
from aduni_hf.data import (
    RandomEpochSampler,
    SingleViewDataset,
    collate_views,
    eval_transform,
    training_epochs,
)
from aduni_hf.losses import CrossEntropyLoss
from aduni_hf.schedules import AlphaSchedule, alpha_schedule, official_learning_rate
from aduni_hf.training import AdUniTrainingArguments
from aduni_hf.training.optimization import steps_per_epoch
from tests.training.trainer_helpers import IMAGE_SIZE, NUM_TRAIN, digits_splits, make_trainer


@pytest.fixture(scope="module")
def splits():
    return digits_splits()


def train_counts(splits) -> list[int]:
    return np.bincount(splits.train.select(range(NUM_TRAIN))["label"], minlength=10).tolist()


@pytest.mark.slow
def test_alpha_and_learning_rate_follow_the_epoch_schedules(tmp_path, splits):
    loss = AduCLoss(10, class_counts=train_counts(splits), alpha_schedule=AlphaSchedule("official", 1.0, 0.01, 3))
    trainer = make_trainer(tmp_path, splits, loss_fn=loss)
    trainer.train()
    steps = [log for log in trainer.state.log_history if "loss" in log]
    assert len(steps) == 9
    for log in steps:
        epoch = (log["step"] - 1) // 3
        assert log["alpha"] == pytest.approx(alpha_schedule(epoch, "official", 1.0, 0.01, 3))
        expected_lr = official_learning_rate(
            epoch, base_lr=0.1, warmup_epochs=1, cosine_epochs=3, min_lr=1e-4
        )
        assert log["learning_rate"] == pytest.approx(expected_lr)
        assert np.isfinite(log["loss"])
    assert {log["alpha"] for log in steps} == {alpha_schedule(e, decay=3) for e in range(3)}


def test_official_optimiser_is_sgd_with_decay_on_every_parameter(tmp_path, splits):
    trainer = make_trainer(tmp_path, splits, epochs=1)
    trainer.create_optimizer()
    optimizer = trainer.optimizer
    assert isinstance(optimizer, torch.optim.SGD) and len(optimizer.param_groups) == 1
    group = optimizer.param_groups[0]
    assert group["momentum"] == 0.9 and group["weight_decay"] == 1e-4 and group["lr"] == 0.1
    assert len(group["params"]) == len(list(trainer.model.parameters()))  # BN and biases included


def test_trainer_recipe_uses_the_trainers_optimiser(tmp_path, splits):
    trainer = make_trainer(tmp_path, splits, epochs=1, optimizer_recipe="trainer", learning_rate=1e-3)
    trainer.create_optimizer()
    assert isinstance(trainer.optimizer, torch.optim.AdamW)


@pytest.mark.slow
def test_the_sampler_gets_every_epoch(tmp_path, splits):
    trainer = make_trainer(tmp_path, splits, epochs=3, learning_rate=0.01)
    trainer.train()
    keys = trainer.train_dataset.keys
    assert len(keys) == 3 * NUM_TRAIN
    for epoch in range(3):
        drawn = [k for k in keys if k.epoch == epoch]
        reference = RandomEpochSampler(trainer.train_dataset.labels, seed=0)
        reference.set_epoch(epoch)
        plain = list(reference)
        # the trainer's stream is the sampler's, epoch by epoch, each global batch of 16 in a shuffled order
        # (batch_shuffle: the same draws in each batch)
        assert drawn == list(training_epochs(reference, 16)) != plain
        assert [sorted(drawn[i : i + 16]) for i in range(0, len(drawn), 16)] == [
            sorted(plain[i : i + 16]) for i in range(0, len(drawn), 16)
        ]


def test_compute_loss_is_aduc_on_one_view_major_batch(tmp_path, splits):
    trainer = make_trainer(tmp_path, splits, epochs=1)
    batch = collate_views([trainer.train_dataset[i] for i in range(6)])
    model = trainer.model.eval()
    trainer.loss_fn.alpha = 0.25  # what set_epoch writes at an epoch start
    with torch.no_grad():
        loss, outputs = trainer.compute_loss(model, batch, return_outputs=True)
        views = torch.cat(
            [batch["pixel_values"][:, 0], batch["pixel_values"][:, 1]]
        )  # view 1 block, view 2 block
        reference = model(pixel_values=views)
        expected = trainer.loss_fn(reference.features, reference.logits, batch["labels"], 0.25)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(outputs["logits"], reference.logits[:6])


@pytest.mark.slow
def test_the_loss_learns_the_epoch_through_the_alpha_schedule_callback(tmp_path, splits):
    """One channel for epoch-dependent loss state: the callback calls `set_epoch` at every epoch start, and the
    training logs carry the loss's `epoch_logs` (AduC's alpha; none for cross-entropy)."""
    epochs = []

    class Recording(AduCLoss):
        def set_epoch(self, epoch, num_epochs):
            epochs.append((epoch, num_epochs))
            super().set_epoch(epoch, num_epochs)

    trainer = make_trainer(tmp_path, splits, loss_fn=Recording(10, class_counts=train_counts(splits)), epochs=2)
    callbacks = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, AlphaScheduleCallback)]
    assert len(callbacks) == 1 and callbacks[0].loss is trainer.loss_fn and trainer.loss_fn.alpha == 1.0
    trainer.train()
    assert epochs == [(0, 2), (0, 2), (1, 2)]  # train begin, then every epoch begin
    assert [log["alpha"] for log in trainer.state.log_history if "loss" in log] == [1.0] * 3 + [
        alpha_schedule(1)
    ] * 3


@pytest.mark.slow
def test_cross_entropy_method_trains_on_one_view(tmp_path, splits):
    trainer = make_trainer(tmp_path, splits, loss_fn=CrossEntropyLoss(10), num_views=1, epochs=1)
    assert trainer.train_dataset[0]["pixel_values"].shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    trainer.train()
    assert "alpha" not in trainer.state.log_history[0]
    batch = collate_views([trainer.train_dataset[i] for i in range(4)])
    model = trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch)
        logits = model(pixel_values=batch["pixel_values"][:, 0]).logits
    torch.testing.assert_close(loss, F.cross_entropy(logits, batch["labels"]))


def test_evaluation_sees_every_image_once(tmp_path, splits):
    trainer = make_trainer(tmp_path, splits, epochs=1)
    test = SingleViewDataset(splits.test.select(range(17)), eval_transform(IMAGE_SIZE))
    prediction = trainer.predict(test)
    assert prediction.predictions.shape == (17, 10)  # batch 5: nothing dropped, nothing padded
    np.testing.assert_array_equal(prediction.label_ids, splits.test.select(range(17))["label"])
    metrics = trainer.evaluate(test, metric_key_prefix="test")
    assert {"test_accuracy", "test_macro_f1", "test_balanced_accuracy", "test_f1_0", "test_f1_9"} <= set(
        metrics
    )


def test_official_recipe_rejects_drop_last(tmp_path):
    with pytest.raises(ValueError, match="dataloader_drop_last"):
        AdUniTrainingArguments(output_dir=str(tmp_path), dataloader_drop_last=True)


@pytest.mark.slow
@pytest.mark.parametrize("max_grad_norm", [None, 1.0])
def test_one_official_step_is_a_plain_sgd_step(tmp_path, splits, max_grad_norm):
    """One optimiser step of the official recipe equals SGD written out by hand on the same batch: momentum
    buffer g + wd * p, step lr * buffer, weight decay on every parameter, and no clipping unless asked for."""
    overrides = {} if max_grad_norm is None else {"max_grad_norm": max_grad_norm}
    trainer = make_trainer(tmp_path, splits, epochs=1, max_steps=1, **overrides)
    assert trainer.args.max_grad_norm == (0.0 if max_grad_norm is None else max_grad_norm)
    trainer.model.classifier.dropout.p = 0.0  # the same forward in both computations
    reference = copy.deepcopy(trainer.model).train()
    trainer.train()

    keys = trainer.train_dataset.keys[:16]  # the first batch (accelerate's loader fetches one batch ahead)
    # draws 0-15 of epoch 0, in the order batch_shuffle gave them
    assert sorted(key.draw for key in keys) == list(range(16)) and {key.epoch for key in keys} == {0}
    batch = collate_views([trainer.train_dataset[key] for key in keys])
    views = batch["pixel_values"].transpose(0, 1).reshape(32, 3, IMAGE_SIZE, IMAGE_SIZE)
    outputs = reference(pixel_values=views)
    trainer.loss_fn(outputs.features, outputs.logits, batch["labels"], alpha=1.0).backward()
    parameters = list(reference.parameters())
    grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters])).item()
    assert grad_norm > 3.0  # well above 1: clipping to 1 would shrink the step
    scale = 1.0 if max_grad_norm is None else min(1.0, max_grad_norm / (grad_norm + 1e-6))
    learning_rate = official_learning_rate(0, base_lr=0.1, warmup_epochs=1, cosine_epochs=1, min_lr=1e-4)
    trained = dict(trainer.model.named_parameters())
    for name, parameter in reference.named_parameters():
        buffer = scale * parameter.grad + 1e-4 * parameter  # the first momentum buffer is the gradient itself
        expected = parameter - learning_rate * buffer
        torch.testing.assert_close(trained[name], expected, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
def test_gradient_checkpointing_from_the_recipe_trains(tmp_path, splits):
    """`gradient_checkpointing: true` (and its transformers-5 name `activation_checkpointing`) reaches timm's
    encoder, and a step trains as without it."""
    losses = {}
    for field in (None, "gradient_checkpointing", "activation_checkpointing"):
        overrides = {field: True} if field else {}
        trainer = make_trainer(tmp_path / str(field), splits, epochs=1, max_steps=1, **overrides)
        trainer.model.classifier.dropout.p = 0.0
        trainer.train()
        assert trainer.model.aduni.backbone.grad_checkpointing is (field is not None)
        losses[field] = trainer.state.log_history[0]["loss"]
    assert losses["gradient_checkpointing"] == pytest.approx(losses[None], rel=1e-5)
    assert losses["activation_checkpointing"] == pytest.approx(losses[None], rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["upsample", "class_aware", "sqrt", "progressive"])
def test_every_sampler_drives_training_and_sets_the_epoch_length(tmp_path, splits, sampler):
    """The Trainer draws the sampler's stream, epoch by epoch, and counts its steps from the sampler's length
    (the LR and alpha schedules follow it)."""
    trainer = make_trainer(tmp_path, splits, epochs=2, sampler=sampler, learning_rate=0.01)
    reference = trainer._get_train_sampler()
    assert type(reference).__name__ != "RandomEpochSampler"
    trainer.train()
    keys = trainer.train_dataset.keys
    for epoch in range(2):
        reference.set_epoch(epoch)
        assert [k for k in keys if k.epoch == epoch] == list(reference)
    per_epoch = steps_per_epoch(len(reference), trainer.args)
    assert trainer.state.global_step == 2 * math.ceil(len(reference) / 16) == 2 * per_epoch


@pytest.mark.slow
def test_the_contrast_set_class_counts_are_logged(tmp_path, splits):
    """The memory argument in the logs: per logging period, the mean number of views of the majority class and
    of a minority class among the views every anchor is contrasted with (the batch, both views)."""
    trainer = make_trainer(tmp_path, splits, epochs=1, logging_strategy="epoch")
    trainer.train()
    (log,) = [entry for entry in trainer.state.log_history if "contrast_majority" in entry]
    labels = torch.tensor(trainer.train_dataset.labels)
    majority = int(labels.bincount().argmax())
    drawn = labels[[key.index for key in trainer.train_dataset.keys]]
    per_batch = torch.stack([2 * torch.bincount(b, minlength=10) for b in drawn.split(16)]).double()
    minority = torch.cat([per_batch[:, :majority], per_batch[:, majority + 1 :]], dim=1)
    assert log["contrast_majority"] == pytest.approx(per_batch[:, majority].mean().item())
    assert log["contrast_minority"] == pytest.approx(minority.mean().item())
    counts = labels.bincount(minlength=10).double()
    rarest = int(counts.masked_fill(counts == 0, float("inf")).argmin())
    assert log["contrast_rarest"] == pytest.approx(per_batch[:, rarest].mean().item())
    assert log["contrast_majority"] > log["contrast_minority"]  # the long tail, in the batch


@pytest.mark.slow
def test_per_class_losses_are_logged_and_drop_last_train_batch_keeps_full_batches(tmp_path, splits):
    """With the incomplete last batch dropped (40 images, batch 16: two batches of 16), the logged epoch loss is the
    mean of equal-sized batch means, so it equals the count-weighted mean of the per-class losses."""
    trainer = make_trainer(
        tmp_path,
        splits,
        loss_fn=CrossEntropyLoss(10),
        num_views=1,
        epochs=1,
        logging_strategy="epoch",
        drop_last_train_batch=True,
    )
    trainer.train()
    assert trainer.state.global_step == 2 and len(trainer.train_dataset.keys) == 32
    (log,) = [entry for entry in trainer.state.log_history if "loss" in entry]
    drawn = torch.tensor(trainer.train_dataset.labels)[[key.index for key in trainer.train_dataset.keys]]
    counts = torch.bincount(drawn, minlength=10)
    per_class = {c: log[f"class_loss_LABEL_{c}"] for c in range(10) if counts[c] > 0}
    assert set(per_class) == {c for c in range(10) if f"class_loss_LABEL_{c}" in log}
    weighted = sum(counts[c].item() * value for c, value in per_class.items()) / counts.sum().item()
    assert weighted == pytest.approx(log["loss"], rel=1e-4)


@pytest.mark.slow
def test_channels_last_trains_the_same_step_up_to_rounding(tmp_path, splits):
    """channels_last changes the memory layout only: one official step gives the same weights to float rounding."""
    weights = []
    for channels_last in (False, True):
        trainer = make_trainer(tmp_path / str(channels_last), splits, epochs=1, max_steps=1, backbone="resnet18",
                               channels_last=channels_last)  # fmt: skip
        trainer.train()
        if channels_last:
            assert trainer.model.aduni.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        weights.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})
    for name, value in weights[0].items():
        if value.is_floating_point():
            assert torch.allclose(weights[1][name], value, rtol=1e-4, atol=1e-5), name
