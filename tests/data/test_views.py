"""Two-view training items: seeded by (seed, epoch, draw, index, view), independent of workers and processes."""

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from aduni_hf.data import (
    DrawKey,
    MultiViewDataset,
    RandomEpochSampler,
    SingleViewDataset,
    build_augmentation,
    collate_views,
    eval_transform,
    view_major,
)


@pytest.fixture(scope="module")
def small_digits(digits_lt):
    return digits_lt.select(range(24))


def test_views_are_seeded_and_independent(small_digits):
    views = MultiViewDataset(small_digits, build_augmentation("digits", 16), num_views=2, seed=3)
    item = views[DrawKey(epoch=1, draw=4, index=5)]
    assert item["pixel_values"].shape == (2, 3, 16, 16) and item["labels"] == small_digits[5]["label"]
    torch.testing.assert_close(item["pixel_values"], views[DrawKey(1, 4, 5)]["pixel_values"], rtol=0, atol=0)
    first, second = item["pixel_values"]
    assert not torch.equal(first, second)  # the two views are drawn independently
    assert not torch.equal(item["pixel_values"], views[DrawKey(2, 4, 5)]["pixel_values"])  # a new epoch
    assert not torch.equal(item["pixel_values"], views[DrawKey(1, 5, 5)]["pixel_values"])  # a repeated draw
    reseeded = MultiViewDataset(small_digits, build_augmentation("digits", 16), num_views=2, seed=4)
    assert not torch.equal(item["pixel_values"], reseeded[DrawKey(1, 4, 5)]["pixel_values"])


def test_augmentation_leaves_the_global_rng_alone(small_digits):
    views = MultiViewDataset(small_digits, build_augmentation("kaggle", 16), num_views=2, seed=0)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    views[DrawKey(0, 0, 0)]
    torch.testing.assert_close(torch.rand(3), expected)


def _epoch_batches(dataset, sampler, num_workers):
    loader = DataLoader(
        dataset, batch_size=5, sampler=sampler, collate_fn=collate_views, num_workers=num_workers
    )
    return [batch["pixel_values"] for batch in loader]


def test_same_views_with_any_number_of_workers(small_digits):
    views = MultiViewDataset(small_digits, build_augmentation("kaggle", 16), num_views=2, seed=0)
    sampler = RandomEpochSampler(views.labels, seed=0)
    sampler.set_epoch(3)
    in_process = _epoch_batches(views, sampler, num_workers=0)
    with_workers = _epoch_batches(views, sampler, num_workers=2)
    assert len(in_process) == len(with_workers) == 5
    for a, b in zip(in_process, with_workers, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_eval_items_and_collation(small_digits):
    single = SingleViewDataset(small_digits, eval_transform(16))
    batch = collate_views([single[0], single[1]])
    assert batch["pixel_values"].shape == (2, 3, 16, 16) and batch["labels"].dtype == torch.long
    torch.testing.assert_close(single[0]["pixel_values"], single[0]["pixel_values"], rtol=0, atol=0)
    # ImageNet normalisation of a black pixel
    black = eval_transform(4)(Image.new("RGB", (4, 4)))
    torch.testing.assert_close(black[:, 0, 0], torch.tensor([-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225]))


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_view_major_rows_are_every_first_view_then_every_second(memory_format):
    pixel_values = torch.randn(3, 2, 3, 5, 4)  # (B, V, 3, H, W)
    rows = view_major(pixel_values, memory_format)
    expected = torch.cat([pixel_values[:, 0], pixel_values[:, 1]])  # the official code's order
    assert rows.shape == (6, 3, 5, 4) and torch.equal(rows, expected)
    assert rows.is_contiguous(memory_format=memory_format)
    assert rows.untyped_storage().data_ptr() != pixel_values.untyped_storage().data_ptr()  # a copy, not a view

