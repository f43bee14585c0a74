"""Per-epoch schedules of AdUni, each a pure function of the epoch index (so a resumed run reproduces them).

- `alpha_schedule`: the weight of same-class views in AduC, one registered kind per schedule
  (docs/method.md, "Schedules").
- `official_learning_rate`: the released code's per-epoch warm-up then cosine (docs/method.md, "Schedules").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from .registry import Registry

# A kind maps (epoch, alpha_max, alpha_min, decay, num_epochs) to alpha.
AlphaKind = Callable[..., float]
ALPHA_SCHEDULES: Registry[AlphaKind] = Registry("alpha schedule")


@ALPHA_SCHEDULES.register("official")
def official_alpha(epoch: int, alpha_max: float, alpha_min: float, decay: float, num_epochs: int | None) -> float:
    """The released code (util.cosine_adjust) applies a normalised cosine step to the previous epoch's alpha at
    every epoch start, alpha_e = a_min + (alpha_{e-1} - a_min)(1 + cos(pi e / decay)) / 2, which compounds into
    alpha_e = a_min + (a_max - a_min) * prod_{k=0..e} cos^2(pi k / (2 decay)).
    With the defaults: 0.4387 at epoch 100, 0.0690 at 150, 0.0112 at 200, 0.0100 from 250 on."""
    weight = 1.0
    for k in range(epoch + 1):
        weight *= (1.0 + math.cos(math.pi * k / decay)) / 2.0
    return alpha_min + (alpha_max - alpha_min) * weight


@ALPHA_SCHEDULES.register("cosine")
def cosine_alpha(epoch: int, alpha_max: float, alpha_min: float, decay: float, num_epochs: int | None) -> float:
    """The paper's Eq. 4 with the weight normalised to [0, 1]: w = (1 + cos(pi min(e, decay) / decay)) / 2,
    alpha = w a_max + (1 - w) a_min. With decay 1000 and 400 epochs it only reaches 0.66."""
    weight = (1.0 + math.cos(math.pi * min(epoch, decay) / decay)) / 2.0
    return weight * alpha_max + (1.0 - weight) * alpha_min


@ALPHA_SCHEDULES.register("linear")
def linear_alpha(epoch: int, alpha_max: float, alpha_min: float, decay: float, num_epochs: int | None) -> float:
    """a_max at epoch 0 -> a_min at the last epoch, num_epochs - 1 (num_epochs required). The official mode
    computes a_max - (a_max - a_min) e / E over its epochs 0..E, which is this with num_epochs = E + 1; it also
    sets beta = 1 - alpha, while here beta stays fixed."""
    if not num_epochs or num_epochs < 1:
        raise ValueError("the linear alpha schedule needs num_epochs >= 1")
    progress = min(epoch / max(num_epochs - 1, 1), 1.0)
    return alpha_max - (alpha_max - alpha_min) * progress


@ALPHA_SCHEDULES.register("step")
def step_alpha(epoch: int, alpha_max: float, alpha_min: float, decay: float, num_epochs: int | None) -> float:
    """a_max before epoch `decay`, a_min from it on."""
    return alpha_max if epoch < decay else alpha_min


@ALPHA_SCHEDULES.register("constant")
def constant_alpha(epoch: int, alpha_max: float, alpha_min: float, decay: float, num_epochs: int | None) -> float:
    """a_max throughout ("AdUni w/o AduC")."""
    return alpha_max


@dataclass(frozen=True)
class AlphaSchedule:
    """One alpha schedule of AduC, its defaults declared and its values checked here only (the recipe's
    `alpha_schedule`, `alpha_max`, `alpha_min` and `alpha_decay` fields are built into one).

    Calling it gives alpha at a (0-based) epoch: `AlphaSchedule()(200)` is 0.0112 (the official schedule).
    """

    kind: str = "official"
    alpha_max: float = 1.0
    alpha_min: float = 0.01
    decay: float = 1000

    def __post_init__(self) -> None:
        ALPHA_SCHEDULES.check(self.kind, field="alpha_schedule")
        if self.alpha_min < 0:
            raise ValueError(f"alpha_min must be >= 0, got {self.alpha_min}")
        if self.alpha_min > self.alpha_max:
            raise ValueError(f"alpha_min={self.alpha_min} must not exceed alpha_max={self.alpha_max}")
        if not self.decay > 0:
            raise ValueError(f"alpha_decay must be > 0, got {self.decay}")

    def __call__(self, epoch: int, num_epochs: int | None = None) -> float:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        return ALPHA_SCHEDULES[self.kind](int(epoch), self.alpha_max, self.alpha_min, self.decay, num_epochs)

    def held_constant(self) -> AlphaSchedule:
        """alpha_max throughout: the schedule of "AdUni w/o AduC" (`aduni_fixed`)."""
        return replace(self, kind="constant")


DEFAULT_ALPHA = AlphaSchedule()


def alpha_schedule(
    epoch: int,
    kind: str = DEFAULT_ALPHA.kind,
    alpha_max: float = DEFAULT_ALPHA.alpha_max,
    alpha_min: float = DEFAULT_ALPHA.alpha_min,
    decay: float = DEFAULT_ALPHA.decay,
    num_epochs: int | None = None,
) -> float:
    """Alpha of AduC at (0-based) `epoch` under schedule `kind` (one of `ALPHA_SCHEDULES`; each kind's
    docstring gives its formula): `AlphaSchedule(kind, alpha_max, alpha_min, decay)(epoch, num_epochs)`."""
    return AlphaSchedule(kind, alpha_max, alpha_min, decay)(epoch, num_epochs)


def official_learning_rate(
    epoch: int, base_lr: float = 0.1, warmup_epochs: int = 10, cosine_epochs: int = 400, min_lr: float = 1e-4
) -> float:
    """Learning rate of the released code at (0-based) `epoch`, constant within the epoch.

    Warm-up per epoch: base_lr (e + 1) / warmup_epochs for e < warmup_epochs (0.01, 0.02, ..., 0.1). Then
    cosine on the raw epoch: min_lr + (base_lr - min_lr)(1 + cos(pi e / cosine_epochs)) / 2, so epoch 10 gives
    0.099846 and epoch 400 gives min_lr (= lr * lr_decay_rate^3 = 1e-4 in run.sh).
    """
    if epoch < warmup_epochs:
        return base_lr * (epoch + 1) / warmup_epochs
    progress = min(epoch, cosine_epochs) / cosine_epochs
    return min_lr + (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress)) / 2.0


__all__ = ["ALPHA_SCHEDULES", "DEFAULT_ALPHA", "AlphaSchedule", "alpha_schedule", "official_learning_rate"]
