"""Numerical robustness of the AduC loss (issue 7): finite loss and gradients for a single-class batch, a
class with one image, temperature 0.05 under bf16 and fp16 autocast, and logits of magnitude 1e4.

Every test asserts that the loss and every entry of every gradient (features before L2 normalisation and
logits, or the parameters of the nn.Linear layers that produce them) are finite and that no gradient is all
zero, and checks the value against a float64 loop oracle. The oracle of tests/losses/test_aduc.py uses
math.exp directly, which overflows for logits of 1e4, so the large-logit tests use `stable_oracle`, the
same loops with a max-shifted log-sum-exp, itself checked against that oracle on ordinary inputs.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from aduni_hf.losses import AduCLoss, aduc_per_anchor
from tests.losses.test_aduc import aduc_oracle, make_inputs, oracle_per_anchor

DIM = 8
TEMPERATURE = 0.1  # official T
BASE_TEMPERATURE = 0.07  # official T_b
ALPHAS = [1.0, 0.01, 0.0]


# ----------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------


def assert_finite(name: str, tensor: torch.Tensor) -> None:
    bad = (~torch.isfinite(tensor)).nonzero().tolist()
    assert not bad, f"{name} is non-finite at {bad[:5]} (of {len(bad)})"


def assert_finite_nonzero_grad(name: str, grad: torch.Tensor | None) -> None:
    assert grad is not None, f"{name} received no gradient"
    assert_finite(f"{name}.grad", grad)
    assert grad.abs().sum() > 0, f"{name}.grad is all zero"


def assert_layer_gradients(hidden, logits, projection, classifier) -> None:
    """Finite, non-zero gradients on the low-precision activations and on the float32 parameters."""
    assert_finite_nonzero_grad("features before normalisation", hidden.grad)
    assert_finite_nonzero_grad("logits", logits.grad)
    for name, p in [
        *projection.named_parameters(prefix="projection"),
        *classifier.named_parameters(prefix="classifier"),
    ]:
        assert p.grad.dtype == torch.float32
        assert_finite_nonzero_grad(name, p.grad)


def randn(*shape, generator, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=generator, dtype=dtype)


def seeded_linear(in_features: int, out_features: int, generator, scale: float = 1.0) -> torch.nn.Linear:
    """An nn.Linear whose float32 parameters come from `generator` (not the global RNG)."""
    layer = torch.nn.Linear(in_features, out_features)
    with torch.no_grad():
        layer.weight.copy_(
            scale * randn(out_features, in_features, generator=generator) / math.sqrt(in_features)
        )
        layer.bias.copy_(scale * randn(out_features, generator=generator))
    return layer


def loss_and_leaf_grads(loss_fn, raw, logits, labels, alpha):
    """The loss of L2-normalised `raw` and `logits`, and the gradients w.r.t. `raw` (before normalisation)
    and `logits`, all checked finite and not all zero."""
    raw = raw.detach().clone().requires_grad_()
    logits = logits.detach().clone().requires_grad_()
    loss = loss_fn(F.normalize(raw, dim=1), logits, labels, alpha)
    assert loss.shape == ()
    assert_finite("loss", loss)
    loss.backward()
    assert_finite_nonzero_grad("raw features", raw.grad)
    assert_finite_nonzero_grad("logits", logits.grad)
    return loss.detach(), raw.grad, logits.grad


def stable_oracle(features, logits, labels, alpha, beta, temperature, base_temperature, class_counts=None):
    """The loop oracle of tests/losses/test_aduc.py (docs/method.md, "The AduC loss"), float64 Python
    arithmetic, with log D_i = m + log sum exp(t - m), m the row maximum, so that logits of 1e4 do not
    overflow math.exp. Returns the mean over the 2N anchors as a float64 scalar tensor."""
    z = features.detach().double().tolist()
    raw_logits = logits.detach().double().tolist()
    image_labels = [int(y) for y in labels]
    num_rows, num_classes = len(z), len(raw_logits[0])
    row_labels = [image_labels[r % len(image_labels)] for r in range(num_rows)]
    if class_counts is None:
        log_prior = [0.0] * num_classes
    else:
        log_prior = [math.log(n / sum(class_counts) + 1e-9) for n in class_counts]

    losses = []
    for i in range(num_rows):
        u = [raw_logits[i][c] + log_prior[c] for c in range(num_classes)]
        a = [
            math.fsum(zi * zj for zi, zj in zip(z[i], z[j], strict=True)) / temperature
            for j in range(num_rows)
        ]
        terms = u + [a[j] for j in range(num_rows) if j != i]
        top = max(terms)
        log_denominator = top + math.log(math.fsum(math.exp(t - top) for t in terms))
        positives = [j for j in range(num_rows) if j != i and row_labels[j] == row_labels[i]]
        weighted_sum = beta * (u[row_labels[i]] - log_denominator)
        weighted_sum += alpha * math.fsum(a[j] - log_denominator for j in positives)
        normaliser = beta + alpha * len(positives) + 1e-12
        losses.append(-(temperature / base_temperature) * weighted_sum / normaliser)
    return torch.tensor(math.fsum(losses) / num_rows, dtype=torch.float64)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_stable_oracle_matches_loop_oracle(alpha):
    """The max-shifted oracle equals the plain loop oracle where the latter does not overflow."""
    features, logits = make_inputs(seed=30)
    labels = torch.tensor([0, 0, 0, 1, 3])
    counts = [50, 10, 3, 1]
    torch.testing.assert_close(
        stable_oracle(features, logits, labels, alpha, 1.0, TEMPERATURE, BASE_TEMPERATURE, counts),
        aduc_oracle(features, logits, labels, alpha, 1.0, TEMPERATURE, BASE_TEMPERATURE, counts),
        rtol=1e-12,
        atol=0.0,
    )


# ----------------------------------------------------------------------------------------------------------
# 1. A single-class batch
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("num_classes", "counts"), [(3, [10, 5, 1]), (1, [7])], ids=["C=3", "C=1"])
@pytest.mark.parametrize("alpha", ALPHAS)
def test_single_class_batch(alpha, num_classes, counts):
    """All labels equal (the tiny class when C = 3): every other sample is a positive of every anchor."""
    g = torch.Generator().manual_seed(20)
    num_images = 4
    raw = randn(2 * num_images, DIM, generator=g)
    logits = 2.0 * randn(2 * num_images, num_classes, generator=g)
    labels = torch.full((num_images,), num_classes - 1)
    loss_fn = AduCLoss(num_classes, class_counts=counts)

    loss, raw_grad, logits_grad = loss_and_leaf_grads(loss_fn, raw, logits, labels, alpha)
    assert loss.dtype == torch.float32
    assert (raw_grad.norm(dim=1) > 0).all(), "a row of the features got no gradient"
    assert (logits_grad.norm(dim=1) > 0).all(), "a row of the logits got no gradient"
    expected = aduc_oracle(
        F.normalize(raw, dim=1), logits, labels, alpha, 1.0, TEMPERATURE, BASE_TEMPERATURE, counts
    )
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# 2. A class with one image, and classes of class_counts with no image in the batch
# ----------------------------------------------------------------------------------------------------------

ONE_IMAGE_BATCHES = {
    # labels of the N images, class_counts of the C = 4 classes
    "one_image_classes_2_3": ([0, 0, 1, 1, 2, 3], [50, 10, 3, 1]),
    "one_image_class_3_absent_1_2": ([0, 0, 0, 3], [50, 10, 3, 1]),
    "one_image_class_3_absent_zero_count_1": ([0, 0, 0, 3], [50, 0, 3, 1]),
    "batch_of_one_image": ([3], [50, 10, 3, 1]),
}


@pytest.mark.parametrize("batch", list(ONE_IMAGE_BATCHES))
@pytest.mark.parametrize("alpha", ALPHAS)
def test_one_image_class_and_absent_classes(alpha, batch):
    """An image alone in its class: its two views are each other's only positive (|P| = 1). Their per-anchor
    losses match the loop oracle; classes with no image still get a logit gradient (they are in every D_i)."""
    image_labels, counts = ONE_IMAGE_BATCHES[batch]
    num_classes, num_images = len(counts), len(image_labels)
    g = torch.Generator().manual_seed(21)
    raw = randn(2 * num_images, DIM, generator=g)
    logits = 2.0 * randn(2 * num_images, num_classes, generator=g)
    labels = torch.tensor(image_labels)
    row_labels = torch.cat([labels, labels])
    loss_fn = AduCLoss(num_classes, class_counts=counts)

    loss, raw_grad, logits_grad = loss_and_leaf_grads(loss_fn, raw, logits, labels, alpha)
    features = F.normalize(raw, dim=1)
    expected = aduc_oracle(features, logits, labels, alpha, 1.0, TEMPERATURE, BASE_TEMPERATURE, counts)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)

    # The anchors of the one-image classes, one by one, against the loop oracle.
    one_image_classes = [c for c in set(image_labels) if image_labels.count(c) == 1]
    rows = [r for r in range(2 * num_images) if int(row_labels[r]) in one_image_classes]
    assert len(rows) == 2 * len(one_image_classes) > 0
    per_anchor = aduc_per_anchor(
        features, logits + loss_fn.log_prior, row_labels, alpha=alpha, beta=1.0, temperature=TEMPERATURE
    ) * (TEMPERATURE / BASE_TEMPERATURE)
    oracle = oracle_per_anchor(features, logits, labels, alpha, 1.0, TEMPERATURE, BASE_TEMPERATURE, counts)
    assert_finite("per-anchor loss", per_anchor)
    torch.testing.assert_close(
        per_anchor[rows].double(),
        torch.tensor([oracle[r] for r in rows], dtype=torch.float64),
        rtol=1e-5,
        atol=1e-5,
    )
    for r in rows:
        assert raw_grad[r].abs().sum() > 0, f"one-image anchor row {r}: feature gradient all zero"
        assert logits_grad[r].abs().sum() > 0, f"one-image anchor row {r}: logit gradient all zero"

    # Classes of class_counts with no image in the batch: their logit column still gets a gradient.
    for c in sorted(set(range(num_classes)) - set(image_labels)):
        assert logits_grad[:, c].abs().sum() > 0, f"absent class {c}: logit column gradient all zero"


# ----------------------------------------------------------------------------------------------------------
# 3. Temperature 0.05 under bf16 and fp16 autocast
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.0, 0.01])
@pytest.mark.parametrize("low_dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_temperature_005_under_autocast(low_dtype, alpha):
    """T = 0.05, so z_i.z_j / T reaches 20 for nearly identical features: the two views of every image,
    two images of class 0, and a hard negative pair (images 4 and 5, classes 2 and 3)."""
    temperature = 0.05
    g = torch.Generator().manual_seed(22)
    labels = torch.tensor([0, 0, 1, 1, 2, 3])
    counts = [50, 10, 3, 1]
    num_images, in_features = len(labels), 6
    images = randn(num_images, in_features, generator=g)
    images[1] = images[0] + 1e-3 * randn(in_features, generator=g)  # same class, nearly identical
    images[5] = images[4] + 1e-3 * randn(in_features, generator=g)  # different classes, nearly identical
    x = torch.cat([images, images + 1e-3 * randn(num_images, in_features, generator=g)])  # view 2 ~ view 1
    projection = seeded_linear(in_features, DIM, g)
    classifier = seeded_linear(in_features, len(counts), g, scale=2.0)
    loss_fn = AduCLoss(
        len(counts), class_counts=counts, temperature=temperature, base_temperature=BASE_TEMPERATURE
    )

    with torch.autocast("cpu", dtype=low_dtype):
        hidden = projection(x)
        features = F.normalize(hidden, dim=1)
        logits = classifier(x)
        assert hidden.dtype == features.dtype == logits.dtype == low_dtype
        hidden.retain_grad()
        logits.retain_grad()
        loss = loss_fn(features, logits, labels, alpha)
    assert loss.dtype == torch.float32
    assert_finite("loss", loss)

    rounded_features, rounded_logits = features.detach().float(), logits.detach().float()
    similarity = rounded_features @ rounded_features.T / temperature
    off_diagonal = similarity.masked_fill(torch.eye(2 * num_images, dtype=torch.bool), -math.inf)
    assert off_diagonal.max() > 19.9, "the batch should reach the similarity maximum 1/T = 20"
    assert off_diagonal[4, 5] > 19.9 and off_diagonal[0, 1] > 19.9

    # The float32 loss of the rounded inputs, and the float64 loop oracle of the same.
    reference = loss_fn(rounded_features, rounded_logits, labels, alpha)
    torch.testing.assert_close(loss.detach(), reference, rtol=1e-5, atol=1e-5)
    expected = aduc_oracle(
        rounded_features, rounded_logits, labels, alpha, 1.0, temperature, BASE_TEMPERATURE, counts
    )
    torch.testing.assert_close(loss.detach().double(), expected, rtol=1e-5, atol=1e-5)

    loss.backward()
    assert_layer_gradients(hidden, logits, projection, classifier)


# ----------------------------------------------------------------------------------------------------------
# 4. Logits of magnitude 1e4
# ----------------------------------------------------------------------------------------------------------

LARGE_LOGIT_COUNTS = {
    "raw": None,
    "tiny_class": [10**6, 10**4, 100, 1],
    "zero_count_class": [10**6, 10**4, 100, 0],
}
LARGE_LOGIT_LABELS = [0, 0, 1, 2, 3]


def assert_large_both_signs(logits: torch.Tensor) -> None:
    assert logits.max() > 1e4 and logits.min() < -1e4, "logits should reach 1e4 in both signs"


@pytest.mark.parametrize("counts", list(LARGE_LOGIT_COUNTS))
@pytest.mark.parametrize("alpha", ALPHAS)
def test_logits_1e4_float32(alpha, counts):
    """logits = 1e4 * randn in float32: the loss matches the float64 oracle to 1e-4 relative and the
    gradients are finite and agree with those of the float64 computation. With alpha = 0 the features get
    a gradient only through rows whose class logits are all far below 1/T (here row 8, all negative):
    elsewhere the sample columns' softmax weights are exp(-1e4) = 0."""
    class_counts = LARGE_LOGIT_COUNTS[counts]
    g = torch.Generator().manual_seed(23)
    labels = torch.tensor(LARGE_LOGIT_LABELS)
    num_images, num_classes = len(labels), 4
    raw = randn(2 * num_images, DIM, generator=g)
    logits = 1e4 * randn(2 * num_images, num_classes, generator=g)
    assert_large_both_signs(logits)
    assert (logits[8] < 0).all()
    loss_fn = AduCLoss(num_classes, class_counts=class_counts)

    loss, raw_grad, logits_grad = loss_and_leaf_grads(loss_fn, raw, logits, labels, alpha)
    assert loss.dtype == torch.float32
    expected = stable_oracle(
        F.normalize(raw, dim=1), logits, labels, alpha, 1.0, TEMPERATURE, BASE_TEMPERATURE, class_counts
    )
    torch.testing.assert_close(loss.double(), expected, rtol=1e-4, atol=0.0)

    # The same computation in float64 on the same inputs: the float32 gradients are close to it.
    loss64, raw_grad64, logits_grad64 = loss_and_leaf_grads(
        loss_fn, raw.double(), logits.double(), labels, alpha
    )
    torch.testing.assert_close(loss64, expected, rtol=1e-9, atol=0.0)
    for got, want in [(raw_grad, raw_grad64), (logits_grad, logits_grad64)]:
        torch.testing.assert_close(got.double(), want, rtol=0.0, atol=1e-3 * want.abs().max().item())


