"""Every loss reports its per-row values (`row_losses`) for the per-class logs (the paper's Fig. 2): their mean
(the DRW-weighted mean for LDAM-DRW) is the loss itself."""

import pytest
import torch

from aduni_hf.losses import AduCLoss, BalancedSoftmaxLoss, CrossEntropyLoss, LDAMDRWLoss, SupConLoss

COUNTS = [30, 10, 5]


def _batch():
    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 1, 2, 0, 1])
    features = torch.nn.functional.normalize(torch.randn(12, 8), dim=1)
    logits = torch.randn(12, 3)
    return features, logits, labels


@pytest.mark.parametrize(
    "make, call",
    [
        (lambda: CrossEntropyLoss(3), lambda loss, f, lg, y: loss(lg, y)),
        (lambda: BalancedSoftmaxLoss(3, COUNTS), lambda loss, f, lg, y: loss(lg, y)),
        (lambda: AduCLoss(3, class_counts=COUNTS), lambda loss, f, lg, y: loss(f, lg, y, alpha=0.5)),
        (lambda: SupConLoss(3), lambda loss, f, lg, y: loss(f, y)),
        (lambda: LDAMDRWLoss(3, COUNTS), lambda loss, f, lg, y: loss(torch.tanh(lg), y)),
    ],
    ids=["ce", "balanced_softmax", "aduc", "supcon", "ldam"],
)
def test_the_mean_of_the_row_losses_is_the_loss(make, call):
    features, logits, labels = _batch()
    loss = make()
    value = call(loss, features, logits, labels)
    rows, row_labels = loss.row_losses
    assert rows.shape == (12,) and torch.equal(row_labels, labels.repeat(2))
    assert rows.mean() == pytest.approx(value.item(), rel=1e-6)


def test_ldam_drw_loss_is_the_weighted_mean_of_its_rows():
    _, logits, labels = _batch()
    loss = LDAMDRWLoss(3, COUNTS, drw_start=0.0)
    loss.set_epoch(0, 10)
    value = loss(torch.tanh(logits), labels)
    rows, row_labels = loss.row_losses
    weights = loss.drw_weights[row_labels]
    assert (weights * rows).sum() / weights.sum() == pytest.approx(value.item(), rel=1e-6)
    assert rows.mean() != pytest.approx(value.item(), rel=1e-3)  # the weights matter here
