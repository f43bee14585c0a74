"""SupCon `L_out` (Khosla et al., NeurIPS 2020; HobbitLong/SupContrast `SupConLoss`, contrast_mode 'all'), the loss of
CICL's first stage: against a loop oracle, the NT-Xent limit, AduC without classifier columns, and its invariants.

The oracle is the formula of the module docstring of `aduni_hf.losses.supcon` written with Python loops in float64
arithmetic; it shares no code with the implementation.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from aduni_hf.losses import CrossEntropyLoss, SupConLoss, aduc_per_anchor, supcon_per_anchor
from aduni_hf.methods import METHODS, LossInputs, MethodArguments

DIM = 8
LABELS = [0, 0, 0, 1, 3]  # imbalanced: two singletons (1, 3), an absent class (2)


def features_for(num_rows: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(num_rows, DIM, generator=generator, dtype=dtype), dim=1)


def oracle(features: torch.Tensor, labels: list[int], temperature: float, base_temperature: float) -> float:
    """Mean over the V*N anchors of -(T/T_b) * sum_{p in P(i)} log p_ip / max(|P(i)|, 1)."""
    z = features.detach().double().tolist()
    rows, num_images = len(z), len(labels)
    row_labels = [labels[r % num_images] for r in range(rows)]  # view-major
    total = 0.0
    for i in range(rows):
        logits = [sum(a * b for a, b in zip(z[i], z[j], strict=True)) / temperature for j in range(rows)]
        log_denominator = math.log(sum(math.exp(logits[j]) for j in range(rows) if j != i))
        positives = [j for j in range(rows) if j != i and row_labels[j] == row_labels[i]]
        mean_log_prob = sum(logits[p] - log_denominator for p in positives) / max(len(positives), 1)
        total += -(temperature / base_temperature) * mean_log_prob
    return total / rows


@pytest.mark.parametrize("temperature, base_temperature", [(0.1, 0.07), (0.5, 0.5), (0.07, 0.07)])
@pytest.mark.parametrize("views", [2, 3])
def test_matches_the_loop_oracle(temperature, base_temperature, views):
    features = features_for(views * len(LABELS), seed=views)
    labels = torch.tensor(LABELS)
    loss = SupConLoss(4, temperature=temperature, base_temperature=base_temperature)(features, labels)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(oracle(features, LABELS, temperature, base_temperature), rel=1e-12)


def test_nt_xent_limit_with_distinct_labels():
    """Two views, every label distinct: the only positive of view i is its other view, so SupCon is SimCLR's
    NT-Xent (cross-entropy over the 2N-1 others, self out) times T/T_b."""
    num_images, temperature, base_temperature = 6, 0.1, 0.07
    features = features_for(2 * num_images, seed=3)
    similarity = features @ features.T / temperature
    similarity = similarity.masked_fill(torch.eye(2 * num_images, dtype=torch.bool), float("-inf"))
    partner = torch.cat([torch.arange(num_images) + num_images, torch.arange(num_images)])
    nt_xent = F.cross_entropy(similarity, partner)
    loss = SupConLoss(num_images, temperature=temperature, base_temperature=base_temperature)(
        features, torch.arange(num_images)
    )
    assert loss.item() == pytest.approx(nt_xent.item() * temperature / base_temperature, rel=1e-12)


def test_is_aduc_without_the_classifier_columns():
    """AduC with beta = 0 and class columns that vanish from the denominator (logits -1e4) is SupCon per anchor."""
    features = features_for(2 * len(LABELS), seed=5)
    row_labels = torch.tensor(LABELS).repeat(2)
    no_classifier = torch.full((len(row_labels), 4), -1e4, dtype=torch.float64)
    aduc = aduc_per_anchor(features, no_classifier, row_labels, alpha=1.0, beta=0.0, temperature=0.1)
    supcon = supcon_per_anchor(features, row_labels, temperature=0.1)
    torch.testing.assert_close(supcon, aduc, rtol=1e-10, atol=0)


def test_an_anchor_without_positive_contributes_zero_not_nan():
    """One view and a class alone in the batch: the official fix (SupContrast #141) clamps |P| to 1."""
    features = features_for(3, seed=7)
    per_anchor = supcon_per_anchor(features, torch.tensor([0, 0, 1]), temperature=0.1)
    assert torch.isfinite(per_anchor).all() and per_anchor[2] == 0
    assert per_anchor[0] > 0 and per_anchor[1] > 0
    single = supcon_per_anchor(features[:1], torch.tensor([0]), temperature=0.1)  # nothing to contrast with
    assert single.tolist() == [0.0]


def test_invariances():
    labels = torch.tensor(LABELS)
    features = features_for(2 * len(LABELS), seed=11)
    loss_fn = SupConLoss(4)
    reference = loss_fn(features, labels)
    permutation = torch.tensor([3, 0, 4, 1, 2])
    n = len(LABELS)
    permuted = torch.cat([features[:n][permutation], features[n:][permutation]])
    torch.testing.assert_close(loss_fn(permuted, labels[permutation]), reference, rtol=1e-12, atol=0)
    swapped = torch.cat([features[n:], features[:n]])
    torch.testing.assert_close(loss_fn(swapped, labels), reference, rtol=1e-12, atol=0)
    doubled_scale = SupConLoss(4, temperature=0.1, base_temperature=0.035)(features, labels)
    torch.testing.assert_close(doubled_scale, 2 * reference, rtol=1e-12, atol=0)  # linear in T/T_b


def test_gradcheck_and_float32_under_autocast():
    labels = torch.tensor([0, 1, 0])
    features = features_for(6, seed=13).requires_grad_(True)
    loss_fn = SupConLoss(2)
    assert torch.autograd.gradcheck(lambda f: loss_fn(F.normalize(f, dim=1), labels), (features,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn(features.detach().float().bfloat16(), labels)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_from_outputs_reads_the_features_only_and_records_the_contrast_set():
    labels = torch.tensor(LABELS)
    features = features_for(2 * len(LABELS), seed=17)
    loss_fn = SupConLoss(4)
    outputs = SimpleNamespace(features=features, logits=None)
    out = loss_fn.from_outputs(outputs, labels)
    assert out.loss == loss_fn(features, labels)
    assert out.contrast_labels.tolist() == LABELS * 2
    assert out.row_labels.tolist() == LABELS * 2 and out.logits is None
    assert loss_fn.epoch_logs() == {}  # no alpha: nothing changes with the epoch


def test_cicl_trains_its_first_stage_with_supcon_on_two_views():
    """SupCon is no method of its own: CICL's first stage (two views, the classifier frozen), with the recipe's
    temperature and base_temperature; its second stage is cross-entropy on the frozen encoder."""
    first, second = METHODS["cicl"].stages
    assert first.num_views == 2 and first.freeze_classifier and not first.freeze_encoder
    args = MethodArguments(method="cicl", temperature=0.2, base_temperature=0.1, beta=0.5)
    loss_fn = first.loss(LossInputs(4, [5, 3, 2, 1], None, args))  # SupCon needs no model
    assert type(loss_fn) is SupConLoss
    assert (loss_fn.temperature, loss_fn.base_temperature) == (0.2, 0.1)
    features, labels = features_for(2 * len(LABELS), seed=19), torch.tensor(LABELS)
    assert loss_fn(features, labels).item() == pytest.approx(oracle(features, LABELS, 0.2, 0.1), rel=1e-12)
    assert type(second.loss(LossInputs(4, [5, 3, 2, 1], None, args))) is CrossEntropyLoss
    assert second.num_views == 1 and second.sampler == "upsample" and second.bn_mode == "eval"
    assert second.freeze_encoder and second.reinit_classifier
    assert METHODS["cicl"].classifier_type == "linear"


def test_bad_arguments_name_what_is_wrong():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        SupConLoss(3, temperature=0)
    with pytest.raises(ValueError, match="base_temperature must be > 0"):
        SupConLoss(3, base_temperature=-1)
    with pytest.raises(ValueError, match="V\\*N feature rows for N=2"):
        SupConLoss(3)(features_for(5), torch.tensor([0, 1]))
