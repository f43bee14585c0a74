"""`MethodArguments`: the recipe fields of the training methods (`aduni_hf.methods`), validated when built."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..data import SAMPLERS
from ..schedules import ALPHA_SCHEDULES, DEFAULT_ALPHA, AlphaSchedule
from .method import BN_MODES, METHODS


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def _count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass
class MethodArguments:
    """The training method: its loss, its sampler and, for AdUni, the AduC constants and alpha schedule."""

    method: str = field(default="aduni", metadata={"help": f"Training method: {', '.join(METHODS)}."})
    sampler: str = field(default="none", metadata={"help": f"Training sampler: {', '.join(SAMPLERS)}."})
    temperature: float = field(
        default=0.1, metadata={"help": "AduC temperature T of the sample similarities."}
    )
    base_temperature: float = field(
        default=0.07, metadata={"help": "AduC T_b; the loss is scaled by T/T_b (official 0.07: x1.43)."}
    )
    beta: float = field(default=1.0, metadata={"help": "Weight of the own-class classifier column."})
    alpha_schedule: str = field(
        default=DEFAULT_ALPHA.kind, metadata={"help": f"Alpha schedule kind: {', '.join(ALPHA_SCHEDULES)}."}
    )
    alpha_max: float = field(
        default=DEFAULT_ALPHA.alpha_max, metadata={"help": "Alpha at the start (and the constant value)."}
    )
    alpha_min: float = field(default=DEFAULT_ALPHA.alpha_min, metadata={"help": "Alpha at the end."})
    alpha_decay: float = field(
        default=DEFAULT_ALPHA.decay, metadata={"help": "t_decay of the official/cosine/step schedules."}
    )
    logit_adjustment: bool = field(
        default=True,
        metadata={
            "help": "Shift the classifier logits by the log training prior inside AduC and PaCo (official)."
        },
    )
    # The paper's alternatives to the released AduC (docs/method.md, "Paper and code: every difference")
    classifier_temperature: float = field(
        default=1.0,
        metadata={
            "help": "AduC: divide the class columns by this (1: released code; = temperature: the paper)."
        },
    )
    positive_normalisation: bool = field(
        default=True,
        metadata={
            "help": "AduC: divide by beta + alpha |P(i)| (released code); false: the paper's plain sum."
        },
    )
    beta_from_alpha: bool = field(
        default=False, metadata={"help": "AduC: beta = 1 - alpha (the released code's 'linear' mode)."}
    )
    # PaCo and PaCo+AduC (Cui et al. 2021; docs/method.md, "Baselines")
    paco_alpha: float = field(
        default=0.05, metadata={"help": "PaCo: weight of the positive samples (constant)."}
    )
    paco_beta: float = field(
        default=1.0, metadata={"help": "PaCo: weight of the own-class classifier column."}
    )
    paco_gamma: float = field(
        default=1.0, metadata={"help": "PaCo: weight of the samples in the denominator."}
    )
    queue_size: int = field(
        default=1024, metadata={"help": "PaCo: key features in the queue, a multiple of the global batch."}
    )
    paco_momentum: float = field(default=0.999, metadata={"help": "PaCo: momentum of the key encoder."})
    # LDAM-DRW (Cao et al. 2019)
    max_margin: float = field(default=0.5, metadata={"help": "LDAM: the margin of the rarest class."})
    ldam_scale: float = field(default=30.0, metadata={"help": "LDAM: scale s of the cosine logits."})
    drw_beta: float = field(default=0.9999, metadata={"help": "DRW: beta of the effective-number weights."})
    drw_start: float = field(
        default=0.8, metadata={"help": "DRW: share of training after which re-weighting starts (320 of 400)."}
    )
    # BALMS (Ren et al. 2020): the Meta Sampler of its second stage.
    meta_learning_rate: float = field(
        default=0.01,
        metadata={"help": "balms: Adam learning rate of the Meta Sampler's class weights (official)."},
    )
    meta_init_pow: float = field(
        default=0.0,
        metadata={
            "help": "balms: initial sampler weights sigmoid(w_c) proportional to prior^-meta_init_pow (official 0: "
            "instance-balanced; ImageNet-LT 0.1)."
        },
    )
    meta_samples_per_class: int = field(
        default=1,
        metadata={
            "help": "balms: images of one class taken in turn by the class-aware sampler of the meta batches (official 1, "
            "the released ClassAwareSampler's default; 4 reproduces runs before this field)."
        },
    )
    # Two-stage methods (decouple, cicl, balms): the second stage, a re-initialised classifier on the frozen encoder.
    # One-stage methods ignore these fields.
    stage2_epochs: int = field(
        default=10,
        metadata={
            "help": "Two-stage methods: epochs of the second stage (cRT's 10; max_steps caps each stage)."
        },
    )
    stage2_learning_rate: float = field(
        default=0.05,
        metadata={
            "help": "Two-stage methods: peak SGD learning rate of the second stage, cosine to min_learning_rate, no "
            "warm-up (cRT's 0.2 at batch 512, scaled linearly to batch 128)."
        },
    )
    stage2_bn: str | None = field(
        default=None,
        metadata={
            "help": "Two-stage methods: BatchNorm of the frozen encoder in the second stage, train (statistics "
            "updated on the stage-2 batches) or eval (frozen). Default: the method's official choice (decouple, balms "
            "train, cicl eval)."
        },
    )

    def __post_init__(self) -> None:
        METHODS.check(self.method, field="method")
        SAMPLERS.check(self.sampler, field="sampler")
        self.alpha()  # the schedule's own checks, the only ones
        _positive("temperature", self.temperature)
        _positive("base_temperature", self.base_temperature)
        _positive("beta", self.beta)
        for name in ("paco_alpha", "paco_gamma", "max_margin"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("paco_beta", "ldam_scale", "queue_size", "classifier_temperature", "meta_learning_rate"):
            _positive(name, getattr(self, name))
        if not 0 <= self.paco_momentum < 1:
            raise ValueError(f"paco_momentum must be in [0, 1), got {self.paco_momentum}")
        if not 0 < self.drw_beta < 1:
            raise ValueError(f"drw_beta must be in (0, 1), got {self.drw_beta}")
        if not 0 <= self.drw_start <= 1:
            raise ValueError(f"drw_start must be in [0, 1], got {self.drw_start}")
        for name in ("stage2_epochs", "meta_samples_per_class"):
            _count(name, getattr(self, name))
        _positive("stage2_learning_rate", self.stage2_learning_rate)
        if self.stage2_bn is not None and self.stage2_bn not in BN_MODES:
            raise ValueError(
                f"stage2_bn must be one of {list(BN_MODES)} (or unset: the method's default), got {self.stage2_bn!r}"
            )

    def alpha(self) -> AlphaSchedule:
        """The alpha schedule of the recipe's `alpha_schedule`, `alpha_max`, `alpha_min` and `alpha_decay`."""
        return AlphaSchedule(self.alpha_schedule, self.alpha_max, self.alpha_min, self.alpha_decay)


__all__ = ["MethodArguments"]
