"""Tests of the LDAM-DRW loss (Cao et al., NeurIPS 2019; kaidic/LDAM-DRW).

The margins, the deferred re-weighting weights and the loss are computed here from the formulas, with loops in
plain float64 Python, independently of `aduni_hf.losses.ldam`: m_c = 0.5 (n_min / n_c)^(1/4); per sample, the
margin subtracted from the true-class cosine, every logit times s = 30, log-softmax; before the DRW switch the
plain mean, from it on sum_i w_{y_i} l_i / sum_i w_{y_i} with w_c = (1 - beta) / (1 - beta^n_c) normalised to
sum to C.
"""

from __future__ import annotations

import math

import pytest
import torch

from aduni_hf.losses import LDAMDRWLoss, drw_class_weights, ldam_margins
from aduni_hf.methods import METHODS, LossInputs, MethodArguments

ISIC_COUNTS = [327, 514, 1099, 115, 1113, 6705, 142]  # AKIEC, BCC, BKL, DF, MEL, NV, VASC
ISIC_MARGINS = [0.385, 0.344, 0.284, 0.500, 0.283, 0.181, 0.474]
ISIC_WEIGHTS = [0.944, 0.606, 0.292, 2.655, 0.288, 0.062, 2.153]
APTOS_COUNTS = [1805, 370, 999, 193, 295]
APTOS_MARGINS = [0.286, 0.425, 0.331, 0.500, 0.450]
APTOS_WEIGHTS = [0.231, 1.052, 0.402, 2.000, 1.315]
NUM_CLASSES = len(ISIC_COUNTS)


def formula_margins(counts, max_margin=0.5) -> list[float]:
    rarest = min(n for n in counts if n > 0)
    return [max_margin * (rarest / n) ** 0.25 if n > 0 else max_margin for n in counts]


def formula_weights(counts, beta=0.9999) -> list[float]:
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    return [w * len(raw) / sum(raw) for w in raw]


def oracle(logits, labels, counts, weighted: bool, scale=30.0, max_margin=0.5, beta=0.9999) -> float:
    """LDAM(-DRW) per sample with loops; row r of the view-major logits has label r mod N."""
    margins = formula_margins(counts, max_margin)
    weights = formula_weights(counts, beta) if weighted else [1.0] * len(counts)
    numerator = denominator = 0.0
    for r, row in enumerate(logits.double().tolist()):
        y = int(labels[r % len(labels)])
        z = [scale * (value - (margins[c] if c == y else 0.0)) for c, value in enumerate(row)]
        top = max(z)
        log_sum = top + math.log(sum(math.exp(v - top) for v in z))
        numerator += weights[y] * (log_sum - z[y])
        denominator += weights[y]
    return numerator / denominator


