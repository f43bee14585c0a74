"""AdUni (Cong et al., MLMI 2022) and "AdUni w/o AduC", its Table 1 ablation with a constant alpha."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..evaluation.paper_results import PAPER_FIXED_ALPHA_001, PaperEntry, rows_of
from ..losses import AduCLoss
from .method import LossInputs, Method, Stage, register

if TYPE_CHECKING:
    from .method_arguments import MethodArguments

ADUC_FIELDS = (
    "temperature", "base_temperature", "beta", "logit_adjustment",
    "classifier_temperature", "positive_normalisation", "beta_from_alpha",
)  # fmt: skip
ALPHA_FIELDS = ("alpha_schedule", "alpha_max", "alpha_min", "alpha_decay")


def aduc_loss(inputs: LossInputs, constant_alpha: bool = False) -> AduCLoss:
    """The AduC loss of the recipe (docs/method.md, "The AduC loss"); class counts of the training split for the
    logit adjustment. `constant_alpha`: alpha stays `alpha_max` whatever `alpha_schedule` says."""
    args = inputs.args
    schedule = args.alpha().held_constant() if constant_alpha else args.alpha()
    return AduCLoss(
        inputs.num_classes,
        class_counts=inputs.class_counts,
        temperature=args.temperature,
        base_temperature=args.base_temperature,
        beta=args.beta,
        logit_adjustment=args.logit_adjustment,
        classifier_temperature=args.classifier_temperature,
        positive_normalisation=args.positive_normalisation,
        beta_from_alpha=args.beta_from_alpha,
        alpha_schedule=schedule,
    )


ADUNI = register(
    Method(
        name="aduni",
        description=(
            "the AduC loss puts the classifier logits (shifted by the log class prior) and the other views of the "
            "batch in one softmax; alpha, the weight of same-class views, falls from alpha_max to alpha_min over "
            "training (feature learning first, classifier learning later). No memory queue: the batch only."
        ),
        stages=(Stage(loss=aduc_loss, num_views=2, description="AduC, alpha scheduled"),),
        fields=ADUC_FIELDS + ALPHA_FIELDS,
        paper=rows_of("aduni"),
    )
)


def fixed_alpha_paper_row(dataset: str, sampler: str, args: MethodArguments) -> PaperEntry | None:
    """With alpha held at 0.01, the run is Table 2's fixed-alpha row; with the official alpha (1), Table 1's
    "AdUni w/o AduC" (the method's `paper` rows)."""
    if abs(args.alpha_max - 0.01) < 1e-12:
        return PAPER_FIXED_ALPHA_001.get((dataset, sampler))
    return None


# The released code's path when `--adp_alpha` is left out: alpha stays `--alpha` (1 by default) for the whole run.
# The recipe's `alpha_max` is the constant (docs/method.md, "Schedules").
ADUNI_FIXED = register(
    Method(
        name="aduni_fixed",
        description=(
            "the AduC loss with alpha held constant ('AdUni w/o AduC' in the paper's Table 1): the same unified loss "
            "and model, no adaptive schedule."
        ),
        stages=(
            Stage(
                loss=lambda inputs: aduc_loss(inputs, constant_alpha=True),
                num_views=2,
                description="AduC, alpha constant at alpha_max",
            ),
        ),
        fields=(*ADUC_FIELDS, "alpha_max"),
        paper=rows_of("aduni_fixed"),
        paper_variant=fixed_alpha_paper_row,
    )
)
