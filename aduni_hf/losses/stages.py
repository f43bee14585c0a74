"""Methods trained in stages: the `Stage` description, and the two-stage methods of Table 1 (decouple, cicl).

A method's loss class may carry `first_stage` and `second_stage` (`Stage`s); `aduni_hf.training.stages` runs
them. Registering the methods here, with the other losses, keeps `LOSSES` complete on `import aduni_hf.losses`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .cross_entropy import CrossEntropyLoss
from .registry import LOSSES
from .supcon import SupConLoss

STAGE2_BN_MODES = ("train", "eval")
# The sampler of a stage whose batches a learned sampler draws (BALMS's Meta Sampler, aduni_hf/losses/balms.py):
# the stage's loss holds the sampler's weights and `aduni_hf.training.meta_sampling.MetaSamplingTrainer` trains it.
META_SAMPLER = "meta"


@dataclass(frozen=True)
class Stage:
    """One training stage of a method.

    Attributes:
        loss: the stage's loss: a `LOSSES` name, or a loss class that is no method of its own (BALMS's second
            stage); None: the method's own loss (its first stage).
        sampler: the training sampler (`aduni_hf.data.SAMPLERS`), or `META_SAMPLER`; None: the recipe's `sampler`.
        freeze_encoder: the encoder (`model.aduni`: backbone and projection head) does not train: requires_grad
            False, so it is in no optimiser and its weights stay as they are.
        freeze_classifier: the classifier likewise (a stage whose loss has no classifier term).
        reinit_classifier: the classifier gets fresh weights at the start of the stage (PyTorch's default Linear
            init, the official heads', drawn from a generator seeded by the recipe's seed).
        bn_mode: with a frozen encoder, "train" (BatchNorm normalises with batch statistics and updates its
            running statistics) or "eval" (frozen); the recipe's `stage2_bn` overrides it in a second stage.
        epoch_length: "sampler" (an epoch is the sampler's) or "dataset" (the batches of an instance-balanced
            epoch; see `AdUniTrainer`).
    """

    loss: str | type[nn.Module] | None = None
    sampler: str | None = None
    freeze_encoder: bool = False
    freeze_classifier: bool = False
    reinit_classifier: bool = False
    bn_mode: str = "train"
    epoch_length: str = "sampler"

    def __post_init__(self) -> None:
        if self.bn_mode not in STAGE2_BN_MODES:
            raise ValueError(f"bn_mode must be one of {STAGE2_BN_MODES}, got {self.bn_mode!r}")

    @property
    def encoder_mode(self) -> str | None:
        """What `AdUniTrainer(encoder_mode=...)` needs: "eval" for a frozen encoder in eval mode, else None."""
        return "eval" if self.freeze_encoder and self.bn_mode == "eval" else None


# ---- the two-stage methods --------------------------------------------------------------------------------------
@LOSSES.register("decouple")
class DecoupleLoss(CrossEntropyLoss):
    """Decouple, cRT (Kang et al., ICLR 2020): stage 1 is plain cross-entropy on one view (this loss); stage 2
    re-trains a re-initialised classifier on the frozen encoder with class-aware sampling (`second_stage`).
    The stage-1 model is also evaluated with tau-normalisation (`tau_norm_evaluation`)."""

    recommended_sampler = "none"  # the official first stage is instance-balanced
    evaluates_tau_norm = True
    second_stage = Stage(
        loss="ce",
        sampler="class_aware",
        freeze_encoder=True,
        reinit_classifier=True,
        bn_mode="train",
        epoch_length="dataset",
    )


@LOSSES.register("cicl")
class CICLLoss(SupConLoss):
    """CICL (Marrakchi et al., MICCAI 2021): stage 1 is SupCon on two views (this loss; the classifier is
    frozen, as the official stage-1 model has none); stage 2 trains a re-initialised linear classifier on the
    frozen encoder in eval mode with always-balanced (up-sampled) batches (`second_stage`)."""

    recommended_sampler = "upsample"  # the official `--balance`
    first_stage = Stage(freeze_classifier=True)
    second_stage = Stage(
        loss="ce",
        sampler="upsample",
        freeze_encoder=True,
        reinit_classifier=True,
        bn_mode="eval",
    )


def method_stages(method: str) -> tuple[Stage, ...]:
    """The stages of `method`: its `first_stage` (default `Stage()`) and, for two-stage methods, `second_stage`."""
    loss_class = LOSSES[method]
    first = getattr(loss_class, "first_stage", None) or Stage()
    second = getattr(loss_class, "second_stage", None)
    return (first,) if second is None else (first, second)
