"""A run that starts from encoder weights (`backbone_pretrained`): training's first step sees exactly the weights of
the file, every image the run feeds the model is normalised by the weights' mean/std, which the saved image
processor records, and the card says how the encoder was initialised. A Hub id that cannot be fetched fails before
any data is read; the replaced field `pretrained_backbone` is refused, naming the new one.

No ImageNet weights can be downloaded here: a seeded timm resnet18 saved to a file (its BatchNorm statistics set to
other values than timm's initial ones) stands in for them, and a timm folder (config.json and model.safetensors, as
`hf download` leaves a Hub model) for a Hub model with its own normalisation.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import safetensors.torch
import timm
import torch
from timm.models import save_for_hf

from aduni_hf import AdUniModel
from aduni_hf.recipes import ARGUMENT_CLASSES, RecipeError, parse_recipe, run_training

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "configs" / "demo.yaml")
ONE_STEP = ("--max_steps", "1", "--eval_strategy", "no", "--per_device_train_batch_size", "16")


def timm_resnet18(seed: int = 11) -> torch.nn.Module:
    """A seeded timm resnet18 with a 1000-class classifier and BatchNorm statistics unlike timm's initial ones."""
    torch.manual_seed(seed)
    model = timm.create_model("resnet18", pretrained=False)
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
            module.num_batches_tracked.fill_(1000)
    return model


class FirstForwards:
    """Records, through a global forward pre-hook, the encoder's tensors at the first forward of the run's model
    (its first training step), and from then on the pixel values reaching the encoder's first convolution in every
    forward (training and evaluation)."""

    def __init__(self) -> None:
        self.encoder_at_start: dict[str, torch.Tensor] | None = None
        self.pixels: list[torch.Tensor] = []

    def __call__(self, module, args):
        if isinstance(module, AdUniModel) and self.encoder_at_start is None:
            self.encoder_at_start = {k: v.detach().clone() for k, v in module.backbone.state_dict().items()}
            self.conv_hook = module.backbone.conv1.register_forward_pre_hook(lambda conv, x: self.record(x[0]))

    def record(self, pixels: torch.Tensor) -> None:
        self.pixels.append(pixels.detach().clone())

    def __enter__(self):
        self.handle = torch.nn.modules.module.register_module_forward_pre_hook(self)
        return self

    def __exit__(self, *exc):
        self.handle.remove()
        if self.encoder_at_start is not None:
            self.conv_hook.remove()


def train(output_dir: Path, *flags: str) -> dict:
    return run_training(*parse_recipe(ARGUMENT_CLASSES, [DEMO, "--output_dir", str(output_dir), *flags]))


@pytest.mark.slow
def test_training_starts_from_every_encoder_tensor_of_the_file(tmp_path):
    weights = {k: v.contiguous() for k, v in timm_resnet18().state_dict().items()}
    path = tmp_path / "resnet18_in1k.safetensors"
    safetensors.torch.save_file(weights, str(path))
    output_dir = tmp_path / "run"
    with FirstForwards() as seen:
        train(output_dir, "--backbone_pretrained", str(path), *ONE_STEP)
    started = seen.encoder_at_start
    assert set(started) == set(weights) - {"fc.weight", "fc.bias"}
    for key, value in started.items():
        assert torch.equal(value, weights[key]), key
    trained = safetensors.torch.load_file(str(output_dir / "model.safetensors"))
    assert not torch.equal(trained["aduni.backbone.conv1.weight"], weights["conv1.weight"])  # one step was taken
    assert trained["aduni.backbone.bn1.num_batches_tracked"] == 1001
    config = json.loads((output_dir / "config.json").read_text())
    assert config["backbone_pretrained"] == str(path)
    processor = json.loads((output_dir / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == [0.485, 0.456, 0.406] and processor["image_std"] == [0.229, 0.224, 0.225]
    card = (output_dir / "README.md").read_text()
    assert "resnet18 (initialised with the pretrained weights the local resnet18_in1k.safetensors, loaded by timm)" in card
    assert str(tmp_path) not in card  # a local path is not published


@pytest.mark.slow
def test_every_image_the_run_sees_is_normalised_by_the_weights_mean_and_std(tmp_path):
    """A timm folder whose config.json says mean 0.5, std 0.5: every pixel the model sees, in training and in the
    final evaluation, lies in [-1, 1], and the digits' black background is exactly -1 (ImageNet's statistics would
    give -2.12 there)."""
    folder = tmp_path / "resnet18.half"
    save_for_hf(timm_resnet18(), str(folder), safe_serialization=True)
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"].update(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    (folder / "config.json").write_text(json.dumps(config))
    output_dir = tmp_path / "run"
    with FirstForwards() as seen:
        train(output_dir, "--backbone_pretrained", str(folder), *ONE_STEP)
    assert len(seen.pixels) >= 2  # the training step and the test fold's evaluation
    for pixels in seen.pixels:
        assert pixels.min().item() == pytest.approx(-1.0) and pixels.max().item() <= 1.0 + 1e-6
    processor = json.loads((output_dir / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == [0.5, 0.5, 0.5] and processor["image_std"] == [0.5, 0.5, 0.5]


@pytest.fixture(scope="module")
def unreadable_data(tmp_path_factory) -> Path:
    """A prepared data set (save_to_disk layout) whose image bytes are no images: reading one fails."""
    path = tmp_path_factory.mktemp("data") / "prepared"
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"]), "fold": datasets.Value("int64"),
         "image_id": datasets.Value("string")}
    )  # fmt: skip
    datasets.Dataset.from_dict(
        {"image": [{"bytes": b"not an image", "path": None}] * 10, "label": [0, 1] * 5,
         "fold": [i % 5 for i in range(10)], "image_id": [f"i{i}" for i in range(10)]},
        features=features,
        info=datasets.DatasetInfo(description=json.dumps({"source": "test", "num_folds": 5}), features=features),
    ).save_to_disk(str(path))  # fmt: skip
    return path


def test_a_hub_id_without_network_fails_before_the_data_is_read(tmp_path, unreadable_data):
    output_dir = tmp_path / "run"
    with pytest.raises(RecipeError) as raised:
        train(output_dir, "--dataset_path", str(unreadable_data), "--backbone_pretrained", "timm/resnet18.a1_in1k")
    message = str(raised.value)
    assert "backbone_pretrained='timm/resnet18.a1_in1k': timm could not fetch this Hub model" in message
    assert "HF_HUB_OFFLINE=1" in message and "hf download timm/resnet18.a1_in1k --local-dir resnet18.a1_in1k" in message
    assert "backbone_pretrained: resnet18.a1_in1k/model.safetensors" in message
    assert not output_dir.exists() or not any(output_dir.iterdir())


def test_the_replaced_field_is_refused_naming_the_new_one():
    with pytest.raises(RecipeError, match=r"pretrained_backbone was replaced by backbone_pretrained.*backbone_pretrained: w.pth"):
        parse_recipe(ARGUMENT_CLASSES, [DEMO, "--pretrained_backbone", "w.pth"])


def test_a_saved_model_and_encoder_weights_together_are_refused():
    with pytest.raises(RecipeError, match="give model_name_or_path .* or backbone_pretrained .*, not both"):
        parse_recipe(ARGUMENT_CLASSES, [DEMO, "--model_name_or_path", "m", "--backbone_pretrained", "w.pth"])
