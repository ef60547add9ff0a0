"""Importance order (`UnitOrder`), importance-ordered spaces and their seeds, for every family.

Invariants (docs/design.md#invariants) in both orders: a member of an importance-ordered space is evaluated
exactly as it is exported, counted by the one counter, and written as explicit original indices,
so its file means the same units to every later command.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import subnas
from subnas import Supernet, SubNetwork, count_parameters
from subnas.bins import ParameterBin
from subnas.evaluation._importance import ImportanceScores, activation_scores, layer_removal_scores
from subnas.spaces._ordering import UnitOrder
from tests.conftest import SEQ, TINY_CONFIGS
from tests.test_invariants import assert_evaluated_equals_exported

SPACES = ["coarse-uniform", "coarse-layerwise", "fine-uniform", "fine-layerwise"]
_CACHE: dict[str, tuple[Supernet, UnitOrder]] = {}


def supernet_and_order(tiny_models: dict, name: str) -> tuple[Supernet, UnitOrder]:
    if name not in _CACHE:
        supernet = Supernet.from_model(tiny_models[name])
        g = torch.Generator().manual_seed(0)
        calibration = torch.randint(0, supernet.subnas_config.vocab_size, (4, SEQ), generator=g)
        scores = activation_scores(supernet.model, calibration)
        # The default importance order: layers ranked by the loss of skipping each one.
        removal = layer_removal_scores(supernet.model, calibration, progress=False)
        _CACHE[name] = supernet, UnitOrder.from_scores(scores, supernet.subnas_config, layer_scores=removal)
    return _CACHE[name]


@pytest.mark.parametrize("space_name", SPACES)
@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_importance_ordered_members_evaluate_as_exported(tiny_models: dict, name: str, space_name: str) -> None:
    supernet, order = supernet_and_order(tiny_models, name)
    space = subnas.get_search_space(space_name, supernet.subnas_config, order=order)
    ids = torch.randint(0, supernet.subnas_config.vocab_size, (2, SEQ), generator=torch.Generator().manual_seed(1))

    @settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(seed=st.integers(0, 2**16))
    def check(seed: int) -> None:
        subnet = space.sample(random.Random(seed))
        assert space.contains(subnet)
        # The file holds explicit original indices: read back, it is the same selection.
        again = SubNetwork.from_json(subnet.to_json())
        assert again.resolve(supernet.subnas_config) == subnet.resolve(supernet.subnas_config)
        assert_evaluated_equals_exported(supernet, again, ids)
        assert space.count(subnet) == count_parameters(supernet, again)

    check()


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_full_importance_ordered_subnetwork_is_the_model(tiny_models: dict, name: str) -> None:
    supernet, order = supernet_and_order(tiny_models, name)
    cfg = supernet.subnas_config
    full = order.subnetwork(n_layers=cfg.num_hidden_layers, n_embd=cfg.hidden_size,
                            num_heads=cfg.num_attention_heads[0], query_groups=cfg.num_key_value_heads[0],
                            head_size=cfg.head_dim[0], intermediate_size=cfg.intermediate_size[0])
    assert full.resolve(cfg) == SubNetwork().resolve(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, SEQ), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        supernet.reset()
        expected = tiny_models[name](ids).logits
        with supernet.sub_network(full):
            got = supernet(ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_counts_do_not_depend_on_the_order(tiny_models: dict, name: str) -> None:
    supernet, order = supernet_and_order(tiny_models, name)
    natural = subnas.get_search_space("coarse-layerwise", supernet.subnas_config, order="natural")
    ordered = subnas.get_search_space("coarse-layerwise", supernet.subnas_config, order=order)
    rng = random.Random(0)
    for _ in range(20):
        subnet = natural.sample(rng)
        # The same sizes in importance order: parse the natural member's sizes into the other space.
        twin = ordered._emit(natural._parse(subnet), random.Random(0))
        assert count_parameters(supernet, twin) == count_parameters(supernet, subnet)


def test_order_ranks_each_component_and_keeps_groups_and_rotary_pairs() -> None:
    cfg = subnas.SubnasConfig(vocab_size=50, hidden_size=8, num_hidden_layers=3, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=8, intermediate_size=6)
    scores = ImportanceScores(
        embd=torch.tensor([0.1, 5, 0.2, 3, 0.3, 0.4, 2, 1.0]),
        blocks=torch.tensor([0.9, 0.1, 0.5]),
        heads=[torch.tensor([0.1, 0.2, 5.0, 0.3])] * 3,  # group 1 (heads 2, 3) holds the best head
        head_dims=[torch.tensor([0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 1.0])] * 3,  # pair 3 = dims (3, 7)
        neurons=[torch.tensor([1.0, 6, 2, 5, 3, 4])] * 3)
    order = UnitOrder.from_scores(scores, cfg)
    assert order.layers == (0, 2, 1) and order.kept_layers(2) == (0, 2)
    assert order.embd[:3] == (1, 3, 6)
    assert order.groups[0] == (1, 0) and order.heads[0][1] == (0, 1)
    assert order.rotary_pairs[0][0] == 3
    subnet = order.subnetwork(n_layers=2, n_embd=3, num_heads=1, query_groups=1, head_size=2, intermediate_size=2)
    r = subnet.resolve(cfg)
    assert [s.layer for s in r.layers] == [0, 2] and r.embd == (1, 3, 6)
    assert r.layers[0].heads == (2,) and r.layers[0].groups == (1,)
    assert sorted(r.layers[0].head_dims) == [3, 7]  # a whole rotary pair
    assert r.layers[0].neurons == (1, 3)
    # Natural order: exactly the paper's first-n sub-network, written without index sets.
    natural = UnitOrder.natural(cfg).subnetwork(n_layers=2, n_embd=3, num_heads=2, query_groups=1, head_size=4,
                                                intermediate_size=2)
    assert natural == SubNetwork(n_layers=2, n_embd=3, num_heads=2, query_groups=1, head_size=4, intermediate_size=2)
    assert UnitOrder.from_dict(json.loads(json.dumps(order.to_dict()))) == order


@pytest.mark.parametrize("space_name", SPACES)
def test_one_shot_seeds_are_members_in_the_bin(tiny_models: dict, space_name: str) -> None:
    supernet, order = supernet_and_order(tiny_models, "llama-gqa")
    space = subnas.get_search_space(space_name, supernet.subnas_config, order=order,
                                    intermediate_size=range(16, 97, 16), n_embd=range(16, 65, 8))
    lo, hi = space.bounds()
    b = ParameterBin(lo + (hi - lo) // 3, lo + (hi - lo) // 2)
    seeds = space.one_shot(b)
    # Every space has seeds in an ordinary bin (fine-uniform too: per-layer index sets of one size).
    assert seeds, "an ordinary bin has one-shot candidates"
    assert all(space.contains(s) and space.count(s) in b for s in seeds)
    assert len({s.key(space.config) for s in seeds}) == len(seeds)
    # Layers are the most important ones and keep the model's order; every layer keeps its own
    # most important neurons and embedding channels are the most important ones.
    for s in seeds:
        r = s.resolve(supernet.subnas_config)
        kept = [x.layer for x in r.layers]
        assert kept == list(order.kept_layers(len(kept)))
        assert set(r.embd) == set(order.embd[: len(r.embd)])
        for x in r.layers:
            assert set(x.neurons) == set(order.neurons[x.layer][: len(x.neurons)])


def test_importance_order_needs_weights_or_says_so() -> None:
    cfg = subnas.SubnasConfig(num_hidden_layers=2)
    assert subnas.get_search_space("coarse-uniform", cfg).order.is_natural  # a bare config: nothing to rank
    with pytest.raises(subnas.spaces._choices.SearchSpaceError, match="need the model's weights"):
        subnas.get_search_space("coarse-uniform", cfg, order="importance")
    with pytest.raises(subnas.spaces._choices.SearchSpaceError, match="not one of"):
        subnas.get_search_space("coarse-uniform", cfg, order="alphabetical")


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_layer_removal_scores_measure_skipping_each_layer(tiny_models: dict, name: str, tmp_path) -> None:
    """The removal cost of a layer is the loss rise of the model without it; a layer whose every
    output projection is zero is the identity (residual), so skipping it costs nothing — and the
    importance order built from the costs ranks layers by them."""
    import copy

    from subnas.evaluation._perplexity import mean_token_nll
    from subnas.evaluation._importance import cached_layer_removal, layer_removal_scores

    hf = copy.deepcopy(tiny_models[name])
    supernet = Supernet.from_model(hf)
    model, cfg = supernet.model, supernet.subnas_config
    L = cfg.num_hidden_layers
    dead = L - 1
    with torch.no_grad():
        for pname, p in model.model.layers[dead].named_parameters():
            if pname.split(".")[-2] in ("o", "down"):  # the two writes into the residual stream
                p.zero_()
    ids = torch.randint(0, cfg.vocab_size, (3, SEQ), generator=torch.Generator().manual_seed(3))
    costs = layer_removal_scores(model, ids, batch_size=2, progress=False)
    assert costs.shape == (L,) and costs.dtype == torch.float64
    assert abs(float(costs[dead])) < 1e-5
    full = mean_token_nll(model, ids, batch_size=2, progress=False)
    with supernet.sub_network(SubNetwork(n_layers=L - 1, layer_indices=tuple(range(1, L)))):
        assert float(costs[0]) == pytest.approx(mean_token_nll(model, ids, batch_size=2, progress=False) - full,
                                                abs=1e-6)
    assert model.active == SubNetwork().resolve(cfg)  # the full network is active again
    # Cached: the second call reads the file and returns exactly the same costs.
    first = cached_layer_removal(model, ids, source="t", cache_dir=tmp_path, batch_size=2)
    assert len(list(tmp_path.iterdir())) == 1
    assert torch.equal(cached_layer_removal(model, ids, source="t", cache_dir=tmp_path), first)
    scores = activation_scores(model, ids)
    order = UnitOrder.from_scores(scores, cfg, layer_scores=costs)
    assert [float(costs[i]) for i in order.layers] == sorted(costs.tolist(), reverse=True)


def test_block_influence_order_is_the_literatures_one_shot(smollm2: Supernet) -> None:
    """On the real model the two layer criteria disagree where it matters (docs/design.md#measure-the-product): skipping
    layer 11 costs more than skipping most layers, though block influence ranks it 15th."""
    from subnas.spaces._ordering import importance_order

    removal = importance_order(smollm2)
    influence = importance_order(smollm2, layers="block-influence")
    assert removal.source.endswith("layers=removal") and influence.source.endswith("layers=block-influence")
    assert removal.neurons == influence.neurons and removal.embd == influence.embd
    assert removal.layers.index(11) < 6 < influence.layers.index(11)
    assert set(removal.layers[:3]) == {0, 1, 29}
    space = subnas.get_search_space("coarse-uniform", smollm2.subnas_config, order=influence)
    assert space.order is influence
    with pytest.raises(ValueError, match="unknown layer criterion"):
        importance_order(smollm2, layers="cosine")


def planted_order(cfg: subnas.SubnasConfig, seed: int = 0) -> UnitOrder:
    """A random importance order of every unit (what a calibration pass would have ranked)."""
    rng, natural = random.Random(seed), UnitOrder.natural(cfg)

    def shuffled(units: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(rng.sample(units, len(units)))

    return UnitOrder(layers=shuffled(natural.layers), embd=shuffled(natural.embd),
                     groups=tuple(map(shuffled, natural.groups)),
                     heads=tuple(tuple(map(shuffled, per)) for per in natural.heads),
                     rotary_pairs=tuple(map(shuffled, natural.rotary_pairs)), passes=tuple(map(shuffled, natural.passes)),
                     neurons=tuple(map(shuffled, natural.neurons)), source="planted")


def units_apart(cfg: subnas.SubnasConfig, a: SubNetwork, b: SubNetwork) -> int:
    """How many units (layers, channels, heads, head dims, neurons) one keeps and the other does not."""
    ra, rb = a.resolve(cfg), b.resolve(cfg)
    la, lb = {x.layer: x for x in ra.layers}, {x.layer: x for x in rb.layers}
    apart = len(set(ra.embd) ^ set(rb.embd)) + 100 * len(set(la) ^ set(lb))
    for m in set(la) & set(lb):
        x, y = la[m], lb[m]
        apart += sum(len(set(getattr(x, f)) ^ set(getattr(y, f))) for f in ("heads", "head_dims", "neurons"))
    return apart


@pytest.mark.parametrize("space_name", SPACES)
def test_first_generation_contains_the_planted_best(space_name: str) -> None:
    """With a planted importance order, the best sub-network of a bin is the n most important units
    of each kind in every layer (a one-shot prune); the search's first generation already holds it,
    in every space — the seeds are members of the space and lie in the bin."""
    import optuna

    cfg = subnas.SubnasConfig(vocab_size=100, hidden_size=64, num_hidden_layers=5, num_attention_heads=4,
                              num_key_value_heads=2, intermediate_size=256)
    order = planted_order(cfg)
    space = subnas.get_search_space(space_name, cfg, order=order)
    best = order.subnetwork(n_layers=3, n_embd=64, num_heads=4, query_groups=2, head_size=16, intermediate_size=192)
    n = space.count(best)
    b = ParameterBin(n - 20_000, n)  # the widest MLP of 3 layers inside the bin is 192 (256: +36,864)
    sampler = subnas.BinEvolutionSampler(space, b, population_size=6, num_elites=2, seed=0)
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda trial: units_apart(cfg, space.suggest(trial), best), n_trials=6)
    first = [t for t in study.trials if sampler.generation_of(t) == 0]
    assert min(t.value for t in first) == 0, sorted(t.value for t in first)
    assert all(space.count(SubNetwork.from_dict(t.system_attrs["subnas:subnet"])) in b for t in first)


@pytest.mark.parametrize("space_name", ["fine-uniform", "fine-layerwise"])
def test_fine_moves_follow_the_importance_order(space_name: str) -> None:
    """In importance order a fine-grained space grows and shrinks at the importance boundary (its
    index sets stay the n most important units of every layer) and a units swap trades a few of the
    least important kept units for the most important unused ones."""
    from subnas.samplers import UnitSwap, WeightedMoves

    cfg = subnas.SubnasConfig(vocab_size=100, hidden_size=64, num_hidden_layers=5, num_attention_heads=4,
                              num_key_value_heads=2, intermediate_size=256)
    order = planted_order(cfg, seed=1)
    space = subnas.get_search_space(space_name, cfg, order=order)
    seed = order.subnetwork(n_layers=3, n_embd=48, num_heads=4, query_groups=2, head_size=16, intermediate_size=128)
    assert space.contains(seed) and {"swap", "units"} <= set(space.moves(seed))
    rng = random.Random(0)
    sizes_only = WeightedMoves({"units": 0, "swap": 0})
    for _ in range(30):  # size steps keep every index set the top of its layer's order
        child = space.mutate(seed, rng, choose=sizes_only.choose)
        r = child.resolve(cfg)
        assert set(r.embd) == set(order.embd[: len(r.embd)])
        assert [x.layer for x in r.layers] == sorted(order.layers[: len(r.layers)]) or \
            len(r.layers) == 3  # a depth step keeps the most important layers
        for x in r.layers:
            assert set(x.neurons) == set(order.neurons[x.layer][: len(x.neurons)])
    swapped = 0
    for _ in range(20):
        child = space.mutate(seed, rng, choose=UnitSwap().choose)
        before, after = seed.resolve(cfg), child.resolve(cfg)
        assert [x.layer for x in after.layers] == [x.layer for x in before.layers]
        pairs = [(before.embd, after.embd, order.embd)] + [
            (a.neurons, b.neurons, order.neurons[a.layer]) for a, b in zip(before.layers, after.layers)]
        for x, y, full in pairs:
            out, into = set(x) - set(y), set(y) - set(x)
            assert len(out) == len(into) and len(x) == len(y)
            if out:  # a few of the least important kept for as many of the most important unused
                swapped += 1
                ranks = {u: i for i, u in enumerate(full)}
                assert min(ranks[u] for u in out) >= len(x) - 2 * len(out)
                assert max(ranks[u] for u in into) < len(x) + 2 * len(out)
    assert swapped == 20


@pytest.mark.parametrize("space_name", ["coarse-layerwise", "fine-layerwise"])
@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_every_layer_mutants_are_legal_in_their_bin_and_evaluate_as_exported(tiny_models: dict, name: str,
                                                                            space_name: str) -> None:
    """The every-layer moves (``d-all``, ...) keep the invariants for every family: each mutant,
    constrained to its bin, is a member, lies in the bin, is counted by the one counter and
    evaluates exactly as its export."""
    supernet, order = supernet_and_order(tiny_models, name)
    space = subnas.get_search_space(space_name, supernet.subnas_config, order=order)
    ids = torch.randint(0, supernet.subnas_config.vocab_size, (2, SEQ), generator=torch.Generator().manual_seed(1))
    full = count_parameters(supernet, None)

    @settings(max_examples=3, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(seed=st.integers(0, 2**16))
    def check(seed: int) -> None:
        rng = random.Random(seed)
        parent = space.sample(rng)
        every_layer = [m for m in space.moves(parent) if m.endswith("-all")]
        if parent.n_layers > 1:
            assert every_layer, f"{space_name} offers no every-layer move to a {parent.n_layers}-layer parent"
        for move in every_layer:
            b = ParameterBin(1, full)
            child = space.mutate_in(parent, b, rng, max_tries=20, choose=lambda moves, r, m=move: m)
            assert child is not None and space.contains(child)
            assert space.count(child) in b and space.count(child) == count_parameters(supernet, child)
            assert_evaluated_equals_exported(supernet, child, ids)

    check()


@pytest.mark.parametrize("granularity", ["coarse", "fine"])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_layerwise_spaces_make_every_move_of_the_uniform_space_they_contain(granularity: str, data) -> None:
    """A layer-wise space in importance order offers, beside one layer's step, the same step in every
    kept layer (``d-all``, ...): from a uniform member it reaches exactly the uniform space's
    mutants of that dimension, so a layer-wise search can follow every uniform trajectory. From a
    mixed parent every layer moves the same number of steps along its own value grid."""
    cfg = subnas.SubnasConfig(vocab_size=100, hidden_size=64, num_hidden_layers=6, num_attention_heads=8,
                              num_key_value_heads=4, intermediate_size=256)
    order = planted_order(cfg, seed=data.draw(st.integers(0, 5)))
    uniform = subnas.get_search_space(f"{granularity}-uniform", cfg, order=order)
    layerwise = subnas.get_search_space(f"{granularity}-layerwise", cfg, order=order)
    parent = uniform.sample(random.Random(data.draw(st.integers(0, 10**6))))
    assert layerwise.contains(parent)
    open_moves = set(layerwise.moves(parent))
    for dim in ("h", "g", "hs", "d"):
        # the every-layer move exists exactly where the uniform space can step that dimension
        assert (f"{dim}-all" in open_moves) == (dim in uniform.moves(parent)) or parent.n_layers == 1
        if f"{dim}-all" not in open_moves:
            continue
        seeds = range(40)
        by_uniform = {uniform.mutate(parent, random.Random(i), choose=lambda m, r, d=dim: d).key(cfg) for i in seeds}
        by_layerwise = {layerwise.mutate(parent, random.Random(i), choose=lambda m, r, d=f"{dim}-all": d).key(cfg)
                        for i in seeds}
        assert by_layerwise == by_uniform
    # a mixed parent: one layer's step first, then every layer moves by the same step
    mixed = layerwise.mutate(parent, random.Random(1), choose=lambda m, r: "d" if "d" in m else m[0])
    if "d-all" in layerwise.moves(mixed):
        grid = sorted({*uniform.choices.intermediate_size})
        child = layerwise.mutate(mixed, random.Random(2), choose=lambda m, r: "d-all")
        before = [grid.index(x) for x in mixed.intermediate_size]
        after = [grid.index(x) for x in child.intermediate_size]
        steps = {b - a for a, b in zip(before, after) if 0 < b < len(grid) - 1}
        assert len(steps) <= 1 and after != before
        assert layerwise.contains(child)


def test_sampler_takes_operator_objects() -> None:
    """Selection, mutation and crossover are objects the sampler takes: a plugin replaces one."""
    import optuna

    from subnas.samplers import EqualDepthCrossover, TruncationSelection, WeightedMoves

    class Counting(WeightedMoves):
        calls = 0

        def __call__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            Counting.calls += 1
            return super().__call__(*args, **kwargs)

    space = subnas.get_search_space("coarse-uniform", subnas.SubnasConfig(num_hidden_layers=6))
    lo, hi = space.bounds()
    sampler = subnas.BinEvolutionSampler(space, (lo + (hi - lo) // 4, lo + (hi - lo) // 2), population_size=6,
                                         num_elites=2, mutation_prob=1.0, seed=0, mutation=Counting(),
                                         crossover=EqualDepthCrossover(), selection=TruncationSelection())
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda trial: space.count(space.suggest(trial)), n_trials=14)
    assert Counting.calls > 0
    assert any(t.system_attrs.get("subnas:role") == "mutation" for t in study.trials)
