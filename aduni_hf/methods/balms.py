"""BALMS (Ren et al., NeurIPS 2020): cross-entropy, then a re-initialised classifier on the frozen encoder trained
with Balanced Softmax on batches of a learned Meta Sampler (docs/method.md, "BALMS and its Meta Sampler")."""

from __future__ import annotations

from ..evaluation.paper_results import rows_of
from ..losses import CrossEntropyLoss, MetaBalancedSoftmaxLoss
from ..training import MetaSamplingTrainer
from .decouple import SECOND_STAGE_FIELDS
from .method import Method, Stage, register

BALMS = register(
    Method(
        name="balms",
        description=(
            "BALMS (Ren et al., NeurIPS 2020): cross-entropy training, then a re-initialised classifier trained on the "
            "frozen encoder with Balanced Softmax on batches of a learned Meta Sampler (bilevel: one differentiated "
            "classifier step per batch, judged on class-balanced meta batches)."
        ),
        stages=(
            Stage(loss=lambda inputs: CrossEntropyLoss(inputs.num_classes), description="cross-entropy"),
            # BatchNorm in train mode, as the official run, which puts every network in train(); the batches are the
            # Meta Sampler's (MetaSamplingTrainer), epochs of N/B batches.
            Stage(
                loss=lambda inputs: MetaBalancedSoftmaxLoss(
                    inputs.num_classes,
                    inputs.class_counts,
                    meta_learning_rate=inputs.args.meta_learning_rate,
                    meta_init_pow=inputs.args.meta_init_pow,
                    meta_samples_per_class=inputs.args.meta_samples_per_class,
                ),
                description="Balanced Softmax on Meta Sampler batches, with a meta step before every step",
                sampler="meta",  # the stage's trainer draws its batches with the Meta Sampler, no SAMPLERS entry
                freeze_encoder=True,
                reinit_classifier=True,
                bn_mode="train",
                epoch_length="dataset",
                trainer_class=MetaSamplingTrainer,
            ),
        ),
        fields=("meta_learning_rate", "meta_init_pow", "meta_samples_per_class", *SECOND_STAGE_FIELDS),
        recommended_sampler="none",  # the official first stage is instance-balanced
        paper=rows_of("balms"),
    )
)
