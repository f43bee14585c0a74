"""Epoch samplers: pure functions of (seed, epoch), built by name from `SAMPLERS`.

Expected values are computed here from the formulas of docs/method.md, "Sampling", never by the code under test.
"""

import math
import random

import numpy as np
import pytest
import torch

from aduni_hf.data import (
    SAMPLERS,
    ClassAwareSampler,
    ProgressiveSampler,
    RandomEpochSampler,
    SquareRootSampler,
    UpSampler,
    build_sampler,
)

ISIC = [327, 514, 1099, 115, 1113, 6705, 142]  # ISIC2018 training counts, AKIEC BCC BKL DF MEL NV VASC
APTOS = [1805, 370, 999, 193, 295]  # APTOS2019 training counts
ISIC_QUARTER = [round(n / 4) for n in ISIC]  # 82, 128, 275, 29, 278, 1676, 36: N = 2504
NAMES = ["class_aware", "none", "progressive", "sqrt", "upsample"]
CONTEXT = {"batch_size": 16, "num_epochs": 5}


def labels_of(counts, shuffle_seed=0):
    """`counts[c]` samples of every class c, in a fixed shuffled order (a local RNG: the global one is untouched)."""
    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    random.Random(shuffle_seed).shuffle(labels)
    return labels


def stream(sampler, epoch):
    sampler.set_epoch(epoch)
    return torch.tensor([key.index for key in sampler])


