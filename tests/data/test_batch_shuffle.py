"""The order within a global batch (`training_epochs(..., batch_shuffle=True)`): what accelerate hands each process
and what `contrast_chunk_size` cuts into chunks is a mix of the classes, not one or two of them.

The released loop permutes every up-sampled batch before `nn.DataParallel` splits it (docs/method.md, "Sampling").
Here the global batch is split by accelerate's own `prepare_data_loader` (a `BatchSamplerShard` per process), as in
a 4-process run, on the ISIC2018 class counts.
"""

import itertools
import random

import pytest
import torch
from accelerate.data_loader import prepare_data_loader
from torch.utils.data import DataLoader, Dataset

from aduni_hf.data import DrawKey, build_sampler, training_epochs

ISIC = [327, 514, 1099, 115, 1113, 6705, 142]  # ISIC2018 training counts, AKIEC BCC BKL DF MEL NV VASC
GLOBAL_BATCH = 128
PROCESSES = 4  # 4 processes x 32 images
CHUNK = 16  # contrast_chunk_size 16: 16 rows of one view
BATCHES = 60  # global batches looked at per epoch


def isic_labels() -> list[int]:
    labels = [c for c, n in enumerate(ISIC) for _ in range(n)]
    random.Random(0).shuffle(labels)  # a local RNG: the global one is untouched
    return labels


class DrawnLabels(Dataset):
    """What a training item needs here: the key it was drawn as, and the image's label."""

    def __init__(self, labels: list[int]) -> None:
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: DrawKey) -> dict[str, int]:
        return {"draw": key.draw, "index": key.index, "labels": self.labels[key.index]}


def process_batches(sampler, labels, epoch, num_processes=PROCESSES, workers=0) -> list[list[dict]]:
    """For each process, its first batches of `epoch` as accelerate's data loader gives them (one process's share
    of each global batch), built the way the Trainer builds its training loader."""
    loader = DataLoader(
        DrawnLabels(labels), batch_size=GLOBAL_BATCH // num_processes, sampler=sampler, num_workers=workers
    )
    shares = []
    for process in range(num_processes):
        shard = prepare_data_loader(
            loader, num_processes=num_processes, process_index=process, put_on_device=False
        )
        shard.set_epoch(epoch)  # what the Trainer calls at every epoch start; it reaches our sampler
        shares.append(list(itertools.islice(shard, BATCHES)))
    return shares


def class_mix(shares) -> tuple[int, int, int]:
    """The fewest classes in a process's slice, the most images of one class in a slice, the fewest classes in a
    chunk of CHUNK images (one view's rows of a contrast chunk), over every slice of `shares`."""
    fewest_in_slice, most_of_one, fewest_in_chunk = 7, 0, 7
    for batch in itertools.chain.from_iterable(shares):
        labels = batch["labels"]
        fewest_in_slice = min(fewest_in_slice, len(set(labels.tolist())))
        most_of_one = max(most_of_one, int(torch.bincount(labels).max()))
        fewest_in_chunk = min(fewest_in_chunk, *(len(set(chunk.tolist())) for chunk in labels.split(CHUNK)))
    return fewest_in_slice, most_of_one, fewest_in_chunk


@pytest.mark.parametrize("name", ["upsample", "class_aware"])
def test_each_process_slice_and_each_chunk_of_a_global_batch_mixes_the_classes(name):
    labels = isic_labels()
    shuffled = training_epochs(build_sampler(name, labels, seed=3, batch_size=GLOBAL_BATCH), GLOBAL_BATCH)
    fewest_in_slice, most_of_one, fewest_in_chunk = class_mix(process_batches(shuffled, labels, epoch=2))
    # A global batch of up-sampling holds 18-20 images of each of the 7 classes; a random 32 of them (measured:
    # at least 6 classes, at most 11 of one) and a random 16 (at least 4 classes).
    assert fewest_in_slice >= 5 and most_of_one <= 12 and fewest_in_chunk >= 3

    # The sampler's own order, as before batch_shuffle: class by class (upsample: 2 classes in a slice, 18 of one,
    # one class in a chunk) or runs of 4 of one class (class_aware: 2 classes in a chunk).
    grouped = training_epochs(
        build_sampler(name, labels, seed=3, batch_size=GLOBAL_BATCH), GLOBAL_BATCH, batch_shuffle=False
    )
    before = class_mix(process_batches(grouped, labels, epoch=2))
    assert before[0] < 5 or before[1] > 12
    assert before[2] <= 2


