"""`batch_shuffle` through the real Trainer: each global batch reaches the model in a random order by default, the
sampler's order with `batch_shuffle: false` (what runs before the field drew), and one process without chunks
trains the same step either way, up to float rounding."""

import pytest

from aduni_hf.data import build_sampler
from tests.training.trainer_helpers import digits_splits, make_trainer

BATCH = 16  # make_trainer's per-device batch; one process, so also the global batch


@pytest.fixture(scope="module")
def splits():
    return digits_splits()


def trained_batches(tmp_path, splits, **overrides):
    """The keys of every training batch of one epoch of `upsample`, and the first step's log."""
    trainer = make_trainer(tmp_path, splits, epochs=1, sampler="upsample", learning_rate=0.01, **overrides)
    trainer.model.classifier.dropout.p = 0.0  # dropout masks follow the position in the batch
    trainer.train()
    keys = trainer.train_dataset.keys
    batches = [keys[start : start + BATCH] for start in range(0, len(keys), BATCH)]
    return trainer, batches, trainer.state.log_history[0]


@pytest.mark.slow
def test_the_trainer_shuffles_every_global_batch_and_batch_shuffle_false_keeps_the_sampler_order(
    tmp_path, splits
):
    shuffled_trainer, shuffled, shuffled_loss = trained_batches(tmp_path / "shuffled", splits)
    grouped_trainer, grouped, grouped_loss = trained_batches(
        tmp_path / "grouped", splits, batch_shuffle=False
    )
    assert shuffled_trainer.args.batch_shuffle is True and grouped_trainer.args.batch_shuffle is False

    labels = shuffled_trainer.train_dataset.labels
    sampler = build_sampler(
        "upsample", labels, seed=0, batch_size=BATCH
    )  # the sampler's own (class-by-class) order
    assert [key for batch in grouped for key in batch] == list(sampler)
    # the same images with the same views (the same keys) in every batch, in another order
    assert len(shuffled) == len(grouped) > 1
    assert all(sorted(a) == sorted(b) for a, b in zip(shuffled, grouped, strict=True))
    assert any(a != b for a, b in zip(shuffled, grouped, strict=True))
    classes = [[labels[key.index] for key in batch] for batch in grouped]
    assert all(batch == sorted(batch) for batch in classes)  # class by class before the shuffle ...
    assert not all(
        batch == sorted(batch) for batch in ([labels[key.index] for key in b] for b in shuffled)
    )  # ... mixed after it

    # One process, no chunks: the permutation of a batch changes only the order of float sums (BatchNorm over the
    # whole batch, AduC invariant to a permutation of the images), so the first step is the same up to rounding
    # (later steps drift apart as rounding differences grow: measured 1e-4 in the second step's gradient norm).
    assert shuffled_loss["loss"] == pytest.approx(grouped_loss["loss"], rel=1e-5)
    assert shuffled_loss["grad_norm"] == pytest.approx(grouped_loss["grad_norm"], rel=1e-5)
