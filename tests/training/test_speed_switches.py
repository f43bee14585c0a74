"""The speed switches of a recipe (README, "Performance"): their defaults per device, bf16 autocast in a real
Trainer step, and persistent data-loader workers that still evaluate each data set on its own."""

import warnings

import numpy as np
import pytest
import torch

from aduni_hf.data import SingleViewDataset, eval_transform
from aduni_hf.training import AdUniTrainingArguments
from aduni_hf.training.training_args import default_bf16
from tests.training.trainer_helpers import IMAGE_SIZE, digits_splits, make_trainer


@pytest.fixture(scope="module")
def splits():
    return digits_splits()


def test_defaults_on_the_cpu(tmp_path):
    args = AdUniTrainingArguments(output_dir=str(tmp_path), use_cpu=True)
    assert args.channels_last is True
    assert args.bf16 is False  # CPU: float32 unless the recipe asks
    assert args.dataloader_persistent_workers is False  # no workers to keep
    workers = AdUniTrainingArguments(output_dir=str(tmp_path), use_cpu=True, dataloader_num_workers=2)
    assert workers.dataloader_persistent_workers is True


def test_explicit_values_are_kept(tmp_path):
    args = AdUniTrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, bf16=True, channels_last=False,
        dataloader_num_workers=2, dataloader_persistent_workers=False,
    )  # fmt: skip
    assert (args.bf16, args.channels_last, args.dataloader_persistent_workers) == (True, False, False)
    assert args.mixed_precision == "bf16"


def test_bf16_is_the_default_only_on_a_gpu_with_bf16():
    gpu_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    assert default_bf16(use_cpu=False, fp16=False) is gpu_bf16
    assert default_bf16(use_cpu=True, fp16=False) is False
    assert default_bf16(use_cpu=False, fp16=True) is False  # fp16 asked: never both


def test_memory_is_pinned_only_where_an_accelerator_trains(tmp_path):
    """Unset or true, `dataloader_pin_memory` holds where an accelerator other than MPS trains; false stays false."""
    accelerator = torch.accelerator.current_accelerator(check_available=True)
    pinnable = accelerator is not None and accelerator.type != "mps"

    def pinned(**asked) -> bool:
        return AdUniTrainingArguments(output_dir=str(tmp_path), **asked).dataloader_pin_memory

    for asked in (None, True):
        assert pinned(dataloader_pin_memory=asked) is pinnable
        assert pinned(dataloader_pin_memory=asked, use_cpu=True) is False
    assert pinned(dataloader_pin_memory=False) is False


def test_the_loaders_of_a_run_without_an_accelerator_do_not_warn_about_pinned_memory(tmp_path, splits):
    """A recipe that leaves the device and `dataloader_pin_memory` unset: torch said "'pin_memory' argument is set as
    true but no accelerator is found" at every loader a CPU-only machine built."""
    eval_set = SingleViewDataset(splits.val, eval_transform(IMAGE_SIZE))
    trainer = make_trainer(tmp_path, splits, use_cpu=False, eval_dataset=eval_set)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        next(iter(trainer.get_train_dataloader()))
        next(iter(trainer.get_eval_dataloader()))
    assert [str(w.message) for w in caught if "pin_memory" in str(w.message)] == []


@pytest.mark.slow
def test_bf16_autocast_runs_the_network_in_bf16_and_keeps_float32_weights(tmp_path, splits):
    """One step with bf16 autocast: the convolutions compute in bf16, the weights stay float32, the loss is the
    float32 loss to bf16 precision, and the update points the same way. bf16 keeps 8 mantissa bits, and at this
    random start the contrastive gradient is a difference of nearly equal terms: the updates agree to a cosine of
    about 0.9, not to rounding (and later steps drift apart as any perturbed run does)."""
    runs = {}
    for bf16 in (False, True):
        trainer = make_trainer(tmp_path / str(bf16), splits, epochs=1, max_steps=1, bf16=bf16, image_size=32,
                               backbone="resnet18")  # its conv1 is hooked below
        conv_dtypes = []
        trainer.model.aduni.backbone.conv1.register_forward_hook(
            lambda module, inputs, output, dtypes=conv_dtypes: dtypes.append(output.dtype)
        )
        start = torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])
        trainer.train()
        assert set(conv_dtypes) == {torch.bfloat16 if bf16 else torch.float32}
        assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # master weights
        loss = next(log["loss"] for log in trainer.state.log_history if "loss" in log)
        end = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
        runs[bf16] = loss, end - start
    (loss32, update32), (loss16, update16) = runs[False], runs[True]
    assert np.isfinite(loss16) and loss16 == pytest.approx(loss32, rel=2e-3)
    cosine = torch.nn.functional.cosine_similarity(update32, update16, dim=0)
    assert cosine > 0.8, f"the bf16 update points elsewhere than the float32 one (cosine {cosine:.3f})"