def test_the_shuffle_keeps_every_global_batch_and_its_views_and_is_a_pure_function_of_seed_and_epoch():
    labels = isic_labels()
    torch_state = torch.get_rng_state()

    def stream(seed, epoch, shuffle=True):
        sampler = training_epochs(
            build_sampler("upsample", labels, seed=seed, batch_size=GLOBAL_BATCH),
            GLOBAL_BATCH,
            batch_shuffle=shuffle,
        )
        sampler.set_epoch(epoch)
        return list(sampler)

    shuffled, grouped = stream(3, 1), stream(3, 1, shuffle=False)
    assert len(shuffled) == len(grouped) == 46116
    for start in range(0, len(grouped), GLOBAL_BATCH):  # the same keys (image, draw: its views) in each batch
        assert sorted(shuffled[start : start + GLOBAL_BATCH]) == sorted(grouped[start : start + GLOBAL_BATCH])
    moved = sum(a != b for a, b in zip(shuffled, grouped, strict=True))
    assert moved > 0.9 * len(grouped)
    assert stream(3, 1) == shuffled  # deterministic for (seed, epoch)

    def positions(seed, epoch):  # where each position of the sampler's order went
        place = {key: position for position, key in enumerate(stream(seed, epoch, shuffle=False))}
        return [place[key] for key in stream(seed, epoch)]

    assert positions(3, 2) != positions(3, 1) and positions(4, 1) != positions(3, 1)  # a new permutation each
    assert torch.equal(torch.get_rng_state(), torch_state)  # nothing drawn from the global generator


def test_the_order_does_not_depend_on_the_number_of_processes_or_loader_workers():
    """With the same global batch, 1, 2 or 4 processes (and 0 or 2 loader workers) see the same global batches in
    the same order: process p's share of global batch g is its slice p of that batch."""
    labels = isic_labels()
    sampler = training_epochs(
        build_sampler("upsample", labels, seed=5, batch_size=GLOBAL_BATCH), GLOBAL_BATCH
    )

    def global_batches(num_processes, workers=0):
        shares = process_batches(sampler, labels, epoch=3, num_processes=num_processes, workers=workers)
        return [
            [
                (int(draw), int(index))
                for share in shares
                for draw, index in zip(share[g]["draw"], share[g]["index"], strict=True)
            ]
            for g in range(BATCHES)
        ]

    one = global_batches(1)
    assert global_batches(2) == one and global_batches(4) == one
    assert global_batches(4, workers=2) == one
    sampler.set_epoch(3)
    keys = list(sampler)
    assert one == [
        [(k.draw, k.index) for k in keys[g * GLOBAL_BATCH : (g + 1) * GLOBAL_BATCH]] for g in range(BATCHES)
    ]


def test_a_shortened_epoch_keeps_whole_shuffled_batches():
    """`dataset_length` and `drop_last` cut the epoch at a multiple of the global batch, after the shuffle: every
    batch kept is a whole shuffled global batch of the full epoch."""
    labels = isic_labels()
    full = training_epochs(build_sampler("class_aware", labels, seed=1), GLOBAL_BATCH)
    for options in ({"dataset_length": True}, {"drop_last": True}):
        cut = training_epochs(build_sampler("class_aware", labels, seed=1), GLOBAL_BATCH, **options)
        full.set_epoch(4)
        cut.set_epoch(4)
        kept = list(cut)
        assert len(kept) % GLOBAL_BATCH == 0 and kept == list(full)[: len(kept)]
    assert len(kept) == len(full) // GLOBAL_BATCH * GLOBAL_BATCH
