"""Tests of the AduC loss against docs/method.md, "The AduC loss", and its invariants.

The oracle below is the formula of docs/method.md, "The AduC loss", transcribed with Python loops over
anchors and columns, in plain float64 Python arithmetic: slow and obviously correct. It shares no code with `aduni_hf.losses.aduc`.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from aduni_hf.losses import AduCLoss, aduc_per_anchor
from aduni_hf.methods import METHODS, LossInputs, MethodArguments
from aduni_hf.schedules import AlphaSchedule, alpha_schedule

NUM_CLASSES = 4
NUM_IMAGES = 5
DIM = 8
# Imbalanced, with two singletons (classes 1 and 3) and an absent class (2).
IMBALANCED_LABELS = [0, 0, 0, 1, 3]
CLASS_COUNTS = [50, 10, 3, 1]

ISIC_COUNTS = [327, 514, 1099, 115, 1113, 6705, 142]
ISIC_LOG_PRIOR = [-3.422, -2.970, -2.210, -4.467, -2.197, -0.401, -4.256]
APTOS_COUNTS = [1805, 370, 999, 193, 295]
APTOS_LOG_PRIOR = [-0.707, -2.292, -1.299, -2.943, -2.519]


# ----------------------------------------------------------------------------------------------------------
# Oracles
# ----------------------------------------------------------------------------------------------------------


def oracle_per_anchor(
    features, logits, labels, alpha, beta, temperature, base_temperature, class_counts=None
) -> list[float]:
    """L_i of docs/method.md, "The AduC loss" (T/T_b scale included), for every anchor i of the view-major batch."""
    z = features.detach().double().tolist()  # (2N, d) as nested lists
    class_logits_raw = logits.detach().double().tolist()  # (2N, C)
    image_labels = [int(y) for y in labels]
    num_images = len(image_labels)
    num_rows = len(z)
    dim = len(z[0])
    num_classes = len(class_logits_raw[0])
    row_labels = [image_labels[r % num_images] for r in range(num_rows)]  # view-major: row r is image r mod N

    if class_counts is None:
        log_prior = [0.0] * num_classes
    else:
        total = sum(class_counts)
        log_prior = [math.log(count / total + 1e-9) for count in class_counts]

    losses = []
    for i in range(num_rows):
        # Step 2: class logits u_ic = l_ic + log(pi_c + 1e-9), no temperature.
        u = [class_logits_raw[i][c] + log_prior[c] for c in range(num_classes)]
        # Step 1: sample logits a_ij = z_i . z_j / T, all j including i.
        a = []
        for j in range(num_rows):
            dot = 0.0
            for k in range(dim):
                dot += z[i][k] * z[j][k]
            a.append(dot / temperature)
        # Step 4: D_i = sum_c exp(u_ic) + sum_{j != i} exp(a_ij).
        denominator = 0.0
        for c in range(num_classes):
            denominator += math.exp(u[c])
        for j in range(num_rows):
            if j != i:
                denominator += math.exp(a[j])
        log_denominator = math.log(denominator)
        # Steps 5-6: beta on the own-class column, alpha on every other same-class sample.
        weighted_sum = beta * (u[row_labels[i]] - log_denominator)
        num_positives = 0
        for j in range(num_rows):
            if j != i and row_labels[j] == row_labels[i]:
                weighted_sum += alpha * (a[j] - log_denominator)
                num_positives += 1
        # Step 7: weighted positive count, then the T/T_b scale.
        normaliser = beta + alpha * num_positives + 1e-12
        losses.append(-(temperature / base_temperature) * weighted_sum / normaliser)
    return losses


def aduc_oracle(features, logits, labels, alpha, beta, temperature, base_temperature, class_counts=None):
    """Step 8: the plain mean over all 2N anchors, as a float64 scalar tensor."""
    losses = oracle_per_anchor(
        features, logits, labels, alpha, beta, temperature, base_temperature, class_counts=class_counts
    )
    return torch.tensor(sum(losses) / len(losses), dtype=torch.float64)


def nt_xent_loop(features, temperature) -> tuple[list[float], list[float]]:
    """SimCLR NT-Xent with two view-major views, by loops: (per-anchor loss, per-anchor log denominator)."""
    z = features.detach().double().tolist()
    num_rows = len(z)
    num_images = num_rows // 2
    per_anchor, log_denominators = [], []
    for i in range(num_rows):
        partner = (i + num_images) % num_rows
        sims = [sum(z[i][k] * z[j][k] for k in range(len(z[i]))) / temperature for j in range(num_rows)]
        denominator = 0.0
        for j in range(num_rows):
            if j != i:
                denominator += math.exp(sims[j])
        log_denominators.append(math.log(denominator))
        per_anchor.append(-(sims[partner] - math.log(denominator)))
    return per_anchor, log_denominators


# ----------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------


def make_inputs(seed=0, num_images=NUM_IMAGES, num_classes=NUM_CLASSES, dim=DIM, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    features = F.normalize(torch.randn(2 * num_images, dim, generator=g, dtype=dtype), dim=1)
    logits = 2.0 * torch.randn(2 * num_images, num_classes, generator=g, dtype=dtype)
    return features, logits


def view_major_labels(labels: torch.Tensor) -> torch.Tensor:
    return torch.cat([labels, labels])


# ----------------------------------------------------------------------------------------------------------
# Oracle grid
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_counts", [False, True], ids=["raw", "logit_adjusted"])
@pytest.mark.parametrize("base_is_temperature", [False, True], ids=["Tb=0.07", "Tb=T"])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
@pytest.mark.parametrize("beta", [1.0, 0.5])
@pytest.mark.parametrize("alpha", [1.0, 0.3, 0.01, 0.0])
def test_matches_loop_oracle(alpha, beta, temperature, base_is_temperature, with_counts):
    features, logits = make_inputs(seed=0)
    labels = torch.tensor(IMBALANCED_LABELS)
    base_temperature = temperature if base_is_temperature else 0.07
    counts = CLASS_COUNTS if with_counts else None
    loss_fn = AduCLoss(
        NUM_CLASSES,
        class_counts=counts,
        temperature=temperature,
        base_temperature=base_temperature,
        beta=beta,
    )
    got = loss_fn(features, logits, labels, alpha)
    expected = aduc_oracle(features, logits, labels, alpha, beta, temperature, base_temperature, counts)
    assert got.dtype == torch.float64
    assert got.shape == ()
    torch.testing.assert_close(got, expected)


def test_per_anchor_matches_loop_oracle():
    features, logits = make_inputs(seed=3)
    labels = torch.tensor(IMBALANCED_LABELS)
    log_prior = torch.tensor(
        [math.log(n / sum(CLASS_COUNTS) + 1e-9) for n in CLASS_COUNTS], dtype=torch.float64
    )
    got = aduc_per_anchor(
        features, logits + log_prior, view_major_labels(labels), alpha=0.3, beta=0.5, temperature=0.2
    )
    # aduc_per_anchor leaves out T/T_b; with T_b = T the oracle's scale is 1.
    expected = oracle_per_anchor(features, logits, labels, 0.3, 0.5, 0.2, 0.2, CLASS_COUNTS)
    assert got.shape == (2 * NUM_IMAGES,)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------------------
# Invariants (docs/method.md, "The AduC loss")
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.0, 0.01])
def test_invariant_permuting_images_across_both_views(alpha):
    features, logits = make_inputs(seed=1)
    labels = torch.tensor(IMBALANCED_LABELS)
    loss_fn = AduCLoss(NUM_CLASSES, class_counts=CLASS_COUNTS)
    perm = torch.randperm(NUM_IMAGES, generator=torch.Generator().manual_seed(7))
    assert not torch.equal(perm, torch.arange(NUM_IMAGES))
    rows = torch.cat([perm, perm + NUM_IMAGES])
    torch.testing.assert_close(
        loss_fn(features[rows], logits[rows], labels[perm], alpha), loss_fn(features, logits, labels, alpha)
    )


@pytest.mark.parametrize("alpha", [1.0, 0.01])
def test_invariant_swapping_view_blocks(alpha):
    features, logits = make_inputs(seed=2)
    labels = torch.tensor(IMBALANCED_LABELS)
    loss_fn = AduCLoss(NUM_CLASSES, class_counts=CLASS_COUNTS)
    rows = torch.cat([torch.arange(NUM_IMAGES, 2 * NUM_IMAGES), torch.arange(NUM_IMAGES)])
    torch.testing.assert_close(
        loss_fn(features[rows], logits[rows], labels, alpha), loss_fn(features, logits, labels, alpha)
    )


def test_invariant_nt_xent_limit_when_classifier_columns_vanish():
    """2.9 (3): labels all distinct and no classifier columns gives NT-Xent x T/T_b.

    AduCLoss always has class columns, so the case is reached as a limit: class logits of -60 make every
    exp(u_ic) < 1e-26, far below the float64 resolution of D_i >= (2N-1) e^{-1/T}, and beta = 1e-10 removes the
    own-class term (its size is beta |u - log D| < 1e-8). What remains is exactly the other-view term.
    """
    temperature, base_temperature = 0.1, 0.07
    features, _ = make_inputs(seed=4, num_images=NUM_IMAGES, num_classes=NUM_IMAGES)
    logits = torch.full((2 * NUM_IMAGES, NUM_IMAGES), -60.0, dtype=torch.float64)
    labels = torch.arange(NUM_IMAGES)  # all distinct: the only positive of an anchor is its other view
    loss_fn = AduCLoss(NUM_IMAGES, temperature=temperature, base_temperature=base_temperature, beta=1e-10)
    nt_xent, _ = nt_xent_loop(features, temperature)
    expected = torch.tensor(sum(nt_xent) / len(nt_xent) * temperature / base_temperature, dtype=torch.float64)
    torch.testing.assert_close(loss_fn(features, logits, labels, 1.0), expected, rtol=1e-7, atol=0.0)
    # The oracle reaches the same limit.
    oracle = aduc_oracle(features, logits, labels, 1.0, 1e-10, temperature, base_temperature)
    torch.testing.assert_close(oracle, expected, rtol=1e-7, atol=0.0)


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_invariant_nt_xent_with_classifier_term_removed_analytically(beta):
    """With all labels distinct and constant negligible class logits L, every anchor has |P| = 1 and
    D_i equals the NT-Xent denominator, so L_i = (T/T_b) [beta (log D_i - L) + alpha l_i] / (beta + alpha),
    with l_i the NT-Xent term of anchor i. Both l_i and log D_i come from the NT-Xent loop.
    """
    temperature, base_temperature, alpha, class_logit = 0.1, 0.07, 1.0, -60.0
    features, _ = make_inputs(seed=5, num_images=NUM_IMAGES, num_classes=NUM_IMAGES)
    logits = torch.full((2 * NUM_IMAGES, NUM_IMAGES), class_logit, dtype=torch.float64)
    labels = torch.arange(NUM_IMAGES)
    loss_fn = AduCLoss(NUM_IMAGES, temperature=temperature, base_temperature=base_temperature, beta=beta)
    nt_xent, log_denominators = nt_xent_loop(features, temperature)
    per_anchor = [
        (temperature / base_temperature) * (beta * (log_d - class_logit) + alpha * l_i) / (beta + alpha)
        for l_i, log_d in zip(nt_xent, log_denominators, strict=True)
    ]
    expected = torch.tensor(sum(per_anchor) / len(per_anchor), dtype=torch.float64)
    torch.testing.assert_close(loss_fn(features, logits, labels, alpha), expected, rtol=1e-9, atol=0.0)


@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 1.0), (0.5, 1.0), (0.01, 1.0), (0.3, 0.5)])
def test_invariant_weighted_normalisers_for_labels_001(alpha, beta):
    """2.9 (4): B = 3, labels [0, 0, 1]. Hand-built case: six orthonormal features (every a_ij = 0 for j != i)
    and class logits all 1 (C = 2), so D_i = 2e + 5, log p of a class column = 1 - log D, of a sample column
    = -log D, and L_i = log D - beta / (beta + alpha |P(i)|): |P| = 3 for class 0 and 1 for class 1.
    """
    labels = torch.tensor([0, 0, 1])
    features = torch.eye(6, dtype=torch.float64)
    logits = torch.ones(6, 2, dtype=torch.float64)
    log_d = math.log(2 * math.e + 5)
    normaliser_class0 = beta + 3 * alpha
    normaliser_class1 = beta + alpha
    by_hand = [log_d - beta / normaliser_class0] * 2 + [log_d - beta / normaliser_class1]
    by_hand = torch.tensor(by_hand * 2, dtype=torch.float64)  # view-major rows 0..5

    got = aduc_per_anchor(
        features, logits, view_major_labels(labels), alpha=alpha, beta=beta, temperature=0.1
    )
    torch.testing.assert_close(got, by_hand)
    loss_fn = AduCLoss(2, temperature=0.1, base_temperature=0.07, beta=beta)
    torch.testing.assert_close(loss_fn(features, logits, labels, alpha), by_hand.mean() * 0.1 / 0.07)
    torch.testing.assert_close(
        loss_fn(features, logits, labels, alpha),
        aduc_oracle(features, logits, labels, alpha, beta, 0.1, 0.07),
    )


@pytest.mark.parametrize("base_temperature", [0.07, 0.1, 0.2, 1.0])
def test_invariant_linear_in_temperature_ratio(base_temperature):
    """2.9 (5): T_b only rescales the loss by T / T_b; the softmax temperature stays T."""
    features, logits = make_inputs(seed=6)
    labels = torch.tensor(IMBALANCED_LABELS)
    temperature = 0.1
    unscaled = AduCLoss(NUM_CLASSES, CLASS_COUNTS, temperature=temperature, base_temperature=temperature)
    scaled = AduCLoss(NUM_CLASSES, CLASS_COUNTS, temperature=temperature, base_temperature=base_temperature)
    torch.testing.assert_close(
        scaled(features, logits, labels, 0.3),
        unscaled(features, logits, labels, 0.3) * temperature / base_temperature,
    )


def test_official_constants_scale_by_1_4286():
    features, logits = make_inputs(seed=6)
    labels = torch.tensor(IMBALANCED_LABELS)
    official = AduCLoss(NUM_CLASSES)  # T = 0.1, T_b = 0.07
    plain = AduCLoss(NUM_CLASSES, temperature=0.1, base_temperature=0.1)
    ratio = official(features, logits, labels, 1.0) / plain(features, logits, labels, 1.0)
    assert ratio.item() == pytest.approx(1.4286, abs=1e-4)


# ----------------------------------------------------------------------------------------------------------
# Logit adjustment
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "expected"),
    [(ISIC_COUNTS, ISIC_LOG_PRIOR), (APTOS_COUNTS, APTOS_LOG_PRIOR)],
    ids=["isic", "aptos"],
)
def test_log_prior_reference_values(counts, expected):
    loss_fn = AduCLoss(len(counts), class_counts=counts)
    assert loss_fn.log_prior.shape == (len(counts),)
    torch.testing.assert_close(
        loss_fn.log_prior.double(), torch.tensor(expected, dtype=torch.float64), atol=1e-3, rtol=0.0
    )


def test_without_counts_the_log_prior_is_zero():
    torch.testing.assert_close(AduCLoss(NUM_CLASSES).log_prior, torch.zeros(NUM_CLASSES))


def test_logit_adjustment_equals_shifting_the_logits():
    features, logits = make_inputs(seed=8)
    labels = torch.tensor(IMBALANCED_LABELS)
    log_prior = torch.tensor(
        [math.log(n / sum(CLASS_COUNTS) + 1e-9) for n in CLASS_COUNTS], dtype=torch.float64
    )
    adjusted = AduCLoss(NUM_CLASSES, class_counts=CLASS_COUNTS)(features, logits, labels, 0.3)
    # The buffer is float32, so the shift carries float32 rounding of log pi (~1e-7 relative).
    shifted = AduCLoss(NUM_CLASSES)(features, logits + log_prior, labels, 0.3)
    torch.testing.assert_close(adjusted, shifted, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Gradients and dtypes
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("counts", [None, [5, 2, 1]], ids=["raw", "logit_adjusted"])
@pytest.mark.parametrize("alpha", [1.0, 0.01])
def test_gradcheck_features_and_logits(alpha, counts):
    g = torch.Generator().manual_seed(9)
    raw = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    logits = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 2])
    loss_fn = AduCLoss(3, class_counts=counts, temperature=0.5, base_temperature=0.07)
    assert torch.autograd.gradcheck(
        lambda x, lg: loss_fn(F.normalize(x, dim=1), lg, labels, alpha), (raw, logits)
    )


@pytest.mark.parametrize("low_dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_autocast_inputs(low_dtype):
    """Inputs produced under CPU autocast; the loss is float32, equals the float32 loss of the rounded
    inputs, and back-propagates finite gradients into the float32 parameters."""
    g = torch.Generator().manual_seed(10)
    x = torch.randn(2 * NUM_IMAGES, 6, generator=g)
    projection = torch.nn.Linear(6, DIM)
    classifier = torch.nn.Linear(6, NUM_CLASSES)
    with torch.no_grad():
        for p in (*projection.parameters(), *classifier.parameters()):
            p.copy_(torch.randn(p.shape, generator=g))
    labels = torch.tensor(IMBALANCED_LABELS)
    loss_fn = AduCLoss(NUM_CLASSES, class_counts=CLASS_COUNTS)  # official T = 0.1, T_b = 0.07

    with torch.autocast("cpu", dtype=low_dtype):
        features = F.normalize(projection(x), dim=1)
        logits = classifier(x)
        assert features.dtype == low_dtype and logits.dtype == low_dtype
        loss = loss_fn(features, logits, labels, 0.01)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)

    reference = loss_fn(features.detach().float(), logits.detach().float(), labels, 0.01)
    torch.testing.assert_close(loss.detach(), reference, rtol=1e-5, atol=1e-5)

    loss.backward()
    for name, p in [*projection.named_parameters(), *classifier.named_parameters()]:
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("low_dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_leaf_inputs(low_dtype):
    features, logits = make_inputs(seed=11, dtype=torch.float32)
    features = features.to(low_dtype).requires_grad_()
    logits = logits.to(low_dtype).requires_grad_()
    labels = torch.tensor(IMBALANCED_LABELS)
    loss_fn = AduCLoss(NUM_CLASSES, class_counts=CLASS_COUNTS)
    loss = loss_fn(features, logits, labels, 1.0)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    torch.testing.assert_close(
        loss.detach(),
        loss_fn(features.detach().float(), logits.detach().float(), labels, 1.0),
        rtol=1e-5,
        atol=1e-5,
    )
    loss.backward()
    assert features.grad.dtype == low_dtype and torch.isfinite(features.grad).all()
    assert logits.grad.dtype == low_dtype and torch.isfinite(logits.grad).all()


def test_float32_inputs_stay_float32_and_match_oracle():
    features, logits = make_inputs(seed=12, dtype=torch.float32)
    labels = torch.tensor(IMBALANCED_LABELS)
    loss = AduCLoss(NUM_CLASSES, class_counts=CLASS_COUNTS)(features, logits, labels, 0.3)
    assert loss.dtype == torch.float32
    expected = aduc_oracle(features, logits, labels, 0.3, 1.0, 0.1, 0.07, CLASS_COUNTS)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# Degenerate and analytic cases
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.0, 0.01, 0.0])
def test_all_labels_the_same(alpha):
    features, logits = make_inputs(seed=13, num_images=4, num_classes=3)
    features.requires_grad_()
    logits.requires_grad_()
    labels = torch.full((4,), 2)
    loss_fn = AduCLoss(3, class_counts=[10, 5, 1])
    loss = loss_fn(features, logits, labels, alpha)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, aduc_oracle(features, logits, labels, alpha, 1.0, 0.1, 0.07, [10, 5, 1]))
    loss.backward()
    assert torch.isfinite(features.grad).all() and torch.isfinite(logits.grad).all()


def test_alpha_zero_is_softmax_cross_entropy_over_the_unified_row():
    """alpha = 0, beta = 1, T_b = T: L_i = -log softmax(row_i)[y_i], the row being the C adjusted class
    columns followed by z_i.z_j / T for the samples j != i."""
    temperature = 0.1
    features, logits = make_inputs(seed=14)
    labels = torch.tensor(IMBALANCED_LABELS)
    log_prior = torch.tensor(
        [math.log(n / sum(CLASS_COUNTS) + 1e-9) for n in CLASS_COUNTS], dtype=torch.float64
    )
    row_labels = view_major_labels(labels)
    expected = []
    for i in range(2 * NUM_IMAGES):
        others = torch.stack(
            [features[i] @ features[j] / temperature for j in range(2 * NUM_IMAGES) if j != i]
        )
        row = torch.cat([logits[i] + log_prior, others])
        expected.append(-torch.log_softmax(row, dim=0)[row_labels[i]])
    expected = torch.stack(expected)

    got = aduc_per_anchor(
        features, logits + log_prior, row_labels, alpha=0.0, beta=1.0, temperature=temperature
    )
    torch.testing.assert_close(got, expected)
    loss_fn = AduCLoss(
        NUM_CLASSES, class_counts=CLASS_COUNTS, temperature=temperature, base_temperature=temperature
    )
    loss = loss_fn(features, logits, labels, 0.0)
    torch.testing.assert_close(loss, expected.mean())
    torch.testing.assert_close(
        loss, aduc_oracle(features, logits, labels, 0.0, 1.0, temperature, temperature, CLASS_COUNTS)
    )


def test_every_anchor_counts():
    """Changing one sample's features (or logits), for each of the 2N rows, changes the loss; every row
    receives a gradient."""
    features, logits = make_inputs(seed=15)
    labels = torch.tensor(IMBALANCED_LABELS)
    loss_fn = AduCLoss(NUM_CLASSES, class_counts=CLASS_COUNTS)
    base = loss_fn(features, logits, labels, 0.3)
    g = torch.Generator().manual_seed(16)
    for r in range(2 * NUM_IMAGES):
        moved = features.clone()
        moved[r] = F.normalize(torch.randn(DIM, generator=g, dtype=torch.float64), dim=0)
        assert not torch.isclose(loss_fn(moved, logits, labels, 0.3), base, rtol=1e-6, atol=0.0), r
        shifted = logits.clone()
        shifted[r, labels[r % NUM_IMAGES]] += 1.0
        assert not torch.isclose(loss_fn(features, shifted, labels, 0.3), base, rtol=1e-6, atol=0.0), r

    raw = features.clone().requires_grad_()
    lg = logits.clone().requires_grad_()
    loss_fn(F.normalize(raw, dim=1), lg, labels, 0.3).backward()
    assert (raw.grad.norm(dim=1) > 0).all()
    assert (lg.grad.norm(dim=1) > 0).all()


# ----------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": 0.0},
        {"temperature": -0.1},
        {"base_temperature": 0.0},
        {"beta": 0.0},
        {"class_counts": [1, 2, 3]},
        {"class_counts": [1, 2, 3, 4, 5]},
    ],
    ids=["T=0", "T<0", "Tb=0", "beta=0", "counts_too_short", "counts_too_long"],
)
def test_bad_constructor_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        AduCLoss(NUM_CLASSES, **kwargs)


def test_negative_alpha_raises():
    features, logits = make_inputs(seed=17)
    with pytest.raises(ValueError):
        AduCLoss(NUM_CLASSES)(features, logits, torch.tensor(IMBALANCED_LABELS), -0.1)


@pytest.mark.parametrize(
    "case",
    [
        "features_3d",
        "logits_1d",
        "labels_2d",
        "logits_wrong_classes",
        "logits_wrong_rows",
        "rows_not_multiple",
        "no_labels",
    ],
)
def test_bad_shapes_raise(case):
    features, logits = make_inputs(seed=18)
    labels = torch.tensor(IMBALANCED_LABELS)
    if case == "features_3d":
        features = features.reshape(2, NUM_IMAGES, DIM)
    elif case == "logits_1d":
        logits = logits.reshape(-1)
    elif case == "labels_2d":
        labels = labels[:, None]
    elif case == "logits_wrong_classes":
        logits = logits[:, :-1]
    elif case == "logits_wrong_rows":
        logits = logits[:-1]
    elif case == "rows_not_multiple":
        features, logits = features[:-1], logits[:-1]
    elif case == "no_labels":
        labels = labels[:0]
    with pytest.raises(ValueError):
        AduCLoss(NUM_CLASSES)(features, logits, labels, 1.0)


# ----------------------------------------------------------------------------------------------------------
# The paper's alternatives (docs/method.md, "Paper and code: every difference")
# ----------------------------------------------------------------------------------------------------------


def test_paper_temperature_on_the_class_columns_divides_the_adjusted_logits():
    """classifier_temperature tau: the class columns are (l + log prior) / tau; the loop oracle takes the
    logits, so it gets (l + log prior) / tau - log prior for the same columns."""
    features, logits = make_inputs(seed=31)
    labels = torch.tensor(IMBALANCED_LABELS)
    log_prior = torch.log(torch.tensor(CLASS_COUNTS, dtype=torch.float64) / sum(CLASS_COUNTS) + 1e-9)
    loss_fn = AduCLoss(NUM_CLASSES, class_counts=CLASS_COUNTS, classifier_temperature=0.1)
    shifted = (logits + log_prior) / 0.1 - log_prior
    expected = aduc_oracle(features, shifted, labels, 0.4, 1.0, 0.1, 0.07, CLASS_COUNTS)
    torch.testing.assert_close(loss_fn(features, logits, labels, 0.4), expected)


def test_paper_sum_without_the_positive_normaliser():
    """positive_normalisation=False: L_i is the plain weighted sum, i.e. the oracle's L_i times (beta + alpha |P(i)|)."""
    features, logits = make_inputs(seed=32)
    labels = torch.tensor(IMBALANCED_LABELS)
    alpha, beta = 0.3, 1.0
    per_anchor = oracle_per_anchor(features, logits, labels, alpha, beta, 0.1, 0.07, CLASS_COUNTS)
    rows = view_major_labels(labels).tolist()
    positives = [sum(1 for j, y in enumerate(rows) if j != i and y == rows[i]) for i in range(len(rows))]
    weighted = [loss * (beta + alpha * p) for loss, p in zip(per_anchor, positives, strict=True)]
    expected = sum(weighted) / len(rows)
    loss_fn = AduCLoss(NUM_CLASSES, class_counts=CLASS_COUNTS, positive_normalisation=False)
    torch.testing.assert_close(
        loss_fn(features, logits, labels, alpha), torch.tensor(expected, dtype=torch.float64)
    )


