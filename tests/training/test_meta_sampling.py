"""BALMS's second stage through the real Trainer: `MetaSamplingTrainer` on a frozen encoder."""

import numpy as np
import pytest
import torch

from aduni_hf.losses import MetaBalancedSoftmaxLoss
from aduni_hf.methods import METHODS
from aduni_hf.recipes.staged_training import prepare_model
from aduni_hf.training.meta_sampling import MetaSamplingTrainer
from tests.training.trainer_helpers import NUM_TRAIN, digits_splits, make_trainer


@pytest.fixture(scope="module")
def splits():
    return digits_splits()


def _balms_stage2_trainer(tmp_path, splits, optimizer_recipe="official", loss_fn=None, **overrides):
    counts = np.bincount(splits.train.select(range(NUM_TRAIN))["label"], minlength=10).tolist()
    loss = loss_fn if loss_fn is not None else MetaBalancedSoftmaxLoss(10, class_counts=counts)
    trainer = make_trainer(
        tmp_path,
        splits,
        loss_fn=loss,
        num_views=1,
        epochs=2,
        trainer_class=MetaSamplingTrainer,
        sampler="meta",
        optimizer_recipe=optimizer_recipe,
        learning_rate=0.05,
        warmup_epochs=0,
        **overrides,
    )
    prepare_model(trainer.model, METHODS["balms"].stages[1], seed=0)
    return trainer


@pytest.mark.slow
def test_stage2_trains_the_classifier_and_the_sampler_on_a_bit_identical_encoder(tmp_path, splits):
    trainer = _balms_stage2_trainer(tmp_path, splits)
    encoder = {
        k: v.clone()
        for k, v in trainer.model.base_model.state_dict().items()
        if "running" not in k and "batches_tracked" not in k
    }
    classifier = trainer.model.classifier.dense.weight.detach().clone()
    trainer.train()
    steps = trainer.state.global_step
    assert steps == 2 * (NUM_TRAIN // 16)  # floor(N / B) batches per epoch
    after = trainer.model.base_model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in encoder.items())
    assert not torch.equal(trainer.model.classifier.dense.weight, classifier)
    assert int(trainer.loss_fn.adam_step) == steps  # one meta step before every optimiser step
    assert trainer.loss_fn.sampler_logits.detach().abs().sum() > 0  # moved from the instance-balanced 0
    assert not trainer.loss_fn.pending or max(trainer.loss_fn.pending) >= (1, 0)  # nothing trained twice
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and sum(v for k, v in logged[-1].items() if k.startswith("meta_share_")) == pytest.approx(
        1.0
    )


def _runs_of_one_class(labels: list[int]) -> list[int]:
    """The lengths of the runs of equal consecutive labels."""
    runs = [1]
    for before, label in zip(labels, labels[1:], strict=False):
        if label == before:
            runs[-1] += 1
        else:
            runs.append(1)
    return runs


def test_meta_batches_are_class_balanced_and_a_pure_function_of_the_step(tmp_path, splits):
    trainer = _balms_stage2_trainer(tmp_path, splits)
    images, labels = trainer.meta_batch(5)
    again_images, again_labels = _balms_stage2_trainer(tmp_path / "other", splits).meta_batch(5)
    assert torch.equal(images, again_images) and torch.equal(labels, again_labels)
    present = int((torch.bincount(torch.tensor(trainer.train_dataset.labels), minlength=10) > 0).sum())
    counts = torch.bincount(labels, minlength=10)
    # one image of each class in turn (16 draws = 2 passes over the 8 classes of these 40 images)
    assert present == 8 and set(counts[counts > 0].tolist()) == {2}
    assert not torch.equal(trainer.meta_batch(6)[1], labels) or not torch.equal(
        trainer.meta_batch(6)[0], images
    )


def test_meta_batches_take_one_image_of_each_class_in_turn_as_the_released_meta_set(tmp_path, splits):
    """The released main.py builds the meta set's ClassAwareSampler with only is_infinite=True: its
    num_samples_cls stays 1, so classes come in shuffled passes of one image each. The recipe field gives 4 (the
    runs of earlier recipes) as an option."""
    labels = torch.tensor(_balms_stage2_trainer(tmp_path, splits).train_dataset.labels)
    present = int((torch.bincount(labels, minlength=10) > 0).sum())
    for per_class in (1, 4):
        counts = np.bincount(labels.tolist(), minlength=10).tolist()
        loss = MetaBalancedSoftmaxLoss(10, class_counts=counts, meta_samples_per_class=per_class)
        trainer = _balms_stage2_trainer(tmp_path / str(per_class), splits, loss_fn=loss)
        # the meta batches of steps 0-5: 96 draws
        stream = torch.cat([trainer.meta_batch(step)[1] for step in range(6)]).tolist()
        assert trainer._meta_sampler.num_samples_cls == per_class
        runs = _runs_of_one_class(stream)
        if per_class == 1:  # every pass visits each present class once
            assert all(len(set(stream[i : i + present])) == present for i in range(0, len(stream), present))
            assert max(runs) <= 2  # two passes may meet on one class, never more
        else:
            assert all(run % 4 == 0 for run in runs)  # runs of 4 (two runs of one class may meet)
    released = MetaBalancedSoftmaxLoss(10, class_counts=counts)
    assert released.meta_samples_per_class == 1
    with pytest.raises(ValueError, match="meta_samples_per_class must be >= 1, got 0"):
        MetaBalancedSoftmaxLoss(10, class_counts=counts, meta_samples_per_class=0)


def test_the_meta_step_refuses_what_it_cannot_differentiate(tmp_path, splits):
    with pytest.raises(ValueError, match="gradient_accumulation_steps=2"):
        _balms_stage2_trainer(tmp_path, splits, gradient_accumulation_steps=2)
    trainer = _balms_stage2_trainer(tmp_path / "adamw", splits, optimizer_recipe="trainer")
    with pytest.raises(TypeError, match="differentiates an SGD step"):
        trainer.train()