@pytest.mark.parametrize("counts", list(LARGE_LOGIT_COUNTS))
@pytest.mark.parametrize("low_dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_logits_1e4_under_autocast(low_dtype, counts):
    """Logits of magnitude 1e4 (both signs) produced by an nn.Linear under CPU autocast: float32 loss, equal
    to the float32 loss and the float64 oracle of the rounded inputs; finite gradients into the parameters."""
    class_counts = LARGE_LOGIT_COUNTS[counts]
    alpha = 0.01
    g = torch.Generator().manual_seed(24)
    labels = torch.tensor(LARGE_LOGIT_LABELS)
    num_images, num_classes, in_features = len(labels), 4, 6
    x = randn(2 * num_images, in_features, generator=g)
    projection = seeded_linear(in_features, DIM, g)
    classifier = seeded_linear(in_features, num_classes, g, scale=1e4)
    loss_fn = AduCLoss(num_classes, class_counts=class_counts)

    with torch.autocast("cpu", dtype=low_dtype):
        hidden = projection(x)
        features = F.normalize(hidden, dim=1)
        logits = classifier(x)
        assert hidden.dtype == logits.dtype == low_dtype
        hidden.retain_grad()
        logits.retain_grad()
        loss = loss_fn(features, logits, labels, alpha)
    assert_large_both_signs(logits.detach().float())
    assert loss.dtype == torch.float32
    assert_finite("loss", loss)

    rounded_features, rounded_logits = features.detach().float(), logits.detach().float()
    torch.testing.assert_close(
        loss.detach(), loss_fn(rounded_features, rounded_logits, labels, alpha), rtol=1e-6, atol=0.0
    )
    expected = stable_oracle(
        rounded_features, rounded_logits, labels, alpha, 1.0, TEMPERATURE, BASE_TEMPERATURE, class_counts
    )
    torch.testing.assert_close(loss.detach().double(), expected, rtol=1e-4, atol=0.0)

    loss.backward()
    assert_layer_gradients(hidden, logits, projection, classifier)
