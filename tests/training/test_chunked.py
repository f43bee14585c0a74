"""contrast_chunk_size: the whole batch's loss with one chunk's activations at a time (gradient caching), against
the computation it stands for: each chunk through the model with gradient (BatchNorm on that chunk, dropout
drawn in chunk order), the loss of all rows, one backward."""

import numpy as np
import pytest
import torch

from aduni_hf.losses import AduCLoss, CrossEntropyLoss, PaCoLoss
from aduni_hf.training.chunked import _running_statistics
from tests.training.trainer_helpers import NUM_TRAIN, digits_splits, make_trainer


@pytest.fixture(scope="module")
def splits():
    return digits_splits()


def _batch(trainer, size=8):
    items = [trainer.train_dataset[i] for i in range(size)]
    return {
        "pixel_values": torch.stack([item["pixel_values"] for item in items]),
        "labels": torch.tensor([item["labels"] for item in items]),
    }


def _counts(splits):
    return np.bincount(splits.train.select(range(NUM_TRAIN))["label"], minlength=10).tolist()


def _reference(model, loss_fn, batch, chunk_rows):
    """Per-chunk forward with gradient, the loss of all rows, one backward: (gradients, BatchNorm statistics
    after the first chunk, RNG state at the end of the forwards)."""
    model.train()
    pixel_values, labels = batch["pixel_values"], batch["labels"]
    views, images = pixel_values.shape[1], pixel_values.shape[0]
    rows = pixel_values.transpose(0, 1).reshape(views * images, *pixel_values.shape[2:])
    features, logits, after_first = [], [], None
    for index, chunk in enumerate(rows.split(chunk_rows)):
        output = model(pixel_values=chunk)
        features.append(output.features)
        logits.append(output.logits)
        if index == 0:
            after_first = _running_statistics(model)
    end_state = torch.get_rng_state()
    output = type("Output", (), {"features": torch.cat(features), "logits": torch.cat(logits)})
    loss_fn.from_outputs(output, labels).loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return grads, after_first, end_state


def _chunked(trainer, batch):
    trainer.current_gradient_accumulation_steps = 1  # what the training loop sets before its steps
    torch.manual_seed(123)
    loss = trainer.training_step(trainer.model, batch)
    grads = {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
    return loss, grads, _running_statistics(trainer.model), torch.get_rng_state()


def _assert_close(grads, expected):
    assert set(grads) == set(expected)
    for name, value in expected.items():
        error = float((grads[name] - value).norm() / value.norm().clamp_min(1e-12))
        assert error <= 1e-5, (name, error)


@pytest.mark.slow
@pytest.mark.parametrize("gradient_checkpointing", [False, True])
def test_chunked_gradients_equal_the_per_chunk_batch_norm_computation(
    tmp_path, splits, gradient_checkpointing
):
    counts = _counts(splits)
    trainer = make_trainer(tmp_path, splits, loss_fn=AduCLoss(10, class_counts=counts), contrast_chunk_size=4,
                           gradient_checkpointing=gradient_checkpointing)  # fmt: skip
    reference_model = type(trainer.model)(trainer.model.config)
    reference_model.load_state_dict(trainer.model.state_dict())
    reference_model.to(memory_format=trainer.args.memory_format)  # the recipe's layout (channels_last by default)
    assert trainer.model.config.classifier_dropout > 0  # dropout is active: its masks must match
    batch = _batch(trainer)
    loss, grads, statistics, end_state = _chunked(trainer, batch)

    torch.manual_seed(123)
    expected, after_first, expected_state = _reference(
        reference_model, AduCLoss(10, class_counts=counts), batch, chunk_rows=4
    )  # alpha 1, the official schedule's first epoch, in both
    _assert_close(grads, expected)
    assert all(torch.equal(statistics[k], v) for k, v in after_first.items())  # updated once, by chunk 0
    assert torch.equal(end_state, expected_state)  # the RNG ends where the chunk forwards left it
    assert torch.isfinite(loss)


@pytest.mark.slow
def test_one_chunk_is_the_ordinary_step_and_cross_entropy_chunks_too(tmp_path, splits):
    counts = _counts(splits)
    whole = make_trainer(tmp_path / "a", splits, loss_fn=AduCLoss(10, class_counts=counts))
    one_chunk = make_trainer(tmp_path / "b", splits, loss_fn=AduCLoss(10, class_counts=counts),
                             contrast_chunk_size=16)  # fmt: skip
    batch = _batch(whole)
    _, expected = _chunked(whole, batch)[:2]
    loss, grads = _chunked(one_chunk, batch)[:2]
    _assert_close(grads, expected)

    ce = make_trainer(tmp_path / "c", splits, loss_fn=CrossEntropyLoss(10), num_views=1, contrast_chunk_size=2)
    reference = type(ce.model)(ce.model.config)
    reference.load_state_dict(ce.model.state_dict())
    reference.to(memory_format=ce.args.memory_format)
    batch = _batch(ce)
    _, grads, _, _ = _chunked(ce, batch)
    torch.manual_seed(123)
    expected, _, _ = _reference(reference, CrossEntropyLoss(10), batch, chunk_rows=2)
    _assert_close(grads, expected)


def test_methods_with_their_own_forward_are_refused(tmp_path, splits):
    counts = _counts(splits)
    trainer = make_trainer(tmp_path, splits, contrast_chunk_size=4, epochs=1)
    trainer.loss_fn = PaCoLoss(10, class_counts=counts, model=trainer.model, queue_size=32)
    with pytest.raises(ValueError, match="cannot be chunked"):
        _chunked(trainer, _batch(trainer))
