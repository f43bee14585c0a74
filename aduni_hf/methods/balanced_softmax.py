"""Balanced Softmax end to end (Ren et al., NeurIPS 2020): the one-stage variant of its repository."""

from __future__ import annotations

from ..evaluation.paper_results import rows_of
from ..losses import BalancedSoftmaxLoss
from .method import Method, Stage, register

BALANCED_SOFTMAX = register(
    Method(
        name="balanced_softmax",
        description=(
            "Balanced Softmax (Ren et al., NeurIPS 2020), end to end: cross-entropy on the logits shifted by the log "
            "class prior during training; raw logits at inference."
        ),
        stages=(
            Stage(
                loss=lambda inputs: BalancedSoftmaxLoss(inputs.num_classes, inputs.class_counts),
                description="Balanced Softmax",
            ),
        ),
        paper=rows_of("balanced_softmax"),
    )
)
