"""CICL (Marrakchi et al., MICCAI 2021; YMarrakchi/CICL): supervised contrastive pre-training, then a linear
classifier on the frozen encoder with class-balanced batches."""

from __future__ import annotations

from ..evaluation.paper_results import rows_of
from ..losses import CrossEntropyLoss, SupConLoss
from .decouple import SECOND_STAGE_FIELDS
from .method import Method, Stage, register

CICL = register(
    Method(
        name="cicl",
        description=(
            "CICL (Marrakchi et al., MICCAI 2021): supervised contrastive pre-training on up-sampled batches, then a "
            "linear classifier on the frozen encoder with class-balanced batches."
        ),
        stages=(
            # SupCon L_out on two views, no classifier term: the classifier is frozen (the official stage-1 model has
            # none); T 0.1 and T_b 0.07 as main_supcon.py.
            Stage(
                loss=lambda inputs: SupConLoss(
                    inputs.num_classes,
                    temperature=inputs.args.temperature,
                    base_temperature=inputs.args.base_temperature,
                ),
                num_views=2,
                description="SupCon",
                freeze_classifier=True,
            ),
            # main_linear.py: the encoder in eval mode (BatchNorm frozen), always-balanced (up-sampled) batches
            # whatever stage 1 used.
            Stage(
                loss=lambda inputs: CrossEntropyLoss(inputs.num_classes),
                description="cross-entropy",
                sampler="upsample",
                freeze_encoder=True,
                reinit_classifier=True,
                bn_mode="eval",
            ),
        ),
        fields=("temperature", "base_temperature", *SECOND_STAGE_FIELDS),
        recommended_sampler="upsample",  # the official `--balance`
        paper=rows_of("cicl"),
    )
)
