"""Tests of the Balanced Softmax loss (Ren et al., NeurIPS 2020; jiawei-ren/BalancedMetaSoftmax-Classification).

The expected values are computed here from the formula, independently of `aduni_hf.losses.balanced_softmax_loss`:
cross-entropy of the logits shifted by the log class prior (or, equivalently, by log n_c), and a per-sample loop
over -log(n_y exp(l_y) / sum_c n_c exp(l_c)), the softmax with the counts as weights that names the method.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from aduni_hf.losses import BalancedSoftmaxLoss
from aduni_hf.methods import METHODS, LossInputs, MethodArguments

ISIC_COUNTS = [327, 514, 1099, 115, 1113, 6705, 142]
NUM_CLASSES = len(ISIC_COUNTS)


def batch(num_images: int = 6, views: int = 1, seed: int = 0, scale: float = 3.0):
    generator = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(views * num_images, NUM_CLASSES, generator=generator)
    labels = torch.tensor([0, 3, 5, 6, 1, 3, 2, 4][:num_images])
    return logits, labels


def oracle(logits: torch.Tensor, labels: torch.Tensor, counts) -> float:
    """Mean over rows of -log(n_y e^{l_y} / sum_c n_c e^{l_c}), in plain float64 Python; row r has label r mod N."""
    rows = logits.double().tolist()
    total = 0.0
    for r, row in enumerate(rows):
        y = int(labels[r % len(labels)])
        weighted = [n * math.exp(value) for n, value in zip(counts, row, strict=True)]
        total += -math.log(weighted[y] / sum(weighted))
    return total / len(rows)


def test__the_balanced_softmax_method_trains_with_it_on_one_view_and_no_alpha():
    method = METHODS["balanced_softmax"]
    assert len(method.stages) == 1 and method.stages[0].num_views == 1
    assert method.classifier_type == "linear"  # the model's default classifier
    # the method reads none of the other methods' fields (temperature, max_margin)
    args = MethodArguments(method="balanced_softmax", temperature=0.2, max_margin=0.3)
    loss = method.stages[0].loss(LossInputs(NUM_CLASSES, ISIC_COUNTS, None, args))  # it needs no model
    assert type(loss) is BalancedSoftmaxLoss
    assert loss.epoch_logs() == {}  # no alpha, nothing that changes with the epoch
    logits, labels = batch(seed=9)
    assert loss(logits, labels).item() == pytest.approx(oracle(logits, labels, ISIC_COUNTS), rel=1e-6)


def test__equals_cross_entropy_of_logits_plus_log_prior():
    logits, labels = batch()
    counts = torch.tensor(ISIC_COUNTS, dtype=torch.float64)
    expected = F.cross_entropy(logits.double() + torch.log(counts / counts.sum()), labels)
    got = BalancedSoftmaxLoss(NUM_CLASSES, ISIC_COUNTS)(logits, labels)
    assert got.dtype == torch.float32 and got.shape == ()
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-6)
    # the shift matters: not the plain cross-entropy
    assert abs(got.item() - F.cross_entropy(logits, labels).item()) > 0.1


def test__equals_cross_entropy_of_logits_plus_log_counts():
    logits, labels = batch(seed=1)
    log_counts = torch.log(torch.tensor(ISIC_COUNTS, dtype=torch.float64))
    expected = F.cross_entropy(logits.double() + log_counts, labels)
    got = BalancedSoftmaxLoss(NUM_CLASSES, ISIC_COUNTS)(logits, labels)
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-6)


def test__equals_the_count_weighted_softmax_loop():
    logits, labels = batch(seed=2)
    got = BalancedSoftmaxLoss(NUM_CLASSES, ISIC_COUNTS)(logits, labels)
    assert got.item() == pytest.approx(oracle(logits, labels, ISIC_COUNTS), rel=1e-6)


def test__very_large_counts_only_their_ratios_matter():
    logits, labels = batch(seed=3)
    small = BalancedSoftmaxLoss(NUM_CLASSES, ISIC_COUNTS)(logits, labels)
    huge = BalancedSoftmaxLoss(NUM_CLASSES, [n * 10**9 for n in ISIC_COUNTS])(logits, labels)
    torch.testing.assert_close(huge, small, rtol=1e-6, atol=1e-6)


def test__every_view_is_a_row_with_its_image_label():
    logits, labels = batch(num_images=4, views=2, seed=4)
    got = BalancedSoftmaxLoss(NUM_CLASSES, ISIC_COUNTS)(logits, labels)
    assert got.item() == pytest.approx(oracle(logits, labels, ISIC_COUNTS), rel=1e-6)


def test__from_outputs_reads_the_logits():
    logits, labels = batch(seed=5)

    class Outputs:
        pass

    outputs = Outputs()
    outputs.logits = logits
    loss = BalancedSoftmaxLoss(NUM_CLASSES, ISIC_COUNTS)
    out = loss.from_outputs(outputs, labels)
    assert torch.equal(out.loss, loss(logits, labels))
    assert torch.equal(out.row_labels, labels) and out.contrast_labels is None


def test__a_class_without_training_images_gives_a_finite_loss():
    counts = [40, 0, 7, 1, 12, 5, 3]
    logits, labels = batch(seed=6)
    labels = torch.where(labels == 1, 0, labels)  # no target of the empty class
    loss = BalancedSoftmaxLoss(NUM_CLASSES, counts)
    assert torch.isfinite(loss.log_prior).all()
    assert loss.log_prior[1].item() == pytest.approx(math.log(1e-9), rel=1e-6)
    total = sum(counts)
    shift = torch.tensor([math.log(n / total + 1e-9) for n in counts], dtype=torch.float64)
    got = loss(logits, labels)
    assert torch.isfinite(got)
    torch.testing.assert_close(
        got.double(), F.cross_entropy(logits.double() + shift, labels), rtol=1e-6, atol=1e-6
    )


def test__gradient_in_float64():
    logits, labels = batch(seed=7)
    logits = logits.double().requires_grad_(True)
    loss = BalancedSoftmaxLoss(NUM_CLASSES, ISIC_COUNTS)
    assert torch.autograd.gradcheck(lambda z: loss(z, labels), (logits,))
    # and the analytic gradient: (softmax(l + log pi) - onehot(y)) / N
    loss(logits, labels).backward()
    counts = torch.tensor(ISIC_COUNTS, dtype=torch.float64)
    probabilities = torch.softmax(logits.detach() + torch.log(counts), dim=1)
    expected = (probabilities - F.one_hot(labels, NUM_CLASSES).double()) / len(labels)
    torch.testing.assert_close(logits.grad, expected)


def test__bf16_autocast_gives_a_finite_float32_loss():
    logits, labels = batch(seed=8, scale=20.0)
    loss = BalancedSoftmaxLoss(NUM_CLASSES, ISIC_COUNTS)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        bf16 = logits.to(torch.bfloat16)
        got = loss(bf16, labels)
    assert got.dtype == torch.float32 and torch.isfinite(got)
    assert got.item() == pytest.approx(oracle(bf16.float(), labels, ISIC_COUNTS), rel=1e-5)


@pytest.mark.parametrize(
    "counts", [[1, 2, 3], [5, -1, 2, 0, 0, 0, 0], [0] * NUM_CLASSES, [[1] * NUM_CLASSES]]
)
def test__bad_class_counts_raise(counts):
    with pytest.raises(ValueError, match="class_counts"):
        BalancedSoftmaxLoss(NUM_CLASSES, counts)


def test__wrong_logit_shape_raises():
    loss = BalancedSoftmaxLoss(NUM_CLASSES, ISIC_COUNTS)
    with pytest.raises(ValueError, match="expected logits"):
        loss(torch.zeros(6, NUM_CLASSES + 1), torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="expected logits"):
        loss(torch.zeros(7, NUM_CLASSES), torch.zeros(6, dtype=torch.long))