def cosines(num_rows: int = 8, seed: int = 0) -> torch.Tensor:
    """Logits as a cosine classifier gives them: in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(num_rows, NUM_CLASSES, generator=generator) * 2 - 1


# Targets of different weights, so that the weighted mean differs from the plain one.
LABELS = torch.tensor([0, 3, 5, 5, 6, 1, 5, 2])


# ----------------------------------------------------------------------------------------------------------
# margins and DRW weights
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "margins", "weights"),
    [(ISIC_COUNTS, ISIC_MARGINS, ISIC_WEIGHTS), (APTOS_COUNTS, APTOS_MARGINS, APTOS_WEIGHTS)],
    ids=["isic2018", "aptos"],
)
def test__margins_and_drw_weights_of_the_datasets(counts, margins, weights):
    loss = LDAMDRWLoss(len(counts), counts)
    assert [round(m, 3) for m in loss.margins.tolist()] == margins
    assert [round(w, 3) for w in loss.drw_weights.tolist()] == weights
    assert [round(m, 3) for m in ldam_margins(counts).tolist()] == margins
    assert [round(w, 3) for w in drw_class_weights(counts).tolist()] == weights
    assert loss.drw_weights.sum().item() == pytest.approx(len(counts), rel=1e-6)
    torch.testing.assert_close(
        loss.margins.double(), torch.tensor(formula_margins(counts), dtype=torch.float64)
    )
    torch.testing.assert_close(
        loss.drw_weights.double(), torch.tensor(formula_weights(counts), dtype=torch.float64)
    )


def test__max_margin_and_beta_are_options():
    loss = LDAMDRWLoss(NUM_CLASSES, ISIC_COUNTS, max_margin=0.3, drw_beta=0.999)
    expected = formula_margins(ISIC_COUNTS, 0.3)
    assert loss.margins.tolist() == pytest.approx(expected, rel=1e-6)
    assert max(loss.margins.tolist()) == pytest.approx(0.3)
    assert loss.drw_weights.tolist() == pytest.approx(formula_weights(ISIC_COUNTS, 0.999), rel=1e-6)


def test__a_class_without_training_images_gets_the_largest_margin_and_the_rarest_weight():
    counts = [40, 0, 7, 2, 12, 5, 3]
    loss = LDAMDRWLoss(NUM_CLASSES, counts)
    assert loss.margins[1].item() == pytest.approx(0.5) and loss.margins[3].item() == pytest.approx(0.5)
    assert torch.isfinite(loss.drw_weights).all()
    assert loss.drw_weights[1].item() == pytest.approx(loss.drw_weights[3].item())
    assert loss.drw_weights.sum().item() == pytest.approx(NUM_CLASSES, rel=1e-6)
    labels = torch.where(LABELS == 1, 0, LABELS)
    loss.set_epoch(399, 400)
    assert torch.isfinite(loss(cosines(), labels))


# ----------------------------------------------------------------------------------------------------------
# the loss against the loop oracle, before and after the DRW switch
# ----------------------------------------------------------------------------------------------------------


def test__before_the_switch_the_loss_is_the_plain_mean():
    logits = cosines(seed=1)
    loss = LDAMDRWLoss(NUM_CLASSES, ISIC_COUNTS)
    loss.set_epoch(319, 400)
    assert not loss.drw_active
    got = loss(logits, LABELS)
    assert got.dtype == torch.float32 and got.shape == ()
    assert got.item() == pytest.approx(oracle(logits, LABELS, ISIC_COUNTS, weighted=False), rel=1e-5)


def test__from_the_switch_on_the_loss_is_the_weighted_mean():
    logits = cosines(seed=1)
    loss = LDAMDRWLoss(NUM_CLASSES, ISIC_COUNTS)
    loss.set_epoch(320, 400)
    assert loss.drw_active
    got = loss(logits, LABELS)
    expected = oracle(logits, LABELS, ISIC_COUNTS, weighted=True)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # PyTorch's weighted mean divides by the sum of the targets' weights, not by the batch size
    weights = formula_weights(ISIC_COUNTS)
    target_weight = sum(weights[int(y)] for y in LABELS)
    by_batch_size = expected * target_weight / len(LABELS)
    assert abs(got.item() - by_batch_size) > 0.1 * abs(expected)
    assert abs(got.item() - oracle(logits, LABELS, ISIC_COUNTS, weighted=False)) > 0.01


def test__the_switch_follows_drw_start():
    loss = LDAMDRWLoss(NUM_CLASSES, ISIC_COUNTS)
    assert loss.epoch == 0 and not loss.drw_active  # before any set_epoch: epoch 0
    for epoch, num_epochs, active in [(159, 200, False), (160, 200, True), (0, 400, False), (399, 400, True)]:
        loss.set_epoch(epoch, num_epochs)
        assert loss.drw_active is active, (epoch, num_epochs)
    assert loss.drw_start_epoch(400) == 320 and loss.drw_start_epoch(200) == 160
    assert LDAMDRWLoss(NUM_CLASSES, ISIC_COUNTS, drw_start=0.7).drw_start_epoch(10) == 7
    never = LDAMDRWLoss(NUM_CLASSES, ISIC_COUNTS, drw_start=1.0)
    never.set_epoch(399, 400)
    assert not never.drw_active
    always = LDAMDRWLoss(NUM_CLASSES, ISIC_COUNTS, drw_start=0.0)
    assert always.drw_active
    logits = cosines(seed=2)
    assert always(logits, LABELS).item() == pytest.approx(
        oracle(logits, LABELS, ISIC_COUNTS, weighted=True), rel=1e-5
    )


def test__scale_is_an_option():
    logits = cosines(seed=3)
    loss = LDAMDRWLoss(NUM_CLASSES, ISIC_COUNTS, ldam_scale=10.0)
    assert loss(logits, LABELS).item() == pytest.approx(
        oracle(logits, LABELS, ISIC_COUNTS, weighted=False, scale=10.0), rel=1e-5
    )


def test__every_view_is_a_row_with_its_image_label():
    labels = LABELS[:4]
    logits = cosines(num_rows=8, seed=4)  # two views of four images
    loss = LDAMDRWLoss(NUM_CLASSES, ISIC_COUNTS)
    loss.set_epoch(330, 400)
    assert loss(logits, labels).item() == pytest.approx(
        oracle(logits, labels, ISIC_COUNTS, weighted=True), rel=1e-5
    )


def test__finite_at_the_ends_of_the_cosine_range():
    signs = torch.where(torch.arange(8 * NUM_CLASSES).reshape(8, NUM_CLASSES) % 3 == 0, 1.0, -1.0)
    loss = LDAMDRWLoss(NUM_CLASSES, ISIC_COUNTS)
    for extreme in (signs, -signs, torch.ones(8, NUM_CLASSES), -torch.ones(8, NUM_CLASSES)):
        for epoch in (0, 320):
            loss.set_epoch(epoch, 400)
            logits = extreme.clone().requires_grad_(True)
            value = loss(logits, LABELS)
            value.backward()
            assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
            expected = oracle(extreme, LABELS, ISIC_COUNTS, weighted=epoch >= 320)
            assert value.item() == pytest.approx(expected, rel=1e-5)


def test__bf16_autocast_gives_a_finite_float32_loss():
    loss = LDAMDRWLoss(NUM_CLASSES, ISIC_COUNTS)
    loss.set_epoch(350, 400)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        logits = cosines(seed=5).to(torch.bfloat16)
        got = loss(logits, LABELS)
    assert got.dtype == torch.float32 and torch.isfinite(got)
    assert got.item() == pytest.approx(oracle(logits.float(), LABELS, ISIC_COUNTS, weighted=True), rel=1e-5)


def test__gradient_in_float64():
    loss = LDAMDRWLoss(NUM_CLASSES, ISIC_COUNTS)
    logits = cosines(seed=6).double().requires_grad_(True)
    for epoch in (0, 320):
        loss.set_epoch(epoch, 400)
        assert torch.autograd.gradcheck(lambda z: loss(z, LABELS), (logits,))


# ----------------------------------------------------------------------------------------------------------
# the interface the trainer reads
# ----------------------------------------------------------------------------------------------------------


def ldam_drw_method_loss(**options) -> LDAMDRWLoss:
    """The loss of the `ldam_drw` method for the recipe's method fields `options`."""
    args = MethodArguments(method="ldam_drw", **options)
    return METHODS["ldam_drw"].stages[0].loss(LossInputs(NUM_CLASSES, ISIC_COUNTS, None, args))  # no model


