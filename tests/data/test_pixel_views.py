"""The data path of the augmentation on the device: `prepare_data.py --image_size N` stores the raw uint8 pixels,
`PixelViewsDataset` reads a batch of them at once with each view's random parameters, and the views the trainer
makes from them are the CPU path's views up to the stated rounding difference."""

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from aduni_hf.data import (
    DrawKey,
    MultiViewDataset,
    PixelViewsDataset,
    build_augmentation,
    collate_views,
    prepare_dataset,
)
from aduni_hf.data.device_augmentation import DeviceAugmentation
from aduni_hf.data.pixels import PIXELS_COLUMN, PixelReader
from aduni_hf.data.transforms import view_seed
from tests.data.layouts import photo

SIZE = 24


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """An image folder of photograph-like RGB files of several sizes, prepared at SIZE."""
    root = tmp_path_factory.mktemp("folder")
    for c, name in enumerate(("benign", "malignant")):
        (root / name).mkdir()
        for i in range(10):
            photo(40 + 3 * i, 30 + 2 * c, seed=10 * c + i).save(root / name / f"{name}_{i}.png")
    prepare_dataset("imagefolder", str(root), root / "prepared", num_folds=2, image_size=SIZE)
    return datasets.load_from_disk(str(root / "prepared"))


def test_prepared_data_stores_the_raw_pixels_of_its_pngs(prepared):
    assert prepared.features[PIXELS_COLUMN] == datasets.Value("binary")
    rows = [0, 7, 13]
    expected = torch.stack([torch.from_numpy(np.asarray(prepared[i]["image"].convert("RGB"))) for i in rows])
    pixels = PixelReader(prepared)(rows)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, SIZE, SIZE, 3)
    assert torch.equal(pixels, expected)
    # data prepared before (no raw column): the stored image bytes, decoded by torchvision, are the same pixels
    assert torch.equal(PixelReader(prepared.remove_columns(PIXELS_COLUMN))(rows), expected)


def test_a_batch_is_read_at_once_with_every_views_parameters(prepared):
    augmentation = DeviceAugmentation("kaggle", SIZE)
    views = PixelViewsDataset(prepared, augmentation, num_views=2, seed=3)
    keys = [DrawKey(4, 0, 11), DrawKey(4, 1, 2), DrawKey(4, 2, 11)]
    batch = collate_views(views.__getitems__(keys))
    assert batch["pixels"].shape == (3, SIZE, SIZE, 3) and batch["view_parameters"].shape[:2] == (3, 2)
    assert batch["labels"].tolist() == [prepared[11]["label"], prepared[2]["label"], prepared[11]["label"]]
    for row, key in enumerate(keys):
        for view in range(2):
            expected = augmentation.draw(view_seed(3, key.epoch, key.draw, key.index, view))
            assert torch.equal(batch["view_parameters"][row, view], expected)
    # the same image drawn twice in an epoch gets other views; a lone item is the batch's row
    assert not torch.equal(batch["view_parameters"][0], batch["view_parameters"][2])
    item = views[keys[1]]
    assert torch.equal(item["pixels"], batch["pixels"][1]) and item["labels"] == batch["labels"][1]


def test_the_devices_views_are_the_cpu_paths_up_to_rounding(prepared):
    """The trainer's views of a `PixelViewsDataset` batch against `MultiViewDataset`'s views of the same keys."""
    augmentation = DeviceAugmentation("kaggle", SIZE)
    keys = [DrawKey(1, draw, index) for draw, index in enumerate((3, 8, 15, 19))]
    batch = PixelViewsDataset(prepared, augmentation, num_views=2, seed=5).__getitems__(keys)
    device = augmentation.views(batch["pixels"], batch["view_parameters"])
    cpu = collate_views([MultiViewDataset(prepared, build_augmentation("kaggle", SIZE), 2, seed=5)[k] for k in keys])
    assert device.shape == cpu["pixel_values"].shape == (4, 2, 3, SIZE, SIZE)
    difference = (device - cpu["pixel_values"]) * torch.tensor(augmentation.std).view(1, 1, 3, 1, 1) * 255
    assert difference.abs().mean() < 3.0  # uint8 rounding at each PIL step, and nearest-neighbour edges
    assert torch.equal(cpu["labels"], batch["labels"])


def test_images_of_several_sizes_cannot_be_batched(tmp_path):
    images = [Image.new("RGB", (8 + i, 8), (i, 0, 0)) for i in range(2)]
    dataset = datasets.Dataset.from_dict({"image": images, "label": [0, 1]}, features=datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])}))  # fmt: skip
    with pytest.raises(ValueError, match="needs images of one size.*--image_size"):
        PixelReader(dataset)([0, 1])
