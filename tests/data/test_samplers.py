"""Epoch samplers: pure functions of (seed, epoch), built by name from `SAMPLERS`."""

from aduni_hf.data import SAMPLERS, RandomEpochSampler, build_sampler


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