def test__the_ldam_drw_method_passes_its_options_and_trains_the_cosine_classifier():
    method = METHODS["ldam_drw"]
    assert len(method.stages) == 1 and method.stages[0].num_views == 1
    assert method.classifier_type == "cosine"
    assert set(method.fields) == {"max_margin", "ldam_scale", "drw_beta", "drw_start"}
    loss = ldam_drw_method_loss(
        max_margin=0.3, ldam_scale=10.0, drw_beta=0.999, drw_start=0.5, temperature=0.1, beta=1.0
    )  # the AduC fields are not LDAM's
    assert type(loss) is LDAMDRWLoss
    assert (loss.max_margin, loss.scale, loss.drw_beta, loss.drw_start) == (0.3, 10.0, 0.999, 0.5)
    assert loss.epoch_logs() == {}  # no alpha
    default = ldam_drw_method_loss()
    assert (default.max_margin, default.scale, default.drw_beta, default.drw_start) == (
        0.5,
        30.0,
        0.9999,
        0.8,
    )


def test__from_outputs_reads_the_logits():
    class Outputs:
        pass

    outputs = Outputs()
    outputs.logits = cosines(seed=7)
    loss = LDAMDRWLoss(NUM_CLASSES, ISIC_COUNTS)
    out = loss.from_outputs(outputs, LABELS)
    assert torch.equal(out.loss, loss(outputs.logits, LABELS))
    assert torch.equal(out.row_labels, LABELS) and out.contrast_labels is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"class_counts": [1, 2, 3]}, "class_counts"),
        ({"class_counts": [0] * NUM_CLASSES}, "class_counts"),
        ({"class_counts": [5, -1, 2, 1, 1, 1, 1]}, "class_counts"),
        ({"max_margin": -0.1}, "max_margin"),
        ({"ldam_scale": 0.0}, "ldam_scale"),
        ({"drw_beta": 1.0}, "drw_beta"),
        ({"drw_start": 1.5}, "drw_start"),
    ],
)
def test__bad_options_raise_naming_them(kwargs, field):
    kwargs = {"class_counts": ISIC_COUNTS, **kwargs}
    with pytest.raises(ValueError, match=field):
        LDAMDRWLoss(NUM_CLASSES, **kwargs)


def test__bad_epochs_raise():
    loss = LDAMDRWLoss(NUM_CLASSES, ISIC_COUNTS)
    with pytest.raises(ValueError, match="num_epochs"):
        loss.set_epoch(0, 0)
    with pytest.raises(ValueError, match="epoch"):
        loss.set_epoch(-1, 10)
