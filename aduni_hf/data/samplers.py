"""Training samplers: pure functions of (seed, epoch) with `set_epoch`, yielding `DrawKey`s, in `SAMPLERS`.

Every process runs the same sampler and accelerate hands each rank its share of the batches, so the stream
must not depend on the rank: it is drawn from a generator seeded by (seed, epoch) only. A new sampler is an
`EpochSampler` subclass registered with `@SAMPLERS.register("name")`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from ..registry import Registry
from .views import DrawKey


class EpochSampler(Sampler[DrawKey]):
    """Base class: subclasses implement `indices(generator)` for one epoch."""

    def __init__(self, labels: Sequence[int], seed: int = 0) -> None:
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self, generator: torch.Generator) -> list[int]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[DrawKey]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        epoch = self.epoch
        return iter([DrawKey(epoch, draw, index) for draw, index in enumerate(self.indices(generator))])

    def __len__(self) -> int:
        return len(self.labels)


SAMPLERS: Registry[type[EpochSampler]] = Registry("sampler")


@SAMPLERS.register("none")
class RandomEpochSampler(EpochSampler):
    """Instance-balanced sampling: a fresh permutation of the training set every epoch (the official default)."""

    def indices(self, generator: torch.Generator) -> list[int]:
        return torch.randperm(len(self.labels), generator=generator).tolist()


def build_sampler(name: str, labels: Sequence[int], seed: int) -> EpochSampler:
    """The sampler registered as `name` over `labels`, seeded by `seed`; an unknown name lists the choices."""
    return SAMPLERS[name](labels, seed=seed)
