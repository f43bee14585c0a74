"""Every loss reports its per-row values (`LossOutput.row_losses`, with `row_labels`) for the per-class logs (the
paper's Fig. 2): their mean (the DRW-weighted mean for LDAM-DRW) is the loss itself."""

from types import SimpleNamespace

import pytest
import torch

from aduni_hf.losses import (
    AduCLoss,
    BalancedSoftmaxLoss,
    CrossEntropyLoss,
    LDAMDRWLoss,
    LossOutput,
    SupConLoss,
)
from aduni_hf.schedules import AlphaSchedule

COUNTS = [30, 10, 5]


def _batch(cosine: bool = False):
    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 1, 2, 0, 1])
    features = torch.nn.functional.normalize(torch.randn(12, 8), dim=1)
    logits = torch.randn(12, 3)
    return features, torch.tanh(logits) if cosine else logits, labels  # LDAM: a cosine classifier's logits


# name -> (make the loss, its compute(...) on (features, logits, labels), whether it takes cosine logits)
CASES = {
    "ce": (lambda: CrossEntropyLoss(3), lambda loss, f, lg, y: loss.compute(lg, y), False),
    "balanced_softmax": (
        lambda: BalancedSoftmaxLoss(3, COUNTS),
        lambda loss, f, lg, y: loss.compute(lg, y),
        False,
    ),
    "aduc": (
        # from_outputs takes alpha from the schedule: held at 0.5, the alpha compute and forward are given
        lambda: AduCLoss(3, class_counts=COUNTS, alpha_schedule=AlphaSchedule("constant", alpha_max=0.5)),
        lambda loss, f, lg, y: loss.compute(f, lg, y, 0.5),
        False,
    ),
    "supcon": (lambda: SupConLoss(3), lambda loss, f, lg, y: loss.compute(f, y), False),
    "ldam": (lambda: LDAMDRWLoss(3, COUNTS), lambda loss, f, lg, y: loss.compute(lg, y), True),
}
FORWARD = {
    "ce": lambda loss, f, lg, y: loss(lg, y),
    "balanced_softmax": lambda loss, f, lg, y: loss(lg, y),
    "aduc": lambda loss, f, lg, y: loss(f, lg, y, alpha=0.5),
    "supcon": lambda loss, f, lg, y: loss(f, y),
    "ldam": lambda loss, f, lg, y: loss(lg, y),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_mean_of_the_row_losses_is_the_loss(name):
    make, compute, cosine = CASES[name]
    features, logits, labels = _batch(cosine)
    loss = make()
    out = compute(loss, features, logits, labels)
    assert isinstance(out, LossOutput)
    assert out.row_losses.shape == (12,) and torch.equal(out.row_labels, labels.repeat(2))
    assert out.row_losses.mean() == pytest.approx(out.loss.item(), rel=1e-6)
    assert out.loss.item() == FORWARD[name](loss, features, logits, labels).item()  # compute's scalar


@pytest.mark.parametrize("name", list(CASES))
def test_from_outputs_gives_the_rows_of_compute(name):
    make, compute, cosine = CASES[name]
    features, logits, labels = _batch(cosine)
    loss = make()
    loss.set_epoch(3, 10)  # the trainer's call at every epoch start
    out = loss.from_outputs(SimpleNamespace(features=features, logits=logits), labels)
    expected = compute(loss, features, logits, labels)
    assert out.loss.item() == expected.loss.item()
    assert torch.equal(out.row_losses, expected.row_losses)
    assert torch.equal(out.row_labels, expected.row_labels)


def test_ldam_drw_loss_is_the_weighted_mean_of_its_rows():
    _, logits, labels = _batch(cosine=True)
    loss = LDAMDRWLoss(3, COUNTS, drw_start=0.0)
    loss.set_epoch(0, 10)
    out = loss.compute(logits, labels)
    assert out.loss.item() == loss(logits, labels).item()
    rows, row_labels = out.row_losses, out.row_labels
    weights = loss.drw_weights[row_labels]
    assert (weights * rows).sum() / weights.sum() == pytest.approx(out.loss.item(), rel=1e-6)
    assert rows.mean() != pytest.approx(out.loss.item(), rel=1e-3)  # the weights matter here
