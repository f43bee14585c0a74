"""The saved folder works without aduni_hf (trust_remote_code; docs/hf_stack.md, "Remote code"), and the saved
image processor matches the evaluation transform."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, pipeline

import aduni_hf
from aduni_hf import AdUniConfig, AdUniForImageClassification
from aduni_hf.data import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from aduni_hf.hub import build_image_processor
from tests.model_helpers import IMAGE_SIZE, make_image

ID2LABEL = {0: "akiec", 1: "bcc", 2: "mel"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A saved model whose classifier rows point at the test images' features, so images get different
    labels, and its processor."""
    torch.manual_seed(0)
    config = AdUniConfig(
        id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()}, image_size=IMAGE_SIZE
    )
    model = AdUniForImageClassification(config).eval()
    directory = tmp_path_factory.mktemp("aduni-remote")
    processor = build_image_processor(IMAGE_SIZE)
    image_paths = []
    for seed in range(6):
        path = directory.parent / f"{directory.name}-image{seed}.png"
        make_image(seed).save(path)
        image_paths.append(path)
    pixels = processor(images=[Image.open(p).convert("RGB") for p in image_paths], return_tensors="pt")
    with torch.no_grad():
        pooled = model(pixels["pixel_values"]).pooler_output  # (6, d)
        centred = pooled - pooled.mean(dim=0)
        rows = centred[: len(ID2LABEL)]  # class c points at image c
        model.classifier.dense.weight.copy_(50.0 * rows / rows.norm(dim=1, keepdim=True))
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return model, directory, image_paths


def processed(directory, paths) -> torch.Tensor:
    processor = AutoImageProcessor.from_pretrained(directory)
    return processor(images=[Image.open(p).convert("RGB") for p in paths], return_tensors="pt")[
        "pixel_values"
    ]


# ----------------------------------------------------------------------------------------------------------
# image processor
# ----------------------------------------------------------------------------------------------------------


