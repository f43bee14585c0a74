"""Training samplers: pure functions of (seed, epoch) with `set_epoch`, yielding `DrawKey`s, in `SAMPLERS`.

Every process runs the same sampler and accelerate hands each rank its share of the batches, so the stream
must not depend on the rank: it is drawn from a generator seeded by (seed, epoch) only, never from the global
random state. A new sampler is an `EpochSampler` subclass registered with `@SAMPLERS.register("name")`.

Registered (docs/method.md, "Sampling"):

| name | sampler | draws per epoch | needs |
|---|---|---|---|
| `none` | a fresh permutation (instance-balanced) | N | – |
| `upsample` | CICL/AdUni `--balance` up-sampling | G·k·C ≈ M·C | `batch_size` (global) |
| `class_aware` | class-aware sampling, 4 samples per class in turn | M·C | – |
| `sqrt` | square-root sampling, with replacement | N | – |
| `progressive` | progressive-balanced sampling, λ one epoch behind | N | `num_epochs` |

N is the training-set size, M the largest class count and C the number of classes. `build_sampler` passes a
sampler the context its constructor names (`batch_size`, `num_epochs`, `num_classes`, ...).

`training_epochs` gives a training stage its stream: the epoch length it asks for and, by default, the draws of
every global batch in a random order (`batch_shuffle`), so that no process's slice of a batch and no contrast
chunk is one or two classes of an up-sampled or class-aware batch (docs/method.md, "Sampling").
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler

from ..registry import Registry
from .transforms import view_seed
from .views import DrawKey


class EpochSampler(Sampler[DrawKey]):
    """Base class: subclasses implement `indices(generator)` for one epoch and `class_probabilities(epoch)`.

    Args:
        labels: the class index (0..C-1) of every training sample.
        seed: with the epoch, the seed of the only generator a sampler may draw from.
        num_classes: C; by default the largest label + 1. A class may have no training sample.
    """

    def __init__(self, labels: Sequence[int], seed: int = 0, num_classes: int | None = None) -> None:
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        if self.labels.ndim != 1:
            raise ValueError(
                f"labels must be a flat sequence of class indices, got shape {tuple(self.labels.shape)}"
            )
        if len(self.labels) and int(self.labels.min()) < 0:
            raise ValueError(f"labels must be class indices 0..C-1, got {int(self.labels.min())}")
        smallest = int(self.labels.max()) + 1 if len(self.labels) else 0
        if num_classes is None:
            num_classes = smallest
        elif num_classes < smallest:
            raise ValueError(f"num_classes={num_classes} but the labels go up to {smallest - 1}")
        self.num_classes = int(num_classes)
        self.class_counts = torch.bincount(self.labels, minlength=self.num_classes)
        self.seed = seed
        self.epoch = 0
        self.shuffle_batch_size: int | None = None  # set by `shuffle_within_batches`

    # ---- the class structure ---------------------------------------------------------------------------
    @property
    def present_classes(self) -> list[int]:
        """The classes with at least one training sample, in increasing order."""
        return [c for c in range(self.num_classes) if int(self.class_counts[c]) > 0]

    def class_indices(self, c: int) -> torch.Tensor:
        """The sample indices of class `c`, in dataset order."""
        return torch.nonzero(self.labels == c).flatten()

    def _require_samples(self) -> None:
        if len(self.labels) == 0:
            raise ValueError(f"{type(self).__name__} needs at least one training sample")

    # ---- one epoch -------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def generator(self, epoch: int | None = None) -> torch.Generator:
        """The generator of `epoch` (default: the current one), seeded by (seed, epoch) only."""
        epoch = self.epoch if epoch is None else int(epoch)
        return torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)

    def indices(self, generator: torch.Generator) -> list[int]:
        """The sample indices of one epoch, drawn from `generator` only."""
        raise NotImplementedError

    def class_probabilities(self, epoch: int) -> torch.Tensor:
        """The expected share of each class among the draws of `epoch`: float64, shape (C,), sums to 1."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[DrawKey]:
        epoch = self.epoch
        keys = [DrawKey(epoch, draw, index) for draw, index in enumerate(self.indices(self.generator(epoch)))]
        if self.shuffle_batch_size is not None:
            keys = shuffled_within_batches(keys, self.shuffle_batch_size, self.seed, epoch)
        return iter(keys)

    def __len__(self) -> int:
        return len(self.labels)

    # ---- the order within a global batch ---------------------------------------------------------------
    def shuffle_within_batches(self, batch_size: int) -> EpochSampler:
        """From now on, put the draws of every block of `batch_size` (a global batch) in a random order; returns
        the sampler. Which images a batch holds, and their views (seeded by each key's draw), do not change."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.shuffle_batch_size = int(batch_size)
        return self


# An index no image has: the batch shuffle's stream, seeded by view_seed(seed, epoch, 0, BATCH_SHUFFLE_STREAM, 0),
# is apart from the samplers' (seed, epoch) generators and from every augmentation seed (seed, epoch, draw, index,
# view). The Meta Sampler's Gumbel noise uses 2**32 - 1 the same way.
BATCH_SHUFFLE_STREAM = 2**32 - 2


def shuffled_within_batches(keys: list[DrawKey], batch_size: int, seed: int, epoch: int) -> list[DrawKey]:
    """`keys` with each block of `batch_size` (the last one possibly shorter) permuted, from a generator seeded
    by (seed, epoch) only: the same order in every process, whatever the number of processes or loader workers.

    The released loop permutes each up-sampled batch before `nn.DataParallel` splits it among the GPUs
    (thomascong121/AdUni@61d8c18, main.py `train`); here the global batch is permuted before accelerate hands each
    process its share (consecutive per-process batches) and before `contrast_chunk_size` cuts it into chunks.
    """
    generator = torch.Generator().manual_seed(view_seed(seed, epoch, 0, BATCH_SHUFFLE_STREAM, 0))
    order = [
        start + offset
        for start in range(0, len(keys), batch_size)
        for offset in torch.randperm(min(batch_size, len(keys) - start), generator=generator).tolist()
    ]
    return [keys[position] for position in order]


def _shuffled_cycle(pool: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """The first `count` items of a shuffled cyclic iterator over `pool`, reshuffled each time it is exhausted."""
    passes = -(-count // len(pool))
    if passes == 0:
        return pool[:0]
    return torch.cat([pool[torch.randperm(len(pool), generator=generator)] for _ in range(passes)])[:count]


def _draws_by_class(
    sampler: EpochSampler, class_of_draw: torch.Tensor, per_draw: int, generator: torch.Generator
) -> torch.Tensor:
    """Fill draws of given classes (`per_draw` samples each) from a fresh shuffled cyclic iterator per class."""
    out = torch.empty(len(class_of_draw), per_draw, dtype=torch.long)
    for c in sampler.present_classes:
        where = torch.nonzero(class_of_draw == c).flatten()
        out[where] = _shuffled_cycle(sampler.class_indices(c), len(where) * per_draw, generator).view(
            -1, per_draw
        )
    return out.flatten()


SAMPLERS: Registry[type[EpochSampler]] = Registry("sampler")


@SAMPLERS.register("none")
class RandomEpochSampler(EpochSampler):
    """Instance-balanced sampling: a fresh permutation of the training set every epoch (the official default)."""

    def indices(self, generator: torch.Generator) -> list[int]:
        return torch.randperm(len(self.labels), generator=generator).tolist()

    def class_probabilities(self, epoch: int) -> torch.Tensor:
        self._require_samples()
        return self.class_counts.double() / len(self.labels)


@SAMPLERS.register("upsample")
class UpSampler(EpochSampler):
    """CICL's `--balance` up-sampling, as in the released AdUni code (docs/method.md, "Sampling").

    With M the largest class count, C the number of classes, B the global batch size (all processes
    together), k = ⌊B/C⌋ and G = ⌊M·C/B⌋: every class draws a permutation of 0..M−1 mapped to its samples
    modulo n_c (minority images repeat ⌊M/n_c⌋ or ⌈M/n_c⌉ times); the epoch is G groups, each holding the
    next k draws of every class in class order, so G·k·C draws and only the first G·k draws of each class.

    Classes without a training sample are skipped: C counts the classes that have samples.
    """

    def __init__(
        self,
        labels: Sequence[int],
        seed: int = 0,
        num_classes: int | None = None,
        *,
        batch_size: int,
    ) -> None:
        super().__init__(labels, seed=seed, num_classes=num_classes)
        self._require_samples()
        self.batch_size = int(batch_size)
        classes = len(self.present_classes)
        self.per_class = self.batch_size // classes  # k
        if self.per_class == 0:
            raise ValueError(
                f"up-sampling needs batch_size >= the number of classes: batch_size={self.batch_size} "
                f"is smaller than the {classes} classes with training samples (k = batch_size // classes = 0)"
            )
        self.largest = int(self.class_counts.max())  # M
        self.groups = self.largest * classes // self.batch_size  # G
        if self.groups == 0:
            raise ValueError(
                f"up-sampling gives an empty epoch: largest class count {self.largest} x {classes} classes "
                f"< batch_size={self.batch_size} (G = 0 groups)"
            )

    def class_draws(self, generator: torch.Generator) -> list[torch.Tensor]:
        """Each present class's M draws (before truncation to G·k): a permutation of 0..M−1 modulo n_c."""
        draws = []
        for c in self.present_classes:
            pool = self.class_indices(c)
            draws.append(pool[torch.randperm(self.largest, generator=generator) % len(pool)])
        return draws

    def indices(self, generator: torch.Generator) -> list[int]:
        used = self.groups * self.per_class
        per_class = torch.stack([draws[:used] for draws in self.class_draws(generator)])  # (C, G·k)
        per_class = per_class.view(len(per_class), self.groups, self.per_class)  # (C, G, k)
        return per_class.transpose(0, 1).flatten().tolist()  # group by group, class by class

    def __len__(self) -> int:
        return self.groups * self.per_class * len(self.present_classes)

    def class_probabilities(self, epoch: int) -> torch.Tensor:
        return (self.class_counts > 0).double() / len(self.present_classes)


