"""LDAM-DRW (Cao et al., NeurIPS 2019): margins on a cosine classifier, deferred re-weighting (Table 1)."""

from __future__ import annotations

from ..evaluation.paper_results import rows_of
from ..losses import LDAMDRWLoss
from .method import LossInputs, Method, Stage, register


def ldam_drw_loss(inputs: LossInputs) -> LDAMDRWLoss:
    args = inputs.args
    return LDAMDRWLoss(
        inputs.num_classes,
        inputs.class_counts,
        max_margin=args.max_margin,
        ldam_scale=args.ldam_scale,
        drw_beta=args.drw_beta,
        drw_start=args.drw_start,
    )


LDAM_DRW = register(
    Method(
        name="ldam_drw",
        description=(
            "LDAM-DRW (Cao et al., NeurIPS 2019): label-distribution-aware margins on a cosine classifier (scale 30), "
            "with deferred re-weighting by the effective number of samples from 80 % of training."
        ),
        stages=(Stage(loss=ldam_drw_loss, description="LDAM, re-weighted from drw_start"),),
        fields=("max_margin", "ldam_scale", "drw_beta", "drw_start"),
        classifier_type="cosine",  # the official NormedLinear (kaidic/LDAM-DRW, models/resnet_cifar.py)
        paper=rows_of("ldam_drw"),
    )
)