@pytest.mark.parametrize("alpha", [0.9, 0.25])
def test_beta_from_alpha_is_the_linear_modes_one_minus_alpha(alpha):
    features, logits = make_inputs(seed=33)
    labels = torch.tensor(IMBALANCED_LABELS)
    loss_fn = AduCLoss(NUM_CLASSES, class_counts=CLASS_COUNTS, beta_from_alpha=True)
    expected = aduc_oracle(features, logits, labels, alpha, 1.0 - alpha, 0.1, 0.07, CLASS_COUNTS)
    torch.testing.assert_close(loss_fn(features, logits, labels, alpha), expected)


# ----------------------------------------------------------------------------------------------------------
# alpha over training: the loss's schedule, `set_epoch`, and the aduni methods
# ----------------------------------------------------------------------------------------------------------


def test_set_epoch_takes_alpha_from_the_schedule_and_from_outputs_uses_it():
    features, logits = make_inputs(seed=34)
    labels = torch.tensor(IMBALANCED_LABELS)
    outputs = SimpleNamespace(features=features, logits=logits)
    loss_fn = AduCLoss(NUM_CLASSES, class_counts=CLASS_COUNTS)  # default: the official schedule
    assert loss_fn.alpha_schedule == AlphaSchedule() and loss_fn.alpha == alpha_schedule(0)
    for epoch in (0, 150, 399):
        loss_fn.set_epoch(epoch, 400)
        alpha = alpha_schedule(epoch)
        assert loss_fn.alpha == alpha and loss_fn.epoch_logs() == {"alpha": alpha}
        out = loss_fn.from_outputs(outputs, labels)
        torch.testing.assert_close(
            out.loss, aduc_oracle(features, logits, labels, alpha, 1.0, 0.1, 0.07, CLASS_COUNTS)
        )
        assert torch.equal(out.loss, loss_fn(features, logits, labels, alpha))
        assert torch.equal(out.row_labels, view_major_labels(labels))
        assert torch.equal(out.contrast_labels, view_major_labels(labels)) and out.logits is None
    step = AduCLoss(NUM_CLASSES, alpha_schedule=AlphaSchedule("step", 0.5, 0.1, decay=3))
    assert step.alpha == 0.5
    step.set_epoch(3, 5)
    assert step.alpha == 0.1 and step.epoch_logs() == {"alpha": 0.1}


