"""Tests of the alpha and learning-rate schedules against docs/method.md, "Schedules" and
"Reference numbers"."""

from __future__ import annotations

import dataclasses
import math

import pytest

from aduni_hf.schedules import (
    ALPHA_SCHEDULES,
    DEFAULT_ALPHA,
    AlphaSchedule,
    alpha_schedule,
    official_learning_rate,
)

# ----------------------------------------------------------------------------------------------------------
# alpha: official (cumulative) kind
# ----------------------------------------------------------------------------------------------------------


def official_alpha_recurrence(last_epoch, alpha_max=1.0, alpha_min=0.01, decay=1000):
    """docs/method.md, "Schedules", as main.py runs it: cosine_adjust applied to the previous epoch's alpha at every epoch
    start, alpha_{-1} = alpha_0 = 1. Returns alpha_e for e = 0..last_epoch."""
    values = []
    alpha = alpha_max  # alpha_{-1}
    for epoch in range(last_epoch + 1):
        alpha = alpha_min + (alpha - alpha_min) * (1 + math.cos(math.pi * epoch / decay)) / 2
        values.append(alpha)
    return values


@pytest.mark.parametrize(("epoch", "expected"), [(100, 0.4387), (150, 0.0690), (200, 0.0112), (250, 0.0100)])
def test_official_alpha_reference_values(epoch, expected):
    assert round(alpha_schedule(epoch), 4) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [(0, 1.0), (25, 0.987), (50, 0.900), (75, 0.705), (125, 0.204), (175, 0.021), (225, 0.0101)],
)
def test_official_alpha_table(epoch, expected):
    assert alpha_schedule(epoch, kind="official") == pytest.approx(expected, abs=1e-3)


def test_official_alpha_equals_cumulative_recurrence():
    recurrence = official_alpha_recurrence(400)
    assert recurrence[0] == 1.0
    for epoch, expected in enumerate(recurrence):
        assert alpha_schedule(epoch, kind="official") == pytest.approx(expected, rel=1e-12, abs=1e-15), epoch


def test_official_alpha_recurrence_with_other_constants():
    recurrence = official_alpha_recurrence(120, alpha_max=0.5, alpha_min=0.05, decay=100)
    for epoch, expected in enumerate(recurrence):
        got = alpha_schedule(epoch, kind="official", alpha_max=0.5, alpha_min=0.05, decay=100)
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-15), epoch


def test_official_alpha_stays_at_alpha_min_late():
    # 0.0100 to 4 decimals from epoch 250 (0.010002 there), never below alpha_min.
    for epoch in (250, 300, 400):
        assert alpha_schedule(epoch) == pytest.approx(0.01, abs=5e-5)
        assert alpha_schedule(epoch) >= 0.01
    assert alpha_schedule(400) == pytest.approx(0.01, abs=1e-9)


# ----------------------------------------------------------------------------------------------------------
# alpha: other kinds
# ----------------------------------------------------------------------------------------------------------


def test_cosine_alpha_is_normalised_eq4():
    assert alpha_schedule(0, kind="cosine") == pytest.approx(1.0, abs=1e-12)
    assert alpha_schedule(1000, kind="cosine") == pytest.approx(0.01, abs=1e-12)
    assert alpha_schedule(1500, kind="cosine") == pytest.approx(0.01, abs=1e-12)  # clamped after decay
    # (1 + cos(0.4 pi)) / 2 = 0.6545, so alpha = 0.6545 * 1 + 0.3455 * 0.01 = 0.658 at epoch 400.
    assert alpha_schedule(400, kind="cosine") == pytest.approx(0.658, abs=1e-3)
    # Closed-form row of the 2.4 table.
    assert alpha_schedule(100, kind="cosine") == pytest.approx(0.976, abs=1e-3)
    assert alpha_schedule(200, kind="cosine") == pytest.approx(0.905, abs=1e-3)
    for epoch in (0, 37, 250, 999):
        weight = (1 + math.cos(math.pi * epoch / 1000)) / 2
        assert alpha_schedule(epoch, kind="cosine") == pytest.approx(
            weight * 1.0 + (1 - weight) * 0.01, rel=1e-12
        )


def test_linear_alpha_endpoints():
    assert alpha_schedule(0, kind="linear", num_epochs=401) == pytest.approx(1.0, abs=1e-12)
    assert alpha_schedule(400, kind="linear", num_epochs=401) == pytest.approx(0.01, abs=1e-12)
    assert alpha_schedule(200, kind="linear", num_epochs=401) == pytest.approx(0.505, abs=1e-12)
    assert alpha_schedule(500, kind="linear", num_epochs=401) == pytest.approx(0.01, abs=1e-12)  # clamped


def test_linear_alpha_needs_num_epochs():
    with pytest.raises(ValueError):
        alpha_schedule(3, kind="linear")


def test_step_alpha():
    assert alpha_schedule(0, kind="step", decay=100) == 1.0
    assert alpha_schedule(99, kind="step", decay=100) == 1.0
    assert alpha_schedule(100, kind="step", decay=100) == 0.01
    assert alpha_schedule(400, kind="step", decay=100) == 0.01


