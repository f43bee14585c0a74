"""The one assembly path, on items no layout reader produces: in-memory images, duplicate ids, groups."""

import numpy as np
import pytest
from PIL import Image

from aduni_hf.data import DataValidationError, dataset_metadata
from aduni_hf.data.assemble import RawItem, assemble_dataset
from aduni_hf.data.validation import InvalidItems, Location

METADATA_KEYS = [
    "source", "num_folds", "fold_seed", "fold_method", "class_names", "class_counts", "fold_counts",
    "image_size", "content_fingerprint", "invalid_items", "headline_metric", "dataset_metrics",
]  # fmt: skip


def memory_items(count: int = 8, groups: bool = False) -> list[RawItem]:
    """Grayscale 5x6 images held in memory, alternating between two classes."""
    return [
        RawItem(
            f"m{i}",
            Image.fromarray(np.full((6, 5), 10 * i, dtype=np.uint8)),
            i % 2,
            Location(f"memory[{i}]"),
            group=f"patient{i // 2}" if groups else None,
        )
        for i in range(count)
    ]


def assemble(items: list[RawItem], **options) -> object:
    return assemble_dataset(items, ["a", "b"], source="test", num_folds=2, seed=0, **options)


def test_in_memory_images_are_stored_as_the_reader_made_them(tmp_path):
    ds = assemble(memory_items(), extra_metadata={"origin": "memory"})
    assert ds.column_names == ["image", "label", "fold", "image_id"]
    assert ds[3]["image"].mode == "L" and ds[3]["image"].size == (5, 6)
    assert np.asarray(ds[3]["image"]).max() == 30
    assert list(dataset_metadata(ds)) == [*METADATA_KEYS, "origin"]
    resized = assemble(memory_items(), image_size=4, cache_dir=tmp_path / "cache", num_workers=2)
    assert resized[0]["image"].size == (4, 4) and resized["fold"] == ds["fold"]


def test_groups_make_grouped_folds():
    ds = assemble(memory_items(groups=True))
    assert ds["group"] == [f"patient{i // 2}" for i in range(8)]
    assert dataset_metadata(ds)["fold_method"] == "StratifiedGroupKFold"


def test_duplicate_ids_are_reported_once_with_the_first_location():
    items = [*memory_items(), RawItem("m0", Image.new("L", (5, 6)), 0, Location("extra.npz", 4))]
    with pytest.raises(
        DataValidationError, match=r"extra.npz line 4 \[m0\]: duplicate image id \(first at memory\[0\]\)"
    ):
        assemble(items)
    ds = assemble(items, invalid=InvalidItems(skip_invalid=True, source="test"))
    assert len(ds) == 8 and dataset_metadata(ds)["invalid_items"][0]["location"] == "extra.npz line 4"


def test_no_usable_image_is_an_error_even_when_skipping(tmp_path):
    items = [RawItem(f"f{i}", tmp_path / f"f{i}.png", i % 2, Location("list.csv", i + 2)) for i in range(4)]
    with pytest.raises(
        DataValidationError, match=r"list.csv line 2 \[f0\]: image file .*f0.png does not exist"
    ):
        assemble(items)
    with pytest.raises(
        DataValidationError, match=r"test: no usable images \(4 invalid item\(s\) were left out\)"
    ):
        assemble(items, invalid=InvalidItems(skip_invalid=True, source="test"))
