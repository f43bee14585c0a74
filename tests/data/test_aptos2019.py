"""aptos2019 builder on files in the official Kaggle layout: classes, folds, image modes, pre-resizing, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from aduni_hf.data import DataValidationError, as_rgb, build_dataset, dataset_metadata, eval_transform
from aduni_hf.data.transforms import kaggle_augmentation, seeded
from tests.data.layouts import AptosRaw, photo, write_truncated

APTOS_NAMES = ["No DR", "Mild", "Moderate", "Severe", "Proliferative DR"]


def build(raw: AptosRaw, **options):
    return build_dataset("aptos2019", str(raw.root), num_folds=3, seed=0, **options)


def test_official_layout_and_fold_balance(aptos):
    raw = aptos(per_class=(11, 4, 7, 3, 5))
    ds = build(raw)
    assert ds.column_names == ["image", "label", "fold", "image_id"]
    assert ds.features["label"].names == APTOS_NAMES
    assert ds["image_id"] == raw.ids and ds["label"] == raw.labels
    assert {ds[i]["image"].size for i in range(4)} == {(64, 48), (50, 50), (80, 60), (45, 70)}
    labels, folds = np.asarray(ds["label"]), np.asarray(ds["fold"])
    per_fold = np.stack([np.bincount(labels[folds == f], minlength=5) for f in range(3)])
    assert (per_fold.max(0) - per_fold.min(0) <= 1).all(), per_fold
    meta = dataset_metadata(ds)
    assert meta["fold_counts"] == per_fold.tolist() and meta["class_counts"] == [11, 4, 7, 3, 5]


def test_folds_are_deterministic_for_a_seed(aptos):
    raw = aptos(per_class=(11, 4, 7, 3, 5))
    first, again = build(raw)["fold"], build(raw, num_workers=2)["fold"]
    other = build_dataset("aptos2019", str(raw.root), num_folds=3, seed=1)["fold"]
    assert first == again
    assert first != other


@pytest.mark.parametrize(
    "image",
    [
        Image.fromarray(np.arange(48 * 64, dtype=np.uint8).reshape(48, 64), mode="L"),
        Image.new("RGBA", (64, 48), (10, 200, 30, 128)),
        photo(64, 48, 3).convert("P", palette=Image.Palette.ADAPTIVE),
        Image.fromarray((np.arange(48 * 64).reshape(48, 64) * 21).astype(np.uint16)),
    ],
    ids=["grayscale", "rgba", "palette", "16-bit"],
)
def test_other_modes_are_converted_to_rgb(aptos, image):
    raw = aptos()
    image.save(raw.image(raw.ids[0]))
    assert Image.open(raw.image(raw.ids[0])).mode == image.mode
    stored = build(raw)[0]["image"]
    assert stored.mode == "RGB" and stored.size == (64, 48)
    np.testing.assert_array_equal(np.asarray(stored), np.asarray(as_rgb(image)))


def test_pre_resizing_stores_exact_size_and_same_pixels(aptos):
    raw = aptos()
    original, resized = build(raw), build(raw, image_size=32)
    assert {resized[i]["image"].size for i in range(len(resized))} == {(32, 32)}
    assert dataset_metadata(resized)["image_size"] == 32
    assert resized["fold"] == original["fold"]
    for i in range(4):  # training at image_size 32 sees the same pixels as on the full-size files
        a, b = original[i]["image"], resized[i]["image"]
        torch.testing.assert_close(eval_transform(32)(a), eval_transform(32)(b), rtol=0, atol=0)
        augment = kaggle_augmentation(32)
        torch.testing.assert_close(seeded(augment, a, 7), seeded(augment, b, 7), rtol=0, atol=0)


# Each case breaks one thing and names the id left out and what the message must say.
def corrupt_image(raw: AptosRaw):
    raw.image(raw.ids[1]).write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return raw.ids[1], [str(raw.image(raw.ids[1])), "cannot decode image"]


def truncated_image(raw: AptosRaw):
    write_truncated(raw.image(raw.ids[2]))
    return raw.ids[2], [str(raw.image(raw.ids[2])), "cannot decode image"]


def missing_image(raw: AptosRaw):
    raw.image(raw.ids[3]).unlink()
    return raw.ids[3], ["train.csv line 5", "does not exist"]


def image_without_row(raw: AptosRaw):
    photo(30, 30, 1).save(raw.root / "train_images" / "ffffffffffff.png")
    return "ffffffffffff", ["train_images/ffffffffffff.png", "has no row in train.csv"]


def diagnosis_out_of_range(raw: AptosRaw):
    raw.write_csv([[i, 5 if k == 4 else y] for k, (i, y) in enumerate(zip(raw.ids, raw.labels, strict=True))])
    return raw.ids[4], ["train.csv line 6", "diagnosis '5' is outside 0..4"]


def diagnosis_not_an_integer(raw: AptosRaw):
    raw.write_csv(
        [[i, "two" if k == 5 else y] for k, (i, y) in enumerate(zip(raw.ids, raw.labels, strict=True))]
    )
    return raw.ids[5], ["train.csv line 7", "diagnosis 'two' is not an integer"]


def duplicate_id(raw: AptosRaw):
    rows = [[i, y] for i, y in zip(raw.ids, raw.labels, strict=True)]
    raw.write_csv(rows + [[raw.ids[0], 3]])
    return raw.ids[0], [f"train.csv line {len(rows) + 2}", "duplicate id_code (first on line 2)"]


BAD_INPUT = [
    corrupt_image,
    truncated_image,
    missing_image,
    image_without_row,
    diagnosis_out_of_range,
    diagnosis_not_an_integer,
    duplicate_id,
]


@pytest.mark.parametrize("break_it", BAD_INPUT, ids=[f.__name__ for f in BAD_INPUT])
def test_bad_input_raises_naming_file_and_row(aptos, break_it):
    raw = aptos()
    _, fragments = break_it(raw)
    with pytest.raises(DataValidationError) as error:
        build(raw)
    for fragment in fragments:
        assert fragment in str(error.value)


@pytest.mark.parametrize("break_it", BAD_INPUT, ids=[f.__name__ for f in BAD_INPUT])
def test_bad_input_skipped_and_reported(aptos, break_it, caplog):
    raw = aptos()
    bad_id, fragments = break_it(raw)
    ds = build(raw, skip_invalid=True)
    (item,) = dataset_metadata(ds)["invalid_items"]
    assert item["image_id"] == bad_id
    assert all(fragment in f"{item['location']}: {item['reason']}" for fragment in fragments)
    assert ds["image_id"].count(bad_id) == (1 if break_it is duplicate_id else 0)
    assert "leaving out 1 invalid item" in caplog.text


def test_empty_class_is_an_error_even_when_skipping(aptos):
    raw = aptos()
    raw.write_csv([[i, y] for i, y in zip(raw.ids, raw.labels, strict=True) if y != 3])
    for image_id in [i for i, y in zip(raw.ids, raw.labels, strict=True) if y == 3]:
        raw.image(image_id).unlink()
    for skip in (False, True):
        with pytest.raises(DataValidationError, match=r"class\(es\) \['Severe'\] have no usable images"):
            build(raw, skip_invalid=skip)


def test_unreadable_header_is_an_error_even_when_skipping(aptos):
    raw = aptos()
    raw.csv.write_text("id,grade\nabc,1\n")
    for skip in (False, True):
        with pytest.raises(
            DataValidationError, match=r"train.csv line 1: header \['id', 'grade'\] lacks column"
        ):
            build(raw, skip_invalid=skip)


def test_all_problems_listed_at_once(aptos):
    raw = aptos()
    diagnosis_out_of_range(raw)
    raw.image(raw.ids[0]).unlink()
    raw.image(raw.ids[1]).write_bytes(b"junk")
    with pytest.raises(DataValidationError, match="1 invalid item") as error:
        build(raw)  # CSV problems are reported before any image is decoded
    assert "outside 0..4" in str(error.value)
    ds = build(raw, skip_invalid=True)
    assert len(dataset_metadata(ds)["invalid_items"]) == 3 and len(ds) == len(raw.ids) - 3
