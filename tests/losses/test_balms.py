"""BALMS's Meta Sampler against independent computations (docs/method.md, "BALMS and its Meta Sampler").

- the initialisation w_c = logit(q_c / (min q + max q)), q = prior^-init_pow;
- the straight-through coefficients against autograd through the official construction: a hard Gumbel-softmax
  over all N examples, loss weighted by sum_n x_b * yhard.detach() * yst;
- the bilevel gradient against a hand-computed example: one SGD step of a linear classifier written out with the
  softmax gradients (p - e_y) f^T, then the chain rule into the slot weights;
- Adam against torch.optim.Adam; the sampler's class frequencies against n_c * sigmoid(w_c).
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aduni_hf.losses import CrossEntropyLoss, MetaBalancedSoftmaxLoss, MetaSampler
from aduni_hf.losses.meta_balanced_softmax import initial_sampler_logits
from aduni_hf.methods import METHODS, LossInputs, MethodArguments
from aduni_hf.training import AdUniTrainer, MetaSamplingTrainer

ISIC_COUNTS = [327, 514, 1099, 115, 1113, 6705, 142]


def test_balms_is_a_two_stage_method_with_the_meta_sampler():
    method = METHODS["balms"]
    first, second = method.stages
    args = MethodArguments(method="balms", meta_learning_rate=0.02, meta_init_pow=0.1)
    inputs = LossInputs(7, ISIC_COUNTS, None, args)  # neither loss needs the model
    assert first.num_views == 1 and type(first.loss(inputs)) is CrossEntropyLoss
    assert first.trainer_class is AdUniTrainer and not first.freeze_encoder
    loss = second.loss(inputs)
    assert type(loss) is MetaBalancedSoftmaxLoss and second.num_views == 1
    assert loss.meta_learning_rate == 0.02
    assert torch.equal(loss.sampler_logits.detach(), initial_sampler_logits(ISIC_COUNTS, 0.1))
    # the Meta Sampler draws the batches: MetaSamplingTrainer's sampler, not the recipe's
    assert second.trainer_class is MetaSamplingTrainer
    assert second.freeze_encoder and second.reinit_classifier and second.bn_mode == "train"
    assert second.epoch_length == "dataset" and method.classifier_type == "linear"


def test_initialisation_follows_the_prior_power():
    assert torch.equal(initial_sampler_logits(ISIC_COUNTS, 0.0), torch.zeros(7))  # every weight 0.5
    weights = torch.sigmoid(initial_sampler_logits(ISIC_COUNTS, 0.1).double())
    total = sum(ISIC_COUNTS)
    q = [(n / total) ** -0.1 for n in ISIC_COUNTS]
    expected = [value / (min(q) + max(q)) for value in q]
    assert weights.tolist() == pytest.approx(expected, rel=1e-6)
    assert weights.argmax() == 3 and weights.argmin() == 5  # the rarest class (DF) weighs most, NV least


def _official_slot_weight_gradient(loss, labels, batch_size, seed, per_slot_loss):
    """d/dw of sum_b x_b * sum_n yhard_bn.detach() * yst_bn, the official straight-through weighting, with the
    same Gumbel noise as MetaBalancedSoftmaxLoss.draw (uniform U -> -log(-log U) from the generator)."""
    w = loss.sampler_logits.detach().clone().requires_grad_(True)
    uniform = torch.rand(batch_size, len(labels), generator=torch.Generator().manual_seed(seed))
    gumbel = -torch.log(-torch.log(uniform))
    logits = torch.log(torch.sigmoid(w))[labels] + gumbel
    soft = torch.softmax(logits, dim=1)
    hard = torch.zeros_like(soft)
    hard[torch.arange(batch_size), soft.argmax(dim=1)] = 1.0
    straight = hard - soft.detach() + soft
    weighted = (per_slot_loss[:, None] * hard.detach() * straight).sum()
    weighted.backward()
    return hard.argmax(dim=1), w.grad


def test_straight_through_coefficients_match_the_official_construction():
    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 0, 1, 2, 2, 0, 3])
    loss = MetaBalancedSoftmaxLoss(4, class_counts=torch.bincount(labels).tolist())
    with torch.no_grad():
        loss.sampler_logits.copy_(torch.tensor([0.3, -0.5, 1.2, 0.1]))
    per_slot_loss = torch.tensor([0.7, 1.9, 0.2, 1.1, 0.5])
    indices, coefficients = loss.draw(labels, 5, torch.Generator().manual_seed(11))
    expected_indices, expected_grad = _official_slot_weight_gradient(loss, labels, 5, 11, per_slot_loss)
    assert torch.equal(indices, expected_indices)
    weights = loss.slot_weights(coefficients)
    assert torch.equal(weights.detach(), torch.ones(5))  # the value is exactly 1
    (grad,) = torch.autograd.grad((per_slot_loss * weights).sum(), loss.sampler_logits)
    assert torch.allclose(grad, expected_grad, atol=1e-7, rtol=1e-5)
    assert grad.abs().sum() > 1e-4  # a real gradient, not the zero of a row-constant weighting


def test_bilevel_gradient_matches_a_hand_computed_example():
    """Two classes, 2-d features, a linear classifier; SGD with momentum buffer and weight decay."""
    dtype = torch.float64
    counts = [3, 1]
    loss = MetaBalancedSoftmaxLoss(2, class_counts=counts).double()
    classifier = nn.Linear(2, 2).double()
    with torch.no_grad():
        classifier.weight.copy_(torch.tensor([[0.5, -0.2], [0.1, 0.3]]))
        classifier.bias.copy_(torch.tensor([0.05, -0.1]))
    features = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.3, -0.7]], dtype=dtype)
    labels = torch.tensor([0, 1, 0])
    meta_features = torch.tensor([[0.2, 1.0], [-0.4, -1.5]], dtype=dtype)
    meta_labels = torch.tensor([0, 1])
    coefficients = torch.tensor([[0.2, -0.2], [-0.1, 0.1], [0.05, -0.05]], dtype=dtype)
    lr, momentum, wd = 0.3, 0.9, 0.01
    buffers = {
        "weight": torch.tensor([[0.1, 0.0], [-0.1, 0.2]], dtype=dtype),
        "bias": torch.tensor([0.0, 0.05], dtype=dtype),
    }

    gradient = loss.meta_gradient(
        classifier, features, labels, coefficients, meta_features, meta_labels,
        learning_rate=lr, momentum=momentum, weight_decay=wd, momentum_buffers=buffers,
    )  # fmt: skip

    # By hand. Balanced Softmax adds log(n_c / N + 1e-9) to the logits.
    W, b = classifier.weight.detach(), classifier.bias.detach()
    log_prior = [math.log(n / sum(counts) + 1e-9) for n in counts]
    batch = len(labels)

    def softmax(values):
        top = max(values)
        exps = [math.exp(v - top) for v in values]
        return [e / sum(exps) for e in exps]

    grad_W_slot, grad_b_slot = [], []  # gradient of each slot's Balanced Softmax loss at theta
    total_W = [[0.0, 0.0], [0.0, 0.0]]
    total_b = [0.0, 0.0]
    for i in range(batch):
        f = features[i].tolist()
        p = softmax(
            [sum(W[c, k].item() * f[k] for k in range(2)) + b[c].item() + log_prior[c] for c in range(2)]
        )
        delta = [p[c] - (1.0 if c == labels[i] else 0.0) for c in range(2)]
        grad_W_slot.append([[delta[c] * f[k] for k in range(2)] for c in range(2)])
        grad_b_slot.append(delta)
        for c in range(2):
            total_b[c] += delta[c] / batch  # every slot weight is 1 in value
            for k in range(2):
                total_W[c][k] += delta[c] * f[k] / batch
    W_new = [
        [W[c, k].item() - lr * (total_W[c][k] + wd * W[c, k].item() + momentum * buffers["weight"][c, k].item())
         for k in range(2)]
        for c in range(2)
    ]  # fmt: skip
    b_new = [
        b[c].item() - lr * (total_b[c] + wd * b[c].item() + momentum * buffers["bias"][c].item())
        for c in range(2)
    ]
    meta_W = [[0.0, 0.0], [0.0, 0.0]]
    meta_b = [0.0, 0.0]
    for j in range(len(meta_labels)):
        f = meta_features[j].tolist()
        q = softmax([sum(W_new[c][k] * f[k] for k in range(2)) + b_new[c] for c in range(2)])
        for c in range(2):
            d = (q[c] - (1.0 if c == meta_labels[j] else 0.0)) / len(meta_labels)
            meta_b[c] += d
            for k in range(2):
                meta_W[c][k] += d * f[k]
    expected = [0.0, 0.0]
    for i in range(batch):
        # d meta / d weight_i = <grad of the meta loss at theta', d theta' / d weight_i = -lr * grad_i / B>
        d_weight = (
            -lr
            / batch
            * (
                sum(meta_W[c][k] * grad_W_slot[i][c][k] for c in range(2) for k in range(2))
                + sum(meta_b[c] * grad_b_slot[i][c] for c in range(2))
            )
        )
        for c in range(2):
            expected[c] += d_weight * coefficients[i, c].item()
    # 1e-7: the loss keeps its log prior in float32 (rounded before .double()); the rest is float64.
    assert gradient.tolist() == pytest.approx(expected, rel=1e-7)
    assert classifier.weight.detach().equal(W) and classifier.bias.detach().equal(
        b
    )  # the classifier is untouched


def test_without_a_momentum_buffer_the_step_is_plain_sgd():
    torch.manual_seed(1)
    loss = MetaBalancedSoftmaxLoss(3, class_counts=[5, 3, 1]).double()
    classifier = nn.Linear(4, 3).double()
    args = (torch.randn(6, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 0, 1]),
            torch.randn(6, 3, dtype=torch.float64) * 0.1, torch.randn(3, 4, dtype=torch.float64), torch.tensor([0, 1, 2]))  # fmt: skip
    none = loss.meta_gradient(
        classifier, *args, learning_rate=0.1, momentum=0.9, momentum_buffers={"weight": None}
    )
    plain = loss.meta_gradient(classifier, *args, learning_rate=0.1)
    assert torch.equal(none, plain) and plain.abs().sum() > 0


def test_adam_update_equals_torch_adam():
    loss = MetaBalancedSoftmaxLoss(3, class_counts=[5, 3, 1], meta_learning_rate=0.01)
    reference = nn.Parameter(loss.sampler_logits.detach().clone())
    adam = torch.optim.Adam([reference], lr=0.01)
    for gradient in (
        torch.tensor([0.3, -1.0, 0.02]),
        torch.tensor([-0.1, 0.5, 0.0]),
        torch.tensor([2.0, 0.1, -0.3]),
    ):
        loss.adam_update(gradient)
        reference.grad = gradient.clone()
        adam.step()
        assert torch.allclose(loss.sampler_logits.detach(), reference.detach(), atol=1e-7)
    assert int(loss.adam_step) == 3
    state = loss.state_dict()  # the sampler and its Adam state travel with every checkpoint
    assert set(state) == {"sampler_logits", "adam_step", "adam_exp_avg", "adam_exp_avg_sq"}


def test_meta_sampler_class_frequencies_follow_the_weights():
    """Class c is drawn with probability n_c * sigmoid(w_c) / sum_k n_k * sigmoid(w_k); 4 binomial std."""
    labels = [0] * 60 + [1] * 30 + [2] * 10
    loss = MetaBalancedSoftmaxLoss(3, class_counts=[60, 30, 10])
    with torch.no_grad():
        loss.sampler_logits.copy_(torch.tensor([-1.5, 0.0, 2.0]))
    sampler = MetaSampler(labels, loss, batch_size=20, seed=3)
    assert len(sampler) == 100  # floor(N / B) batches of B
    counts = torch.zeros(3)
    epochs = 40
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        keys = list(sampler)
        assert [k.draw for k in keys] == list(range(100)) and {k.epoch for k in keys} == {epoch}
        counts += torch.bincount(torch.tensor([labels[k.index] for k in keys]), minlength=3)
        assert sorted(loss.pending) == [(epoch, b) for b in range(5)]
        for batch in range(5):
            draw = loss.take_draw(
                epoch, batch, torch.tensor([labels[k.index] for k in keys[batch * 20 : (batch + 1) * 20]])
            )
            assert draw.coefficients.shape == (20, 3)
    expected = sampler.class_probabilities(0).float()
    mass = torch.tensor(
        [60 * torch.sigmoid(torch.tensor(-1.5)), 30 * 0.5, 10 * torch.sigmoid(torch.tensor(2.0))]
    )
    assert torch.allclose(expected, mass / mass.sum(), atol=1e-6)
    draws = epochs * 100
    tolerance = 4 * torch.sqrt(expected * (1 - expected) / draws)
    assert ((counts / draws - expected).abs() <= tolerance).all(), (counts / draws, expected)


def test_draws_are_a_pure_function_of_seed_epoch_and_weights():
    labels = [0] * 30 + [1] * 10
    first = MetaSampler(labels, MetaBalancedSoftmaxLoss(2, class_counts=[30, 10]), batch_size=8, seed=5)
    second = MetaSampler(labels, MetaBalancedSoftmaxLoss(2, class_counts=[30, 10]), batch_size=8, seed=5)
    first.set_epoch(2), second.set_epoch(2)
    assert list(first) == list(second)
    other = MetaSampler(labels, MetaBalancedSoftmaxLoss(2, class_counts=[30, 10]), batch_size=8, seed=6)
    other.set_epoch(2)
    assert list(other) != list(first)


def test_take_draw_refuses_a_missing_or_mismatched_batch():
    labels = [0] * 30 + [1] * 10
    loss = MetaBalancedSoftmaxLoss(2, class_counts=[30, 10])
    keys = list(MetaSampler(labels, loss, batch_size=8, seed=0))
    batch1 = torch.tensor([labels[k.index] for k in keys[8:16]])
    with pytest.raises(RuntimeError, match="labels differ"):
        loss.take_draw(0, 1, 1 - batch1)
    keys = list(MetaSampler(labels, loss, batch_size=8, seed=0))
    assert loss.take_draw(0, 1, batch1).batch == 1  # batch 0 is skipped (a resumed run) and dropped
    assert (0, 0) not in loss.pending
    with pytest.raises(RuntimeError, match="no draw for batch 1 of epoch 0"):
        loss.take_draw(0, 1, batch1)


def test_gradient_reaches_the_rare_class_weight_in_a_real_step():
    """An end-to-end meta step on a frozen-feature problem: the rare class is hurt by instance-balanced draws, so
    the meta gradient raises its weight (a negative gradient on w_rare)."""
    torch.manual_seed(0)
    labels = torch.tensor([0] * 90 + [1] * 10)
    features = torch.randn(100, 8) + 2.0 * F.one_hot(labels, 8).float()
    loss = MetaBalancedSoftmaxLoss(2, class_counts=[90, 10])
    classifier = nn.Linear(8, 2)
    gradients = []
    for batch in range(20):
        indices, coefficients = loss.draw(labels, 32, torch.Generator().manual_seed(batch))
        meta = torch.cat([torch.nonzero(labels == c).flatten()[:16] for c in (0, 1)])
        gradients.append(loss.meta_gradient(classifier, features[indices], labels[indices], coefficients,
                                            features[meta], labels[meta], learning_rate=0.5))  # fmt: skip
    mean = torch.stack(gradients).mean(0)
    assert mean[1] < 0 < mean[0], mean
