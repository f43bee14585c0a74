"""isic2018 builder on files in the official ISIC 2018 Task 3 layout: columns, lesion-grouped folds, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from aduni_hf.data import DataValidationError, build_dataset, dataset_metadata
from tests.data.layouts import ISIC_CLASSES, ISIC_GROUPINGS, IsicRaw, photo, write_csv, write_truncated


def build(raw: IsicRaw, **options):
    return build_dataset("isic2018", str(raw.root), num_folds=3, seed=0, **options)


def test_official_layout(isic):
    raw = isic()
    ds = build(raw)
    assert ds.column_names == ["image", "label", "fold", "image_id", "group"]
    assert ds.features["label"].names == ISIC_CLASSES  # the CSV's column order
    assert ds["image_id"] == raw.ids  # ATTRIBUTION.txt and LICENSE.txt are not images
    assert ds["label"] == raw.labels
    assert ds["group"] == raw.lesions
    image = ds[0]["image"]
    assert image.mode == "RGB" and image.size == (60, 45)
    meta = dataset_metadata(ds)
    assert meta["fold_method"] == "StratifiedGroupKFold" and meta["fold_seed"] == 0
    assert meta["lesion_groupings"] == ISIC_GROUPINGS and meta["invalid_items"] == []


@pytest.mark.parametrize("where", ["root", "gt"])
def test_folds_grouped_by_lesion(isic, where):
    raw = isic(per_class=(8, 12, 6, 6, 6, 6, 6), images_per_lesion=3, groupings=where)
    ds = build(raw)
    fold_of_lesion: dict[str, set[int]] = {}
    for lesion, fold in zip(ds["group"], ds["fold"], strict=True):
        fold_of_lesion.setdefault(lesion, set()).add(fold)
    assert all(len(folds) == 1 for folds in fold_of_lesion.values())
    assert set(ds["fold"]) == {0, 1, 2}


def test_without_groupings_folds_are_stratified_by_image(isic):
    raw = isic(groupings=None)
    ds = build(raw)
    assert "group" not in ds.column_names
    assert dataset_metadata(ds)["fold_method"] == "StratifiedKFold"
    labels, folds = np.asarray(ds["label"]), np.asarray(ds["fold"])
    per_fold = np.stack([np.bincount(labels[folds == f], minlength=7) for f in range(3)])
    assert (per_fold.max(0) - per_fold.min(0) <= 1).all(), per_fold


def test_group_by_lesion_can_be_turned_off(isic):
    assert "group" not in build(isic(), group_by_lesion=False).column_names


# Each case breaks one thing in a correct download and names the id left out and what the message must say.
def corrupt_image(raw: IsicRaw):
    raw.image(raw.ids[2]).write_bytes(b"this is not a JPEG file at all")
    return raw.ids[2], [str(raw.image(raw.ids[2])), "cannot decode image"]


def truncated_image(raw: IsicRaw):
    write_truncated(raw.image(raw.ids[3]))
    return raw.ids[3], [str(raw.image(raw.ids[3])), "truncated"]


def missing_image(raw: IsicRaw):
    raw.image(raw.ids[4]).unlink()
    return raw.ids[4], ["ISIC2018_Task3_Training_GroundTruth.csv line 6", "does not exist"]


def image_without_row(raw: IsicRaw):
    orphan = raw.input_dir / "ISIC_9999999.jpg"
    photo(60, 45, seed=9).save(orphan)
    return "ISIC_9999999", [str(orphan), "has no row in ISIC2018_Task3_Training_GroundTruth.csv"]


def zero_positives(raw: IsicRaw):
    rows = raw.gt_rows()
    rows[5] = [rows[5][0]] + ["0.0"] * 7
    raw.write_ground_truth(rows)
    return raw.ids[5], ["line 7", "0 positive labels (none)"]


def two_positives(raw: IsicRaw):
    rows = raw.gt_rows()
    rows[6] = [rows[6][0], "1.0", "1.0"] + ["0.0"] * 5
    raw.write_ground_truth(rows)
    return raw.ids[6], ["line 8", "2 positive labels (MEL, NV)"]


def not_a_number(raw: IsicRaw):
    rows = raw.gt_rows()
    rows[1][3] = "yes"
    raw.write_ground_truth(rows)
    return raw.ids[1], ["line 3", "BCC='yes' is not a number"]


def duplicate_id(raw: IsicRaw):
    rows = raw.gt_rows()
    rows.append(list(rows[0]))
    raw.write_ground_truth(rows)
    return raw.ids[0], [f"line {len(rows) + 1}", "duplicate image id (first on line 2)"]


def wrong_field_count(raw: IsicRaw):
    rows = raw.gt_rows()
    rows[7] = rows[7][:4]
    raw.write_ground_truth(rows)
    return raw.ids[7], ["line 9", "expected 8 fields"]


def missing_lesion(raw: IsicRaw):
    rows = [
        [i, lesion, "histopathology"]
        for i, lesion in zip(raw.ids, raw.lesions, strict=True)
        if i != raw.ids[8]
    ]
    write_csv(raw.root / ISIC_GROUPINGS, ["image", "lesion_id", "diagnosis_confirm_type"], rows)
    return raw.ids[8], ["line 10", f"no lesion_id for this image in {ISIC_GROUPINGS}"]


BAD_INPUT = [
    corrupt_image,
    truncated_image,
    missing_image,
    image_without_row,
    zero_positives,
    two_positives,
    not_a_number,
    duplicate_id,
    wrong_field_count,
    missing_lesion,
]


@pytest.mark.parametrize("break_it", BAD_INPUT, ids=[f.__name__ for f in BAD_INPUT])
def test_bad_input_raises_naming_file_and_row(isic, break_it):
    raw = isic()
    _, fragments = break_it(raw)
    with pytest.raises(DataValidationError) as error:
        build(raw)
    for fragment in fragments:
        assert fragment in str(error.value)


@pytest.mark.parametrize("break_it", BAD_INPUT, ids=[f.__name__ for f in BAD_INPUT])
def test_bad_input_skipped_and_reported(isic, break_it, caplog):
    raw = isic()
    bad_id, fragments = break_it(raw)
    ds = build(raw, skip_invalid=True)
    (item,) = dataset_metadata(ds)["invalid_items"]
    assert item["image_id"] == bad_id
    assert all(fragment in f"{item['location']}: {item['reason']}" for fragment in fragments)
    if break_it is duplicate_id:
        assert ds["image_id"].count(bad_id) == 1  # the first row is kept
    elif bad_id:
        assert bad_id not in ds["image_id"]
    assert "leaving out 1 invalid item" in caplog.text
    assert len(ds) == len(raw.ids) - (0 if break_it in (image_without_row, duplicate_id) else 1)


def test_empty_class_is_an_error_even_when_skipping(isic):
    raw = isic()
    rows = [row for row, label in zip(raw.gt_rows(), raw.labels, strict=True) if ISIC_CLASSES[label] != "DF"]
    raw.write_ground_truth(rows)
    for path in [raw.image(i) for i, y in zip(raw.ids, raw.labels, strict=True) if ISIC_CLASSES[y] == "DF"]:
        path.unlink()
    for skip in (False, True):
        with pytest.raises(DataValidationError, match=r"class\(es\) \['DF'\] have no usable images"):
            build(raw, skip_invalid=skip)


@pytest.mark.parametrize(
    "content, message",
    [
        (
            b"img,MEL,NV\nISIC_0024306,1.0,0.0\n",
            r"line 1: header \['img', 'MEL', 'NV'\] lacks column\(s\) \['image'\]",
        ),
        (b"", "line 1: empty file or header"),
        (b"\xff\xfe\x00\x81binary\x00", "not a UTF-8 text CSV"),
    ],
    ids=["wrong_header", "empty", "binary"],
)
def test_unreadable_header_is_an_error_even_when_skipping(isic, content, message):
    raw = isic()
    raw.ground_truth.write_bytes(content)
    for skip in (False, True):
        with pytest.raises(DataValidationError, match=message) as error:
            build(raw, skip_invalid=skip)
        assert str(raw.ground_truth) in str(error.value)


def test_missing_layout_names_what_is_expected(tmp_path):
    with pytest.raises(DataValidationError, match="ISIC2018_Task3_Training_Input"):
        build_dataset("isic2018", str(tmp_path))
