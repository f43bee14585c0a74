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


def _balms_stage2_trainer(tmp_path, splits, optimizer_recipe="official", **overrides):
    counts = np.bincount(splits.train.select(range(NUM_TRAIN))["label"], minlength=10).tolist()
    loss = MetaBalancedSoftmaxLoss(10, class_counts=counts)
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


def test_meta_batches_are_class_balanced_and_a_pure_function_of_the_step(tmp_path, splits):
    trainer = _balms_stage2_trainer(tmp_path, splits)
    images, labels = trainer.meta_batch(5)
    again_images, again_labels = _balms_stage2_trainer(tmp_path / "other", splits).meta_batch(5)
    assert torch.equal(images, again_images) and torch.equal(labels, again_labels)
    counts = torch.bincount(labels, minlength=10)
    assert set(counts[counts > 0].tolist()) == {4}  # class-aware: 4 per class in turn
    assert not torch.equal(trainer.meta_batch(6)[1], labels) or not torch.equal(
        trainer.meta_batch(6)[0], images
    )


def test_the_meta_step_refuses_what_it_cannot_differentiate(tmp_path, splits):
    with pytest.raises(ValueError, match="gradient_accumulation_steps=2"):
        _balms_stage2_trainer(tmp_path, splits, gradient_accumulation_steps=2)
    trainer = _balms_stage2_trainer(tmp_path / "adamw", splits, optimizer_recipe="trainer")
    with pytest.raises(TypeError, match="differentiates an SGD step"):
        trainer.train()
