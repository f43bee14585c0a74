"""PaCo (Cui et al., ICCV 2021) and PaCo+AduC, whose positives' weight follows AduC's alpha schedule (Table 1)."""

from __future__ import annotations

from ..evaluation.paper_results import rows_of
from ..losses import PaCoLoss
from .method import LossInputs, Method, Stage, register

PACO_FIELDS = (
    "temperature", "paco_beta", "paco_gamma", "queue_size", "paco_momentum", "logit_adjustment",
)  # fmt: skip


def paco_loss(inputs: LossInputs, scheduled_alpha: bool = False) -> PaCoLoss:
    """PaCo's loss with its momentum key encoder, a copy of `inputs.model`; `scheduled_alpha`: alpha follows the
    recipe's alpha schedule instead of the constant `paco_alpha` (PaCo+AduC)."""
    args = inputs.args
    return PaCoLoss(
        inputs.num_classes,
        class_counts=inputs.class_counts,
        model=inputs.model,
        temperature=args.temperature,
        paco_alpha=args.paco_alpha,
        paco_beta=args.paco_beta,
        paco_gamma=args.paco_gamma,
        queue_size=args.queue_size,
        paco_momentum=args.paco_momentum,
        logit_adjustment=args.logit_adjustment,
        alpha_schedule=args.alpha() if scheduled_alpha else None,
    )


PACO = register(
    Method(
        name="paco",
        description=(
            "PaCo (Cui et al., ICCV 2021): supervised contrastive learning of the query view against its momentum-"
            "encoded key view and a labelled queue of past keys, with the classifier weights as class centres."
        ),
        # The key view goes through the loss's own encoder: its batch cannot be split into chunks.
        stages=(Stage(loss=paco_loss, num_views=2, description="PaCo", chunkable=False),),
        fields=(*PACO_FIELDS, "paco_alpha"),
        paper=rows_of("paco"),
    )
)

PACO_ADUC = register(
    Method(
        name="paco_aduc",
        description="PaCo with the weight of the contrastive positives following AduC's alpha schedule (PaCo+AduC).",
        stages=(
            Stage(
                loss=lambda inputs: paco_loss(inputs, scheduled_alpha=True),
                num_views=2,
                description="PaCo, alpha scheduled",
                chunkable=False,
            ),
        ),
        fields=(*PACO_FIELDS, "alpha_schedule", "alpha_max", "alpha_min", "alpha_decay"),
        paper=rows_of("paco_aduc"),
    )
)