def test_constant_alpha():
    for epoch in (0, 1, 200, 400, 5000):
        assert alpha_schedule(epoch, kind="constant", alpha_max=0.05) == 0.05


@pytest.mark.parametrize("kind", ["official", "cosine", "linear"])
def test_alpha_monotone_non_increasing_within_bounds(kind):
    values = [alpha_schedule(e, kind=kind, num_epochs=401) for e in range(451)]
    for epoch in range(1, len(values)):
        assert values[epoch] <= values[epoch - 1] + 1e-15, epoch
    assert all(0.01 - 1e-12 <= v <= 1.0 + 1e-12 for v in values)


def test_unknown_kind_raises_naming_valid_kinds():
    with pytest.raises(
        ValueError, match=r"alpha_schedule='exponential' is unknown; choose one of \["
    ) as error:
        alpha_schedule(0, kind="exponential")
    for kind in ("official", "cosine", "linear", "step", "constant"):
        assert kind in str(error.value)
    assert set(ALPHA_SCHEDULES) == {"official", "cosine", "linear", "step", "constant"}


@pytest.mark.parametrize("kind", ["official", "cosine", "linear", "step", "constant"])
def test_alpha_min_above_alpha_max_raises(kind):
    with pytest.raises(ValueError, match="alpha_min=0.5 must not exceed alpha_max=0.1"):
        alpha_schedule(0, kind=kind, alpha_max=0.1, alpha_min=0.5, num_epochs=10)
    with pytest.raises(ValueError, match="alpha_min must be >= 0, got -0.1"):
        AlphaSchedule(kind, alpha_max=0.5, alpha_min=-0.1)


@pytest.mark.parametrize("kind", ["official", "cosine", "linear", "step", "constant"])
@pytest.mark.parametrize("decay", [0, -5.0])
def test_decay_must_be_positive_for_every_kind(kind, decay):
    with pytest.raises(ValueError, match=f"alpha_decay must be > 0, got {decay}"):
        AlphaSchedule(kind, decay=decay)
    with pytest.raises(ValueError, match="alpha_decay must be > 0"):
        alpha_schedule(0, kind=kind, decay=decay, num_epochs=10)


# ----------------------------------------------------------------------------------------------------------
# AlphaSchedule: one schedule, checked once, called for alpha
# ----------------------------------------------------------------------------------------------------------


def test_the_default_schedule_is_the_official_one():
    assert AlphaSchedule() == DEFAULT_ALPHA == AlphaSchedule("official", 1.0, 0.01, 1000)
    for epoch in (0, 100, 150, 200, 250, 400):
        assert AlphaSchedule()(epoch, 400) == alpha_schedule(epoch)
    assert round(AlphaSchedule()(200), 4) == 0.0112  # num_epochs is optional but for the linear kind


@pytest.mark.parametrize("kind", ["official", "cosine", "linear", "step", "constant"])
def test_calling_a_schedule_is_the_alpha_schedule_function(kind):
    schedule = AlphaSchedule(kind, alpha_max=0.7, alpha_min=0.05, decay=30)
    for epoch in (0, 1, 15, 29, 30, 49):
        expected = alpha_schedule(epoch, kind=kind, alpha_max=0.7, alpha_min=0.05, decay=30, num_epochs=50)
        assert schedule(epoch, 50) == expected, epoch
    assert schedule(0, 50) == 0.7  # every kind starts at alpha_max


def test_held_constant_keeps_alpha_max_and_the_other_fields():
    schedule = AlphaSchedule("cosine", alpha_max=0.3, alpha_min=0.02, decay=50)
    constant = schedule.held_constant()
    assert constant == AlphaSchedule("constant", 0.3, 0.02, 50)
    assert [constant(epoch, 100) for epoch in (0, 49, 50, 99)] == [0.3] * 4
    assert schedule(99, 100) == pytest.approx(0.02)  # the original is unchanged


def test_a_schedule_is_frozen_and_refuses_a_negative_epoch():
    schedule = AlphaSchedule()
    with pytest.raises(dataclasses.FrozenInstanceError):
        schedule.alpha_max = 0.5
    with pytest.raises(ValueError, match="epoch must be >= 0, got -1"):
        schedule(-1, 10)


# ----------------------------------------------------------------------------------------------------------
# learning rate
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [(0, 0.01), (9, 0.10), (10, 0.099846), (200, 0.050050), (399, 1.0154e-4), (400, 1.0e-4)],
)
def test_learning_rate_reference_values(epoch, expected):
    assert official_learning_rate(epoch) == pytest.approx(expected, rel=1e-4)


def test_learning_rate_warmup_is_per_epoch():
    for epoch in range(10):
        assert official_learning_rate(epoch) == pytest.approx(0.01 * (epoch + 1), rel=1e-12)


def test_learning_rate_cosine_uses_raw_epoch():
    for epoch in range(10, 401):
        expected = 1e-4 + (0.1 - 1e-4) * (1 + math.cos(math.pi * epoch / 400)) / 2
        assert official_learning_rate(epoch) == pytest.approx(expected, rel=1e-12), epoch