def test_a_linear_schedule_is_accepted_and_moves_with_set_epoch():
    """The linear schedule needs the number of epochs, which only `set_epoch` brings: before it, alpha is every
    schedule's value at epoch 0, alpha_max."""
    linear = AduCLoss(NUM_CLASSES, alpha_schedule=AlphaSchedule("linear", 0.5, 0.1))
    assert linear.alpha == 0.5
    linear.set_epoch(4, 5)
    assert linear.alpha == pytest.approx(0.1)


def aduni_method_loss(method, **options) -> AduCLoss:
    args = MethodArguments(method=method, **options)
    return METHODS[method].stages[0].loss(LossInputs(NUM_CLASSES, CLASS_COUNTS, None, args))  # needs no model


@pytest.mark.parametrize("method", ["aduni", "aduni_fixed"])
def test_the_aduni_methods_train_aduc_on_two_views_with_the_recipes_fields(method):
    (stage,) = METHODS[method].stages
    assert stage.num_views == 2 and stage.chunkable and METHODS[method].classifier_type == "linear"
    # paco_alpha and max_margin are PaCo's and LDAM's fields, not AdUni's
    loss_fn = aduni_method_loss(
        method, temperature=0.2, base_temperature=0.1, beta=0.5, classifier_temperature=0.2,
        positive_normalisation=False, paco_alpha=0.3, max_margin=0.1,
    )  # fmt: skip
    assert type(loss_fn) is AduCLoss
    assert (loss_fn.temperature, loss_fn.base_temperature, loss_fn.beta) == (0.2, 0.1, 0.5)
    assert loss_fn.classifier_temperature == 0.2 and not loss_fn.positive_normalisation
    torch.testing.assert_close(loss_fn.log_prior, AduCLoss(NUM_CLASSES, class_counts=CLASS_COUNTS).log_prior)
    features, logits = make_inputs(seed=35)
    labels = torch.tensor(IMBALANCED_LABELS)
    torch.testing.assert_close(
        loss_fn(features, logits, labels, 0.4),
        AduCLoss(
            NUM_CLASSES, CLASS_COUNTS, temperature=0.2, base_temperature=0.1, beta=0.5, classifier_temperature=0.2,
            positive_normalisation=False,
        )(features, logits, labels, 0.4),
    )  # fmt: skip


def test_aduni_schedules_alpha_and_aduni_fixed_holds_alpha_max():
    options = dict(alpha_schedule="official", alpha_max=0.8, alpha_min=0.05, alpha_decay=100)
    scheduled, fixed = aduni_method_loss("aduni", **options), aduni_method_loss("aduni_fixed", **options)
    assert scheduled.alpha_schedule == AlphaSchedule("official", 0.8, 0.05, 100)
    for epoch in (0, 50, 99):
        scheduled.set_epoch(epoch, 100)
        fixed.set_epoch(epoch, 100)
        expected = alpha_schedule(epoch, "official", alpha_max=0.8, alpha_min=0.05, decay=100)
        assert scheduled.alpha == expected and fixed.alpha == 0.8
    assert scheduled.alpha < 0.1  # it did fall
    assert aduni_method_loss("aduni_fixed").alpha == 1.0  # the released code's --alpha default
