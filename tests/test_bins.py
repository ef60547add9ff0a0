"""Parameter bins (paper §2.2): parsing, infeasibility up front, and operators that stay inside."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subnas import BinConstrainedSpace, InfeasibleBinError, ParameterBin, SubNetwork, count_parameters
from subnas.bins import constrain, parse_count
from subnas.interfaces import SearchSpace
from tests.family_configs import CONFIGS, PUBLISHED, SPACES, space_for


def test_parse_and_format() -> None:
    assert ParameterBin.parse("30M-40M") == ParameterBin(30_000_000, 40_000_000)
    assert ParameterBin.parse("135M±5%") == ParameterBin(128_250_000, 141_750_000)
    assert ParameterBin.parse("135m +- 5%") == ParameterBin.parse("135M+/-5%") == ParameterBin.around(135_000_000)
    assert ParameterBin.parse("1.2B..1.5B") == ParameterBin(1_200_000_000, 1_500_000_000)
    assert ParameterBin.parse("385000000 - 426000000") == ParameterBin(385_000_000, 426_000_000)
    assert ParameterBin.parse("134,515,008±1%").lo == round(134_515_008 * 0.99)
    assert parse_count("2.5K") == 2500 and parse_count("1e6") == 1_000_000
    assert str(ParameterBin(30_000_000, 40_000_000)) == "30.00M-40.00M"
    for bad in ("30M", "30M-40M-50M", "lots", "40M-30M"):
        with pytest.raises(ValueError):
            ParameterBin.parse(bad)


def test_paper_bins() -> None:
    # §4: 5% around Pythia-410M, 1B and 2.8B gives 385M-426M, 961M-1.06B, 2.64B-2.91B.
    assert str(ParameterBin.around(405_334_016)) == "385.07M-425.60M"
    assert str(ParameterBin.around(1_011_781_632)) == "961.19M-1.06B"
    assert str(ParameterBin.around(2_775_208_960)) == "2.64B-2.91B"


def test_membership_and_distance() -> None:
    b = ParameterBin(10, 20)
    assert 10 in b and 20 in b and 9 not in b and 21 not in b and "15" not in b
    assert (b.distance(5), b.distance(15), b.distance(26)) == (5, 0, 6)


@pytest.mark.parametrize("name", SPACES)
def test_unreachable_bins_are_reported_up_front(name: str) -> None:
    space = space_for(name, "smollm2")
    lo, hi = space.bounds()
    assert hi == PUBLISHED["smollm2"]
    for b in (ParameterBin(hi + 1, 2 * hi), ParameterBin(0, lo - 1)):
        with pytest.raises(InfeasibleBinError) as err:
            BinConstrainedSpace(space, b)
        assert f"{lo:,} (smallest)" in str(err.value) and f"{hi:,} (largest)" in str(err.value)


def test_a_bin_between_two_sizes_is_reported() -> None:
    # Only the depth varies: counts are isolated points, and a bin strictly between two is empty.
    space = space_for("coarse-uniform", "smollm2", n_embd=576, num_heads=9, query_groups=3, head_size=64,
                      intermediate_size=1536)
    ten, eleven = (count_parameters(space.config, SubNetwork(n_layers=n)) for n in (10, 11))
    with pytest.raises(InfeasibleBinError, match="found no sub-network"):
        BinConstrainedSpace(space, ParameterBin(ten + 1, eleven - 1))
    exact = BinConstrainedSpace(space, ParameterBin(ten, ten))
    assert exact.sample(random.Random(0)).n_layers == 10


@pytest.mark.parametrize("family", sorted(CONFIGS))
@pytest.mark.parametrize("name", SPACES)
@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), pct=st.floats(1.0, 25.0))
def test_operators_stay_in_the_bin(name: str, family: str, seed: int, pct: float) -> None:
    space, rng = space_for(name, family), random.Random(seed)
    config = CONFIGS[family]
    # A bin around a member is feasible by construction; 1% bins are narrower than many steps.
    b = ParameterBin.around(space.count(space.sample(rng)), pct)
    constrained = BinConstrainedSpace(space, b, max_tries=20, seed=seed)
    a, other = constrained.sample(rng), constrained.sample(rng)
    mutants = [constrained.mutate(a, rng)]
    mutants.append(constrained.mutate(mutants[-1], rng))
    # Layer-wise crossover needs parents of equal depth (§2.2).
    partner = next((s for s in (other, *mutants) if s.n_layers == a.n_layers), a) if space.layerwise else other
    child = constrained.crossover(a, partner, rng)
    for s in (a, other, *mutants, child):
        s.resolve(config)
        assert space.contains(s)
        assert count_parameters(config, s) in b


@pytest.mark.parametrize("name", SPACES)
def test_typical_bins_need_no_fallback(name: str) -> None:
    # The paper's kind of bin (±5%) on SmolLM2: rejection, then repair, always land inside.
    space, rng = space_for(name, "smollm2"), random.Random(0)
    for target in (20e6, 60e6, 120e6):
        constrained = BinConstrainedSpace(space, ParameterBin.around(int(target)))
        population = [constrained.sample(rng) for _ in range(5)]
        for _ in range(10):
            a, b = rng.sample(population, 2)
            population.append(constrained.mutate(a, rng))
            if not space.layerwise or a.n_layers == b.n_layers:
                population.append(constrained.crossover(a, b, rng))
        assert constrained.fallbacks == 0
        assert all(space.count(s) in constrained.bin for s in population)


@pytest.mark.parametrize("name", SPACES)
def test_repair_moves_members_into_bins(name: str) -> None:
    space, rng = space_for(name, "qwen2"), random.Random(1)
    repaired = 0
    for _ in range(20):
        b = ParameterBin.around(space.count(space.sample(rng)), 5)
        start = space.sample(rng)
        fixed = space.repair(start, b, rng)
        if fixed is not None:
            repaired += 1
            assert count_parameters(space.config, fixed) in b and space.contains(fixed)
    assert repaired >= 18


def test_constrain_is_bounded() -> None:
    calls = []

    def propose() -> int:
        calls.append(1)
        return 100

    assert constrain(propose, lambda x: x, None, ParameterBin(0, 10), max_tries=7) is None
    assert len(calls) == 7
    assert constrain(propose, lambda x: x, lambda x: 5, ParameterBin(0, 10), max_tries=3) == 5
    assert constrain(propose, lambda x: x, lambda x: 50, ParameterBin(0, 10), max_tries=3) is None


class OddDepthSpace(SearchSpace):
    """A plugin-style space with no repair: only odd depths, and rejection is all it has."""

    def sample(self, rng: random.Random) -> SubNetwork:
        return SubNetwork(n_layers=rng.choice(range(1, self.config.num_hidden_layers + 1, 2)))

    def mutate(self, subnet: SubNetwork, rng: random.Random) -> SubNetwork:
        return self.sample(rng)

    def crossover(self, a: SubNetwork, b: SubNetwork, rng: random.Random) -> SubNetwork:
        return a

    def suggest(self, trial: Any) -> SubNetwork:
        raise NotImplementedError

    def size(self) -> int:
        return (self.config.num_hidden_layers + 1) // 2

    def bounds(self) -> tuple[int, int]:
        return self.count(SubNetwork(n_layers=1)), self.count(SubNetwork(n_layers=self.config.num_hidden_layers))


def test_generic_spaces_fall_back_inside_the_bin() -> None:
    space = OddDepthSpace(CONFIGS["gpt2"])
    three = space.count(SubNetwork(n_layers=3))
    constrained = BinConstrainedSpace(space, ParameterBin(three, three), max_tries=200)
    rng = random.Random(0)
    constrained.max_tries = 1  # now rejection mostly fails, and there is no repair
    out = [constrained.sample(rng) for _ in range(30)] + [constrained.mutate(constrained.witness, rng)
                                                           for _ in range(30)]
    assert all(s.n_layers == 3 for s in out)
    assert 0 < constrained.fallbacks < 60


# --------------------------------------------------------------------------- bins in any metric (issue #22)


def test_metric_bins_parse() -> None:
    from subnas.metric_bins import MetricBin

    assert MetricBin.parse("100M-150M", "flops") == MetricBin(100_000_000, 150_000_000, "flops")
    assert MetricBin.parse("20ms-35.5ms", "latency") == MetricBin(20, 35.5, "latency")
    assert MetricBin.parse("1.5B-2B", "weight-bytes").lo == 1_500_000_000
    assert 30.0 in MetricBin(20, 35.5, "latency") and 40 not in MetricBin(20, 35.5, "latency")
    for bad in ("20ms", "35-20", "fast-slow"):
        with pytest.raises(ValueError):
            MetricBin.parse(bad, "latency")


@pytest.mark.parametrize("sampler", ["evolution", "random"])
def test_a_flops_bin_holds_every_candidate(tmp_path: Any, tiny_models: dict, sampler: str) -> None:
    import optuna

    import subnas
    from subnas.metrics import flops_per_token
    from subnas.search_driver import open_storage

    supernet = subnas.Supernet.from_model(tiny_models["llama-gqa"])
    full = flops_per_token(supernet, seq_len=256)
    lo, hi = int(full * 0.4), int(full * 0.6)
    result = subnas.search(supernet, bins=[(lo, hi)], bin_metric="flops", fitness="importance",
                           fitness_options={"method": "magnitude"}, calibration="weights", trials=8, out_dir=tmp_path,
                           seed=0, progress=False, sampler=sampler)
    entry = result["bins"][0]
    assert entry["bin_metric"] == "flops" and lo <= entry["best_flops"] <= hi
    best = SubNetwork.from_dict(entry["best_subnet"])
    assert entry["best_parameters"] == count_parameters(supernet, best)
    study = optuna.load_study(study_name=entry["study"], storage=open_storage(None, tmp_path))
    complete = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert complete
    for t in complete:  # every evaluated candidate in its bin, whatever the sampler
        assert lo <= flops_per_token(supernet, SubNetwork.from_dict(t.user_attrs["subnet"]), seq_len=256) <= hi


def test_an_unreachable_flops_bin_is_reported(tmp_path: Any, tiny_models: dict) -> None:
    import subnas

    supernet = subnas.Supernet.from_model(tiny_models["llama-gqa"])
    with pytest.raises(InfeasibleBinError, match="unreachable"):
        subnas.search(supernet, bins=["1B-2B"], bin_metric="flops", fitness="importance",
                      fitness_options={"method": "magnitude"}, calibration="weights", trials=4, out_dir=tmp_path,
                      progress=False)


def test_a_latency_bin_judges_the_median(tmp_path: Any, tiny_models: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """A latency bin holds a candidate when the median of its timed repeats is inside; the value
    is measured once per architecture (cached), so the judgement never changes within a search."""
    import subnas
    from subnas.metric_bins import MetricBin, MetricBinnedSpace

    monkeypatch.setenv("SUBNAS_CACHE", str(tmp_path))
    supernet = subnas.Supernet.from_model(tiny_models["llama-gqa"])
    space = subnas.get_search_space("coarse-uniform", supernet.subnas_config)
    metric = subnas.get_metric("latency", supernet, subnas.SearchContext(seq_len=8), repeats=3, warmup=1)
    calls: list[Any] = []

    def measured(subnet: Any) -> float:
        calls.append(subnet)
        return metric(subnet)

    view = MetricBinnedSpace(space, measured, "latency", probes=4)
    lo, hi = view.bounds()
    assert 0 < lo <= hi
    b = MetricBin(0.0, hi * 2, "latency")  # wide: every member (timing noise must not fail the test)
    found = view.sample_in(b, random.Random(0))
    assert found is not None and view.count(found) in b
    n = len(calls)
    assert view.count(found) == view.count(found) and len(calls) == n  # judged once: no new measurement
    assert metric.last.min_ms <= metric.last.ms <= metric.last.max_ms  # the median, its spread beside it
