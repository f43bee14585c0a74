"""Decouple, cRT (Kang et al., ICLR 2020; facebookresearch/classifier-balancing): cross-entropy, then a
re-initialised classifier on the frozen encoder with class-aware sampling; tau-normalisation reported beside it."""

from __future__ import annotations

from ..evaluation.paper_results import rows_of
from ..evaluation.tau_norm import tau_norm_evaluation
from ..losses import CrossEntropyLoss
from ..modeling_aduni import AdUniForImageClassification
from .method import Method, MethodReport, Stage, TrainedRun, register

SECOND_STAGE_FIELDS = ("stage2_epochs", "stage2_learning_rate", "stage2_bn")


def cross_entropy(inputs) -> CrossEntropyLoss:
    return CrossEntropyLoss(inputs.num_classes)


def stage1_tau_norm(run: TrainedRun) -> MethodReport | None:
    """tau-normalisation (Kang et al. 2020, Sec. 4) of the stage-1 model as saved, before stage 2 changed its
    BatchNorm statistics: tau chosen on the validation split, then the test fold evaluated once."""
    model = AdUniForImageClassification.from_pretrained(run.stage_dirs[0]).to(run.device)
    eval_metrics, test_metrics = tau_norm_evaluation(
        model,
        run.val_dataset,
        run.test_dataset,
        run.class_names,
        batch_size=run.batch_size,
        device=run.device,
    )
    if not test_metrics:  # no validation split, or a cosine classifier
        return None
    title = f"tau-normalised stage-1 classifier, tau {test_metrics['tau_norm_tau']:g} (chosen on validation)"
    return MethodReport("tau_norm", title, eval_metrics, test_metrics)


DECOUPLE = register(
    Method(
        name="decouple",
        description=(
            "Decouple, cRT (Kang et al., ICLR 2020): cross-entropy training, then a re-initialised classifier trained "
            "on the frozen encoder with class-aware sampling."
        ),
        stages=(
            Stage(loss=cross_entropy, description="cross-entropy"),
            # cls_crt puts every network in train(): BatchNorm statistics follow the class-balanced batches.
            # An epoch is the batches of an instance-balanced one (run_networks.py's epoch_steps = N / batch).
            Stage(
                loss=cross_entropy,
                description="cross-entropy",
                sampler="class_aware",
                freeze_encoder=True,
                reinit_classifier=True,
                bn_mode="train",
                epoch_length="dataset",
            ),
        ),
        fields=SECOND_STAGE_FIELDS,
        recommended_sampler="none",  # the official first stage is instance-balanced
        paper=rows_of("decouple"),
        after_training=stage1_tau_norm,
    )
)
