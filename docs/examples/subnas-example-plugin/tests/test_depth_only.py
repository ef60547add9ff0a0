"""Tests of the example plugin, run against an installed copy (``pip install -e .``)."""

from __future__ import annotations

import random

import optuna
import pytest

import subnas

CONFIG = subnas.SubnasConfig(vocab_size=100, hidden_size=32, num_hidden_layers=6, num_attention_heads=4,
                             intermediate_size=64)


def test_registered_and_listed() -> None:
    report = {p["name"]: p for p in subnas.plugins_report()}
    assert report["depth_only"]["package"] == "subnas-example-plugin"
    assert report["depth_only"]["registers"]["search_spaces"] == ["depth-only"]
    assert report["depth_only"]["error"] is None


def test_operators_stay_in_the_space() -> None:
    space = subnas.get_search_space("depth-only", CONFIG, n_layers=[2, 3, 5])
    rng = random.Random(0)
    for _ in range(50):
        a, b = space.sample(rng), space.sample(rng)
        for s in (a, space.mutate(a, rng), space.crossover(a, b, rng)):
            s.resolve(CONFIG)
            assert s.n_layers in (2, 3, 5)
        assert space.mutate(a, rng).n_layers != a.n_layers
    assert space.size() == 3
    assert space.bounds() == (subnas.count_parameters(CONFIG, subnas.SubNetwork(n_layers=2)),
                              subnas.count_parameters(CONFIG, subnas.SubNetwork(n_layers=5)))


def test_bins_and_optuna() -> None:
    space = subnas.get_search_space("depth-only", CONFIG)
    count = subnas.count_parameters(CONFIG, subnas.SubNetwork(n_layers=4))
    constrained = subnas.BinConstrainedSpace(space, subnas.ParameterBin(count, count))
    assert constrained.sample(random.Random(1)) == subnas.SubNetwork(n_layers=4)
    with pytest.raises(subnas.InfeasibleBinError):
        subnas.BinConstrainedSpace(space, subnas.ParameterBin(count + 1, count + 2))
    study = optuna.create_study(sampler=subnas.get_sampler("random", seed=0))
    study.optimize(lambda t: space.count(space.suggest(t)), n_trials=5)
    assert set(study.best_params) == {"n_layers"}
