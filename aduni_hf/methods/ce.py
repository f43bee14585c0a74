"""CE: plain cross-entropy on one augmented view, the baseline row of the paper's Table 1."""

from __future__ import annotations

from ..evaluation.paper_results import rows_of
from ..losses import CrossEntropyLoss
from .method import Method, Stage, register

CE = register(
    Method(
        name="ce",
        description="plain cross-entropy on one augmented view (the CE baseline of the paper's Table 1).",
        stages=(
            Stage(loss=lambda inputs: CrossEntropyLoss(inputs.num_classes), description="cross-entropy"),
        ),
        paper=rows_of("ce"),
    )
)