@SAMPLERS.register("class_aware")
class ClassAwareSampler(EpochSampler):
    """Class-aware sampling (Shen et al. 2016; classifier-balancing's `ClassAwareSampler`, 4 per class).

    A shuffled cyclic iterator over the classes (reshuffled after every pass) picks a class, which gives the
    next `num_samples_cls` samples of its own shuffled cyclic iterator (reshuffled when exhausted); M·C draws
    per epoch, the last run cut short when M·C is not a multiple of `num_samples_cls`.

    The official iterators keep their state from one epoch to the next; here both start afresh every epoch
    from the epoch's generator, so an epoch is a pure function of (seed, epoch) (docs/method.md, "Sampling").
    Classes without a training sample are skipped: C counts the classes that have samples.
    """

    def __init__(
        self,
        labels: Sequence[int],
        seed: int = 0,
        num_classes: int | None = None,
        *,
        num_samples_cls: int = 4,
    ) -> None:
        super().__init__(labels, seed=seed, num_classes=num_classes)
        self._require_samples()
        if num_samples_cls < 1:
            raise ValueError(f"num_samples_cls must be >= 1, got {num_samples_cls}")
        self.num_samples_cls = int(num_samples_cls)

    def indices(self, generator: torch.Generator) -> list[int]:
        classes = torch.tensor(self.present_classes)
        runs = -(-len(self) // self.num_samples_cls)
        passes = -(-runs // len(classes))
        class_of_run = torch.cat(
            [classes[torch.randperm(len(classes), generator=generator)] for _ in range(passes)]
        )
        draws = _draws_by_class(self, class_of_run[:runs], self.num_samples_cls, generator)
        return draws[: len(self)].tolist()

    def __len__(self) -> int:
        return int(self.class_counts.max()) * len(self.present_classes)

    def class_probabilities(self, epoch: int) -> torch.Tensor:
        return (self.class_counts > 0).double() / len(self.present_classes)


@SAMPLERS.register("sqrt")
class SquareRootSampler(EpochSampler):
    """Square-root sampling (Mahajan et al. 2018; Kang et al. 2020, q = 1/2): p_c = √n_c / Σ_k √n_k.

    Every sample weighs n_c^(−1/2); N draws with replacement per epoch. The released AdUni option
    (`squarerootbalance`) crashes on a path typo; this one works. Classes without samples get probability 0.
    """

    def __init__(self, labels: Sequence[int], seed: int = 0, num_classes: int | None = None) -> None:
        super().__init__(labels, seed=seed, num_classes=num_classes)
        self._require_samples()

    def indices(self, generator: torch.Generator) -> list[int]:
        weights = self.class_counts.double().rsqrt()[self.labels]
        return torch.multinomial(weights, len(self.labels), replacement=True, generator=generator).tolist()

    def class_probabilities(self, epoch: int) -> torch.Tensor:
        roots = self.class_counts.double().sqrt()
        return roots / roots.sum()


@SAMPLERS.register("progressive")
class ProgressiveSampler(EpochSampler):
    """Progressive-balanced sampling (Kang et al. 2020; classifier-balancing's `ClassPrioritySampler`).

    λ_e = e/(E−1) (`numpy.linspace(0, 1, E)[e]`, e clipped at E−1; 0 when E = 1), with E = `num_epochs`.
    As in the released code, which resets the weights after each epoch, epoch e uses λ_max(e−1, 0): epochs 0
    and 1 both use λ = 0. Class weight λ·N/C + (1−λ)·n_c, i.e. p_c = (1−λ)·n_c/N + λ/C. Each of the N draws
    of an epoch picks a class by weight (with replacement), then the next sample of that class's shuffled
    cyclic iterator, which starts afresh every epoch (docs/method.md, "Sampling"). Classes without a
    training sample get weight 0, and C counts the classes that have samples.
    """

    def __init__(
        self,
        labels: Sequence[int],
        seed: int = 0,
        num_classes: int | None = None,
        *,
        num_epochs: int,
    ) -> None:
        super().__init__(labels, seed=seed, num_classes=num_classes)
        self._require_samples()
        num_epochs = math.ceil(num_epochs)  # the Trainer's num_train_epochs is a float
        if num_epochs < 1:
            raise ValueError(f"num_epochs must be >= 1, got {num_epochs}")
        self.num_epochs = num_epochs

    def lam(self, epoch: int) -> float:
        """λ used during `epoch`: λ_e' with e' = max(epoch − 1, 0), the official one-epoch lag."""
        if self.num_epochs == 1:
            return 0.0
        return min(max(int(epoch) - 1, 0), self.num_epochs - 1) / (self.num_epochs - 1)

    def class_probabilities(self, epoch: int) -> torch.Tensor:
        lam = self.lam(epoch)
        present = (self.class_counts > 0).double()
        natural = self.class_counts.double() / len(self.labels)
        return (1 - lam) * natural + lam * present / present.sum()

    def indices(self, generator: torch.Generator) -> list[int]:
        class_of_draw = torch.multinomial(
            self.class_probabilities(self.epoch), len(self.labels), replacement=True, generator=generator
        )
        return _draws_by_class(self, class_of_draw, 1, generator).tolist()


def build_sampler(name: str, labels: Sequence[int], /, seed: int, **context: Any) -> EpochSampler:
    """The sampler registered as `name` over `labels`, seeded by `seed`; an unknown name lists the choices.

    `context` holds what some samplers need: `batch_size` (the global batch size, for `upsample`),
    `num_epochs` (the number of training epochs, for `progressive`), `num_classes`. A sampler gets the
    entries its constructor names and ignores the rest; a required entry that is missing (or None) raises
    `ValueError`.
    """
    sampler_class = SAMPLERS[name]
    parameters = inspect.signature(sampler_class).parameters
    kwargs = {
        key: value for key, value in context.items() if key in parameters and key not in ("labels", "seed")
    }
    missing = [
        key
        for key, parameter in parameters.items()
        if key not in ("labels", "seed")
        and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
        and parameter.default is parameter.empty
        and kwargs.get(key) is None
    ]
    if missing:
        raise ValueError(f"sampler {name!r} needs {', '.join(missing)}; pass it to build_sampler")
    return sampler_class(labels, seed=seed, **kwargs)


class FirstDraws(Sampler[DrawKey]):
    """The first `count` draws of every epoch of an `EpochSampler` (its `set_epoch`, `epoch` and `labels` pass
    through).

    classifier-balancing counts a cRT epoch as the batches of an instance-balanced epoch (`epoch_steps` = N / batch
    in run_networks.py) while its class-aware sampler yields M*C draws; this gives the same epoch length. It also
    leaves out an epoch's last, incomplete batch (`drop_last_train_batch`).
    """

    def __init__(self, sampler: EpochSampler, count: int) -> None:
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        self.sampler = sampler
        self.count = min(int(count), len(sampler))

    @property
    def labels(self) -> torch.Tensor:
        return self.sampler.labels

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[DrawKey]:
        return itertools.islice(iter(self.sampler), self.count)

    def __len__(self) -> int:
        return self.count


def training_epochs(
    sampler: EpochSampler,
    batch_size: int,
    *,
    dataset_length: bool = False,
    drop_last: bool = False,
    batch_shuffle: bool = True,
) -> EpochSampler | FirstDraws:
    """`sampler` with the epoch length and the batch order a stage asks for, for a global batch of `batch_size`:

    - `dataset_length`: the first floor(N / B) * B draws of each epoch (N the training images), the batches of an
      instance-balanced epoch whatever the sampler draws;
    - `drop_last`: without the epoch's last, incomplete batch (training only: evaluation keeps every image);
    - `batch_shuffle`: the draws of every global batch in a random order (`shuffled_within_batches`); False keeps
      the sampler's own order (class by class for `upsample`, runs of one class for `class_aware`).

    The shuffle permutes blocks of `batch_size` from the start of the epoch, so cutting the epoch at a multiple of
    `batch_size` afterwards keeps every global batch whole.
    """
    if batch_shuffle:
        sampler.shuffle_within_batches(batch_size)
    if dataset_length:
        sampler = FirstDraws(sampler, max(1, len(sampler.labels) // batch_size) * batch_size)
    if drop_last and len(sampler) % batch_size and len(sampler) > batch_size:
        sampler = FirstDraws(sampler, len(sampler) // batch_size * batch_size)
    return sampler