def assert_frequencies_match(classes, probabilities, num_classes):
    """|freq − p| <= 5·sqrt(p(1−p)/n) for every class (a 5-sigma binomial band; the streams are seeded)."""
    n = len(classes)
    counts = torch.bincount(classes, minlength=num_classes).tolist()
    for c, p in enumerate(probabilities):
        assert abs(counts[c] / n - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-12, (c, counts[c] / n, p)


def test_sampler_is_a_pure_function_of_seed_and_epoch():
    labels = [0] * 7 + [1] * 3
    sampler = RandomEpochSampler(labels, seed=5)
    sampler.set_epoch(2)
    keys = list(sampler)
    assert [k.epoch for k in keys] == [2] * 10 and [k.draw for k in keys] == list(range(10))
    assert sorted(k.index for k in keys) == list(range(10))
    assert [k.index for k in RandomEpochSampler(labels, seed=5)] != [k.index for k in keys]  # epoch 0
    again = RandomEpochSampler(labels, seed=5)
    again.set_epoch(2)
    assert list(again) == keys
    again.set_epoch(3)
    assert [k.index for k in again] != [k.index for k in keys]


def test_build_sampler_by_name():
    sampler = build_sampler("none", [0, 1, 1], seed=3)
    assert isinstance(sampler, RandomEpochSampler) and SAMPLERS["none"] is RandomEpochSampler
    assert list(sampler) == list(RandomEpochSampler([0, 1, 1], seed=3))


def test_the_table_2_samplers_are_registered():
    assert SAMPLERS.names() == NAMES
    assert SAMPLERS["upsample"] is UpSampler and SAMPLERS["class_aware"] is ClassAwareSampler
    assert SAMPLERS["sqrt"] is SquareRootSampler and SAMPLERS["progressive"] is ProgressiveSampler


# ---- every sampler ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_every_sampler_is_a_pure_function_of_seed_and_epoch(name):
    labels = labels_of([40, 12, 5, 3])
    torch_state, python_state, numpy_state = torch.get_rng_state(), random.getstate(), np.random.get_state()

    sampler = build_sampler(name, labels, seed=7, **CONTEXT)
    sampler.set_epoch(2)
    keys = list(sampler)
    assert len(keys) == len(sampler) > 0
    assert [k.epoch for k in keys] == [2] * len(keys) and [k.draw for k in keys] == list(range(len(keys)))
    assert all(0 <= k.index < len(labels) for k in keys)
    assert list(sampler) == keys  # iterating again carries no state over
    other = build_sampler(name, labels, seed=7, **CONTEXT)
    other.set_epoch(2)
    assert list(other) == keys
    other.set_epoch(3)
    assert [k.index for k in other] != [k.index for k in keys] and len(list(other)) == len(other)
    assert [k.index for k in build_sampler(name, labels, seed=8, **CONTEXT)] != stream(sampler, 0).tolist()
    for epoch in range(4):
        probabilities = sampler.class_probabilities(epoch)
        assert probabilities.dtype == torch.float64 and probabilities.shape == (4,)
        assert math.isclose(float(probabilities.sum()), 1.0, abs_tol=1e-12)

    # the global random states are untouched: every draw comes from the (seed, epoch) generator
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == python_state
    after = np.random.get_state()
    assert (
        after[0] == numpy_state[0]
        and np.array_equal(after[1], numpy_state[1])
        and after[2:] == numpy_state[2:]
    )


@pytest.mark.parametrize("name", NAMES)
def test_classes_without_training_images_do_not_crash(name):
    labels = labels_of([20, 0, 9, 0, 6])  # classes 1 and 3 empty; class 5 of num_classes=6 empty too
    sampler = build_sampler(name, labels, seed=0, num_classes=6, batch_size=12, num_epochs=3)
    probabilities = sampler.class_probabilities(2)
    assert probabilities.shape == (6,) and math.isclose(float(probabilities.sum()), 1.0, abs_tol=1e-12)
    assert probabilities[[1, 3, 5]].tolist() == [0.0, 0.0, 0.0] and bool((probabilities[[0, 2, 4]] > 0).all())
    classes = torch.tensor(labels)[stream(sampler, 2)]
    assert set(classes.tolist()) == {0, 2, 4}
    with pytest.raises(ValueError, match="num_classes=3"):
        build_sampler(name, labels, seed=0, num_classes=3, **CONTEXT)


def test_build_sampler_passes_the_context_each_sampler_names():
    labels = labels_of([40, 12, 5, 3])
    assert list(build_sampler("none", labels, 0, batch_size=8, num_epochs=3, unrelated=1)) == list(
        RandomEpochSampler(labels, seed=0)
    )
    assert build_sampler("none", labels, seed=0, num_classes=6).class_probabilities(0).shape == (6,)
    assert build_sampler("upsample", labels, seed=0, batch_size=8).batch_size == 8
    assert build_sampler("progressive", labels, seed=0, num_epochs=9).num_epochs == 9
    assert build_sampler("class_aware", labels, seed=0).num_samples_cls == 4
    with pytest.raises(ValueError, match="sampler 'upsample' needs batch_size"):
        build_sampler("upsample", labels, seed=0, num_epochs=3)
    with pytest.raises(ValueError, match="sampler 'upsample' needs batch_size"):
        build_sampler("upsample", labels, seed=0, batch_size=None)
    with pytest.raises(ValueError, match="sampler 'progressive' needs num_epochs"):
        build_sampler("progressive", labels, seed=0, batch_size=8)


# ---- square-root sampling --------------------------------------------------------------------------------
def test_square_root_class_probabilities_match_the_reference_numbers():
    for counts, reference in (
        (ISIC, [0.085, 0.107, 0.157, 0.051, 0.158, 0.387, 0.056]),
        (APTOS, [0.342, 0.155, 0.254, 0.112, 0.138]),
    ):
        roots = [math.sqrt(n) for n in counts]
        assert [round(r / sum(roots), 3) for r in roots] == reference
        probabilities = SquareRootSampler(labels_of(counts)).class_probabilities(0)
        assert [round(p, 3) for p in probabilities.tolist()] == reference
        assert torch.allclose(probabilities, torch.tensor(roots, dtype=torch.float64) / sum(roots))


def test_square_root_sampling_draws_classes_with_the_square_root_frequencies():
    labels = labels_of(ISIC_QUARTER)
    sampler = SquareRootSampler(labels, seed=1)
    roots = [math.sqrt(n) for n in ISIC_QUARTER]
    expected = [r / sum(roots) for r in roots]
    epochs = [stream(sampler, epoch) for epoch in range(6)]
    assert all(len(draws) == sum(ISIC_QUARTER) for draws in epochs)  # N draws per epoch, with replacement
    assert len(set(epochs[0].tolist())) < len(labels)
    assert_frequencies_match(torch.tensor(labels)[torch.cat(epochs)], expected, len(ISIC))


# ---- progressive-balanced sampling -----------------------------------------------------------------------
def test_progressive_lambda_lags_one_epoch():
    labels = labels_of([40, 12, 5, 3])
    sampler = ProgressiveSampler(labels, num_epochs=6)  # λ_e = e/5
    assert [sampler.lam(e) for e in range(9)] == [0.0, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0]
    # the last training epoch (5) uses λ_4 = (E−2)/(E−1) = 4/5; λ = 1 only from epoch E on
    four_hundred = ProgressiveSampler(labels, num_epochs=400)
    assert four_hundred.lam(0) == four_hundred.lam(1) == 0.0 and four_hundred.lam(2) == 1 / 399
    assert four_hundred.lam(399) == 398 / 399 and four_hundred.lam(400) == 1.0  # the released epoch 400
    assert [ProgressiveSampler(labels, num_epochs=1).lam(e) for e in range(3)] == [0.0, 0.0, 0.0]
    assert ProgressiveSampler(labels, num_epochs=6.0).num_epochs == 6  # the Trainer's float epochs
    with pytest.raises(ValueError, match="num_epochs"):
        ProgressiveSampler(labels, num_epochs=0)


def test_progressive_class_probabilities_mix_natural_and_balanced():
    sampler = ProgressiveSampler(labels_of(ISIC), num_epochs=400)
    total = sum(ISIC)
    for epoch, lam in ((0, 0.0), (1, 0.0), (2, 1 / 399), (201, 200 / 399), (399, 398 / 399), (400, 1.0)):
        expected = [(1 - lam) * n / total + lam / len(ISIC) for n in ISIC]
        assert torch.allclose(sampler.class_probabilities(epoch), torch.tensor(expected, dtype=torch.float64))
    assert [round(p, 4) for p in sampler.class_probabilities(0).tolist()] == [
        0.0327, 0.0513, 0.1097, 0.0115, 0.1111, 0.6695, 0.0142,
    ]  # fmt: skip


def test_progressive_sampling_draws_classes_with_the_mixed_frequencies():
    labels = labels_of(ISIC_QUARTER)
    total = len(labels)
    sampler = ProgressiveSampler(labels, seed=2, num_epochs=6)
    for epoch in range(7):
        lam = min(max(epoch - 1, 0), 5) / 5
        expected = [(1 - lam) * n / total + lam / len(ISIC) for n in ISIC_QUARTER]
        indices = stream(sampler, epoch)
        assert len(indices) == total
        classes = torch.tensor(labels)[indices]
        assert_frequencies_match(classes, expected, len(ISIC))
        # within a class, draws go through a shuffled cycle: each block of n_c draws has no repeat
        for c, n in enumerate(ISIC_QUARTER):
            own = indices[classes == c].tolist()
            assert all(len(set(own[i : i + n])) == len(own[i : i + n]) for i in range(0, len(own), n))


# ---- up-sampling -----------------------------------------------------------------------------------------
def test_upsampling_isic_builds_groups_of_126_and_batches_of_18_or_20_per_class():
    labels = labels_of(ISIC)
    sampler = UpSampler(labels, seed=3, batch_size=128)
    # M = 6705, k = 128 // 7 = 18, G = 6705·7 // 128 = 46935 // 128 = 366: 366·18·7 = 46116 draws
    assert (sampler.largest, sampler.per_class, sampler.groups) == (6705, 18, 366) and len(sampler) == 46116
    classes = torch.tensor(labels)[stream(sampler, 4)]
    positions = torch.arange(46116)
    assert torch.equal(classes, (positions % 126) // 18)  # group by group, 18 of each class in class order
    # A batch of 128 is 126 consecutive draws (18 of every class) plus 2 more at group offsets 2b and 2b+1
    # (128b ≡ 2b mod 126): an even offset and the next one always fall in the same run of 18, so every full
    # batch has 20 of one class, (2b mod 126) // 18, and 18 of the six others. 360 full batches, then 36
    # draws at offsets 90..125 (46080 ≡ 90 mod 126): 18 NV and 18 VASC.
    for b in range(360):
        expected = [18] * 7
        expected[(2 * b % 126) // 18] = 20
        assert torch.bincount(classes[128 * b : 128 * (b + 1)], minlength=7).tolist() == expected
    assert torch.bincount(classes[360 * 128 :], minlength=7).tolist() == [0, 0, 0, 0, 0, 18, 18]


def test_upsampling_aptos_builds_groups_of_125_and_batches_of_25_to_28_per_class():
    labels = labels_of(APTOS)
    sampler = UpSampler(labels, seed=3, batch_size=128)
    # M = 1805, k = 128 // 5 = 25, G = 9025 // 128 = 70: 70·25·5 = 8750 draws, 68 full batches and 46
    assert (sampler.per_class, sampler.groups) == (25, 70) and len(sampler) == 8750
    classes = torch.tensor(labels)[stream(sampler, 0)]
    assert torch.equal(classes, (torch.arange(8750) % 125) // 25)
    # 125 consecutive draws hold 25 of each class; the 3 extra draws sit at offsets t, t+1, t+2 (mod 125)
    # with t = 128b mod 125 = 3b mod 125: one class gets 28, or two get 27 and 26 when t mod 25 is 23 or 24.
    patterns = set()
    for b in range(68):
        expected = [25] * 5
        for extra in range(3):
            expected[((3 * b + extra) % 125) // 25] += 1
        counts = torch.bincount(classes[128 * b : 128 * (b + 1)], minlength=5).tolist()
        assert counts == expected
        patterns.add(tuple(sorted(counts)))
    assert patterns == {(25, 25, 25, 25, 28), (25, 25, 25, 26, 27)}
    # last 46 draws: offsets 79..124 (8704 ≡ 79 mod 125): 21 of class 3, 25 of class 4
    assert torch.bincount(classes[68 * 128 :], minlength=5).tolist() == [0, 0, 0, 21, 25]


@pytest.mark.parametrize("counts", [ISIC, APTOS])
def test_upsampling_repeats_minority_images_floor_or_ceil_of_m_over_n(counts):
    labels = labels_of(counts)
    sampler = UpSampler(labels, seed=11, batch_size=128)
    largest = max(counts)
    used = sampler.groups * sampler.per_class
    draws = sampler.class_draws(sampler.generator(5))
    indices = stream(sampler, 5)
    classes = torch.tensor(labels)[indices]
    for c, n in enumerate(counts):
        assert len(draws[c]) == largest and set(torch.tensor(labels)[draws[c]].tolist()) == {c}
        _, repeats = torch.unique(draws[c], return_counts=True)
        assert len(repeats) == n  # every image of the class appears
        assert set(repeats.tolist()) <= {largest // n, -(-largest // n)}
        assert int((repeats == -(-largest // n)).sum()) == (largest % n if largest % n else n)
        assert torch.equal(indices[classes == c], draws[c][:used])  # the first G·k draws, in order
    assert sampler.class_probabilities(5).tolist() == [1 / len(counts)] * len(counts)


def test_upsampled_and_class_aware_epochs_cost_about_4_6_times_a_natural_isic_epoch():
    isic_fold = [262, 411, 879, 92, 890, 5364, 114]  # 80 % of ISIC2018, rounded: N = 8012
    aptos_fold = [1444, 296, 799, 154, 236]  # 80 % of APTOS2019, rounded: N = 2929
    # ISIC: G = 5364·7 // 128 = 293, 293·126 = 36918 draws = 4.61 N (289 batches); M·C = 37548 = 4.69 N
    upsample = UpSampler(labels_of(isic_fold), batch_size=128)
    class_aware = ClassAwareSampler(labels_of(isic_fold))
    assert len(upsample) == 36918 and round(len(upsample) / 8012, 2) == 4.61
    assert math.ceil(len(upsample) / 128) == 289
    assert len(class_aware) == 37548 and round(len(class_aware) / 8012, 2) == 4.69
    # APTOS: G = 1444·5 // 128 = 56, 56·125 = 7000 draws = 2.39 N; M·C = 7220 = 2.47 N
    assert len(UpSampler(labels_of(aptos_fold), batch_size=128)) == 7000 and round(7000 / 2929, 2) == 2.39
    assert len(ClassAwareSampler(labels_of(aptos_fold))) == 7220 and round(7220 / 2929, 2) == 2.47
    assert len(SquareRootSampler(labels_of(isic_fold))) == 8012
    assert len(ProgressiveSampler(labels_of(isic_fold), num_epochs=400)) == 8012


def test_upsampling_needs_a_batch_of_at_least_one_image_per_class():
    labels = labels_of(ISIC_QUARTER)
    with pytest.raises(ValueError, match=r"batch_size=6 .* 7 classes"):
        UpSampler(labels, batch_size=6)
    with pytest.raises(ValueError, match="empty epoch"):
        UpSampler(labels_of([3, 2]), batch_size=8)  # M·C = 6 < 8: no group


# ---- class-aware sampling --------------------------------------------------------------------------------
@pytest.mark.parametrize("counts", [ISIC, [10, 2, 5]])
def test_class_aware_runs_of_four_visit_every_class_once_per_pass(counts):
    labels = labels_of(counts)
    sampler = ClassAwareSampler(labels, seed=4)
    num_classes, largest = len(counts), max(counts)
    assert len(sampler) == largest * num_classes  # ISIC: 46935, not a multiple of 4: the last run has 3
    indices = stream(sampler, 1)
    classes = torch.tensor(labels)[indices]
    assert len(indices) == largest * num_classes
    runs = [classes[i : i + 4].tolist() for i in range(0, len(classes), 4)]
    assert all(len(set(run)) == 1 for run in runs)  # 4 consecutive draws of one class
    run_classes = [run[0] for run in runs]
    for start in range(0, len(run_classes), num_classes):
        one_pass = run_classes[start : start + num_classes]
        assert len(set(one_pass)) == len(one_pass)  # a pass visits every class once, in shuffled order
        if len(one_pass) == num_classes:
            assert sorted(one_pass) == list(range(num_classes))
    first_passes = [tuple(run_classes[i : i + num_classes]) for i in range(0, 10 * num_classes, num_classes)]
    assert len(set(first_passes)) > 1  # reshuffled after each pass
    for c, n in enumerate(counts):
        own = indices[classes == c].tolist()
        assert abs(len(own) - largest) <= 4  # every class gets about M draws: p_c = 1/C
        for i in range(0, len(own), n):  # without replacement until the class is exhausted, then reshuffled
            block = own[i : i + n]
            assert len(set(block)) == len(block)
            if len(block) == n:
                assert set(block) == set(torch.nonzero(torch.tensor(labels) == c).flatten().tolist())
    assert sampler.class_probabilities(1).tolist() == [1 / num_classes] * num_classes