def test__processor_uses_imagenet_statistics_and_model_size(model_dir):
    _, directory, _ = model_dir
    saved = json.loads((directory / "preprocessor_config.json").read_text())
    np.testing.assert_allclose(saved["image_mean"], [0.485, 0.456, 0.406])
    np.testing.assert_allclose(saved["image_std"], [0.229, 0.224, 0.225])
    assert saved["size"] == {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    processor = AutoImageProcessor.from_pretrained(directory)
    np.testing.assert_allclose(processor.image_mean, IMAGENET_MEAN)
    np.testing.assert_allclose(processor.image_std, IMAGENET_STD)
    assert not np.allclose(processor.image_mean, 0.5)


@pytest.mark.parametrize("size", [32, 64])
def test__processor_matches_eval_transform(size):
    processor = build_image_processor(size)
    transform = eval_transform(size)
    rng = np.random.default_rng(size)
    pictures = [
        make_image(1),
        make_image(2, 80, 50),
        Image.fromarray(rng.integers(0, 256, (45, 60, 3), np.uint8)),
    ]
    for picture in pictures:
        got = processor(images=picture, return_tensors="pt")["pixel_values"][0]
        expected = transform(picture)
        assert got.shape == expected.shape == (3, size, size)
        assert (got - expected).abs().max().item() < 0.02  # torchvision vs PIL resize


def test__processor_normalises_with_imagenet_not_half():
    """A uniform grey image maps to (v - mean) / std per channel."""
    grey = Image.new("RGB", (40, 40), (128, 128, 128))
    pixels = build_image_processor(IMAGE_SIZE)(images=grey, return_tensors="pt")["pixel_values"][0]
    expected = (128 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(pixels.mean(dim=(1, 2)), expected, atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------------------------------------
# pipeline with the package imported
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test__pipeline_in_process_matches_model_argmax(model_dir):
    model, directory, paths = model_dir
    classifier = pipeline("image-classification", model=str(directory))
    assert type(classifier.model) is AdUniForImageClassification
    with torch.no_grad():
        logits = model(processed(directory, paths)).logits
    probabilities = logits.softmax(dim=-1)
    results = classifier([Image.open(p).convert("RGB") for p in paths], top_k=len(ID2LABEL))
    assert len({ID2LABEL[i] for i in logits.argmax(-1).tolist()}) > 1  # the check below is not trivial
    for i, result in enumerate(results):
        assert result[0]["label"] == ID2LABEL[int(logits[i].argmax())]
        assert {r["label"] for r in result} == set(ID2LABEL.values())
        for r in result:
            label_id = {v: k for k, v in ID2LABEL.items()}[r["label"]]
            assert r["score"] == pytest.approx(probabilities[i, label_id].item(), abs=1e-5)


# ----------------------------------------------------------------------------------------------------------
# remote code in a process where aduni_hf cannot be imported
# ----------------------------------------------------------------------------------------------------------

REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    blocker, model_dir, expected_path = sys.argv[1:4]
    sys.path.insert(0, blocker)
    try:
        import aduni_hf  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("aduni_hf is importable in the remote-code process")
    assert "aduni_hf" not in sys.modules

    import torch
    from PIL import Image
    from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, pipeline

    expected = torch.load(expected_path)
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=True)
    assert type(config).__name__ == "AdUniConfig", type(config)
    assert config.id2label == expected["id2label"], config.id2label

    model = AutoModelForImageClassification.from_pretrained(model_dir, trust_remote_code=True).eval()
    assert type(model).__name__ == "AdUniForImageClassification"
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    with torch.no_grad():
        out = model(expected["pixel_values"])
    assert torch.equal(out.logits, expected["logits"]), (out.logits - expected["logits"]).abs().max()
    assert torch.equal(out.features, expected["features"])

    # the forward contract holds in the remote-code copy too
    loss, logits = model(expected["pixel_values"], labels=torch.tensor([0, 1, 2, 0, 1, 2]), return_dict=False)[:2]
    assert torch.equal(logits, expected["logits"]) and loss.dtype == torch.float32
    with torch.no_grad():
        hidden = model(expected["pixel_values"], output_hidden_states=True).hidden_states
    assert len(hidden) == 5, len(hidden)
    try:
        model(expected["pixel_values"], lables=torch.tensor([0]))
    except TypeError as err:
        assert "lables" in str(err), err
    else:
        raise AssertionError("an unknown forward argument was accepted")

    # a grey-scale fine-tune from the RGB checkpoint: conv1 is created and initialised, the rest is loaded
    torch.manual_seed(0)
    grey = AutoModelForImageClassification.from_pretrained(
        model_dir, trust_remote_code=True, backbone_kwargs={"in_chans": 1}, ignore_mismatched_sizes=True
    ).eval()
    conv1 = grey.aduni.backbone.conv1.weight
    assert conv1.shape == (64, 1, 7, 7) and torch.isfinite(conv1).all()
    assert abs(conv1.std().item() / (2.0 / (64 * 49)) ** 0.5 - 1) < 0.05, conv1.std()
    assert torch.equal(grey.aduni.backbone.layer1[0].conv1.weight, model.aduni.backbone.layer1[0].conv1.weight)
    with torch.no_grad():
        assert torch.isfinite(grey(expected["pixel_values"][:, :1]).logits).all()

    bare = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    assert type(bare).__name__ == "AdUniModel", type(bare)
    with torch.no_grad():
        bare_out = bare(expected["pixel_values"])
    assert torch.equal(bare_out.features, expected["features"])
    assert torch.equal(bare_out.pooler_output, expected["pooler_output"])

    classifier = pipeline("image-classification", model=model_dir, trust_remote_code=True)
    results = classifier(expected["image_paths"], top_k=len(expected["id2label"]))
    top = [result[0]["label"] for result in results]
    assert top == expected["top_labels"], (top, expected["top_labels"])
    for result in results:
        assert {r["label"] for r in result} == set(expected["id2label"].values())
    assert "aduni_hf" not in sys.modules
    print("REMOTE-OK")
    """
)


@pytest.mark.slow
def test__remote_code_without_the_package(model_dir, tmp_path):
    model, directory, paths = model_dir
    pixel_values = processed(directory, paths)
    with torch.no_grad():
        out = model(pixel_values)
    expected_path = tmp_path / "expected.pt"
    torch.save(
        {
            "pixel_values": pixel_values,
            "logits": out.logits,
            "features": out.features,
            "pooler_output": out.pooler_output,
            "id2label": ID2LABEL,
            "image_paths": [str(p) for p in paths],
            "top_labels": [ID2LABEL[i] for i in out.logits.argmax(-1).tolist()],
        },
        expected_path,
    )
    blocker = tmp_path / "blocker"
    (blocker / "aduni_hf").mkdir(parents=True)
    (blocker / "aduni_hf" / "__init__.py").write_text(
        'raise ImportError("aduni_hf is hidden in this test")\n'
    )
    script = tmp_path / "remote_check.py"
    script.write_text(REMOTE_SCRIPT)
    workdir = tmp_path / "cwd"
    workdir.mkdir()

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"), TOKENIZERS_PARALLELISM="false")
    result = subprocess.run(
        [sys.executable, str(script), str(blocker), str(directory), str(expected_path)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert "REMOTE-OK" in result.stdout
    # the dynamic module came from the model folder, cached under the test's HF_HOME
    assert list((tmp_path / "hf-home" / "modules" / "transformers_modules").rglob("modeling_aduni.py"))
    assert aduni_hf.__name__ == "aduni_hf"  # this process still has the package