@pytest.mark.slow
def test_bf16_on_the_cpu_below_32_pixels_is_refused(tmp_path, splits):
    """torch's CPU bf16 convolution gives garbage weight gradients for a stride-2 convolution over a 1x1 map (a
    ResNet's layer4 at 16 px): the direct evidence, then the refusal that keeps a recipe from training on it."""
    torch.manual_seed(0)
    corrupt = 0
    for _ in range(20):
        conv = torch.nn.Conv2d(256, 512, 3, stride=2, padding=1, bias=False)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            conv(torch.randn(32, 256, 1, 1)).float().sum().backward()
        corrupt += not bool(conv.weight.grad.abs().max() < 1e6)  # |x| sums of 32 N(0, 1) values: about 30
    if corrupt == 0:
        pytest.skip("this torch build computes the bf16 gradient correctly: the refusal could be lifted")
    with pytest.raises(ValueError, match="bf16 on the CPU with image_size 16"):
        make_trainer(tmp_path, splits, epochs=1, bf16=True)


@pytest.mark.slow
def test_persistent_workers_evaluate_each_data_set_on_its_own(tmp_path, splits):
    """The Trainer caches one persistent-worker evaluation loader under "eval" for any data set object; the
    test fold evaluated after the validation split must still be the test fold."""
    trainer = make_trainer(tmp_path, splits, epochs=1, dataloader_num_workers=1)
    assert trainer.args.dataloader_persistent_workers
    validation = SingleViewDataset(splits.val, eval_transform(IMAGE_SIZE))
    test = SingleViewDataset(splits.test.select(range(23)), eval_transform(IMAGE_SIZE))
    trainer.eval_dataset = validation
    first = trainer.evaluate()
    on_test = trainer.evaluate(test, metric_key_prefix="test")
    again = trainer.evaluate()
    predicted = trainer.predict(test)  # an uncached loader over the test images
    assert on_test["test_loss"] == pytest.approx(predicted.metrics["test_loss"], rel=1e-6)
    assert on_test["test_accuracy"] == predicted.metrics["test_accuracy"]
    assert again["eval_loss"] == pytest.approx(first["eval_loss"], rel=1e-6)
    assert trainer.get_eval_dataloader(test) is trainer.get_eval_dataloader(test)  # kept, not rebuilt
    assert trainer.get_eval_dataloader(test) is not trainer.get_eval_dataloader()


@pytest.mark.slow
def test_persistent_workers_train_to_the_weights_of_zero_workers(tmp_path, splits):
    """A new loader iterator draws its workers' seed from torch's RNG, a reused persistent one does not; dropout
    draws from the same RNG. Two epochs with an evaluation after each end with the same weights either way."""
    weights = {}
    for workers in (0, 2):
        validation = SingleViewDataset(splits.val, eval_transform(IMAGE_SIZE))
        trainer = make_trainer(tmp_path / str(workers), splits, epochs=2, dataloader_num_workers=workers,
                               eval_strategy="epoch", eval_dataset=validation)  # fmt: skip
        assert trainer.args.dataloader_persistent_workers is (workers > 0)
        assert trainer.model.config.classifier_dropout > 0  # the global RNG matters
        trainer.train()
        weights[workers] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    for name, value in weights[0].items():
        assert torch.equal(weights[2][name], value), name
