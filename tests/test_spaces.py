"""The four search spaces (paper §2.1) and their operators (§2.2), on every family's shape."""

from __future__ import annotations

import math
import random
from math import comb
from typing import Any

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subnas import SubnasConfig, SubNetwork, count_parameters, get_search_space
from subnas.spaces._choices import SearchSpaceError, parse_choices
from subnas.interfaces import SearchSpace
from tests.family_configs import CONFIGS, SPACES, space_for
from tests.strategies import subnetworks

optuna.logging.set_verbosity(optuna.logging.WARNING)
_resolved: dict[int, tuple[SubNetwork, Any]] = {}


def resolve(space: Any, subnet: SubNetwork) -> Any:
    """``subnet.resolve(space.config)``, remembered for the last few sub-networks (tests resolve each
    one several times; fine-grained ones hold ~1e5 indices)."""
    hit = _resolved.get(id(subnet))
    if hit is None or hit[0] is not subnet:
        if len(_resolved) > 64:
            _resolved.clear()
        hit = _resolved[id(subnet)] = (subnet, subnet.resolve(space.config))
    return hit[1]


def view(space: Any, subnet: SubNetwork, by: str = "position") -> dict[str, Any]:
    """The paper's dimensions of a member, read from its resolved form (so from what the model runs):
    uniform spaces give one value per dimension, layer-wise ones a dict per kept layer (keyed by
    position, or by model layer to follow layers across a depth change)."""
    r = resolve(space, subnet)
    keys = [s.layer for s in r.layers] if by == "layer" else list(range(len(r.layers)))

    def per(f: Any) -> Any:
        values = {k: f(s) for k, s in zip(keys, r.layers)}
        # Fine-grained uniform: the same sizes, but every layer its own index sets.
        return values if space.layerwise or space.fine else values[keys[0]]

    v = {"l": tuple(s.layer for s in r.layers), "e": frozenset(r.embd), "h": per(lambda s: s.num_heads),
         "g": per(lambda s: frozenset(s.groups)), "hs": per(lambda s: frozenset(s.head_dims)),
         "d": per(lambda s: frozenset(s.neurons))}
    if space.shape.per_group == 1:
        del v["g"]  # MHA: one head per group, g follows h
    return v


def changed(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    out = set()
    for dim, a in before.items():
        b = after[dim]
        if isinstance(a, dict):  # layers kept by both must be untouched unless this dim changed
            if any(a[k] != b[k] for k in a.keys() & b.keys()):
                out.add(dim)
        elif a != b:
            out.add(dim)
    return out


def check_member(space: Any, subnet: SubNetwork) -> None:
    resolve(space, subnet)  # legal: raises SubNetworkError otherwise
    assert space.contains(subnet), subnet


def same_depth_partner(space: Any, name: str, family: str, a: SubNetwork, rng: random.Random) -> SubNetwork:
    """A second parent; layer-wise crossover needs equal depths (§2.2), so draw it at ``a``'s depth."""
    return space_for(name, family, n_layers=a.n_layers).sample(rng) if space.layerwise else space.sample(rng)


@pytest.mark.parametrize("family", sorted(CONFIGS))
@pytest.mark.parametrize("name", SPACES)
@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_operators_yield_legal_members(name: str, family: str, seed: int) -> None:
    space, rng = space_for(name, family), random.Random(seed)
    a = space.sample(rng)
    check_member(space, a)
    # One counter: the space counts on sizes; count_parameters resolves the full index sets.
    assert space.count(a) == count_parameters(space.config, a)
    parent = a
    for _ in range(4):
        child = space.mutate(parent, rng)
        check_member(space, child)
        diff = changed(view(space, parent, "layer"), view(space, child, "layer"))
        assert len(diff) == 1 and diff <= set(space.dimensions), diff
        parent = child
    b = same_depth_partner(space, name, family, a, rng)
    child = space.crossover(a, b, rng)
    check_member(space, child)
    check_crossover(space, a, b, child)


def check_crossover(space: Any, a: SubNetwork, b: SubNetwork, child: SubNetwork) -> None:
    """Coarse: every dimension from one parent (§2.2). Fine-grained: per kept model layer, each
    dimension from one parent's same layer (uniform: that parent's size, index sets refitted)."""
    if not space.fine:
        va, vb, vc = view(space, a), view(space, b), view(space, child)
        assert all(vc[d] in (va[d], vb[d]) for d in vc), {d for d in vc if vc[d] not in (va[d], vb[d])}
        return
    va, vb, vc = (view(space, x, "layer") for x in (a, b, child))
    assert vc["l"] in (va["l"], vb["l"]) and vc["e"] in (va["e"], vb["e"])
    for d in set(vc) - {"l", "e"}:
        for m, value in vc[d].items():
            options = [v[d][m] for v in (va, vb) if m in v[d]]
            if space.layerwise:
                assert value in options, (d, m)
            else:
                sizes = {len(v) if isinstance(v, frozenset) else v for v in
                         list(va[d].values())[:1] + list(vb[d].values())[:1]}
                assert (len(value) if isinstance(value, frozenset) else value) in sizes, (d, m)


def test_mutation_picks_every_dimension() -> None:
    # §2.2: x in {l, e, h, g, d, hs}; MHA has no separate g, MQA none at all.
    assert space_for("coarse-uniform", "smollm2").dimensions == ("l", "e", "h", "g", "hs", "d")
    assert space_for("coarse-uniform", "pythia-410m").dimensions == ("l", "e", "h", "hs", "d")
    assert space_for("coarse-uniform", "gemma3-270m").dimensions == ("l", "e", "h", "hs", "d")
    for name in SPACES:
        space, rng = space_for(name, "smollm2"), random.Random(0)
        seen: set[str] = set()
        s = space.sample(rng)
        for _ in range(60):
            m = space.mutate(s, rng)
            seen |= changed(view(space, s, "layer"), view(space, m, "layer"))
        assert seen == set(space.dimensions)


def test_fine_grained_growth_samples_new_indices_and_shrinking_drops_the_last() -> None:
    space = get_search_space("fine-uniform", CONFIGS["smollm2"], n_embd=[64, 128], n_layers=[10, 20])
    rng = random.Random(0)
    s = space.sample(rng)
    for _ in range(200):
        m = space.mutate(s, rng)
        if m.n_embd != s.n_embd:
            short, long = sorted((s.embd_indices, m.embd_indices), key=len)
            assert long[: len(short)] == short and len(set(long)) == len(long)
        if m.n_layers < s.n_layers:  # the deepest layers go
            assert m.layer_indices == s.layer_indices[: m.n_layers]
        elif m.n_layers > s.n_layers:
            assert set(s.layer_indices) < set(m.layer_indices)
        s = m


def test_layerwise_depth_mutation_keeps_existing_layers() -> None:
    space = get_search_space("coarse-layerwise", CONFIGS["smollm2"])
    rng = random.Random(3)
    s = space.sample(rng)
    for _ in range(100):
        m = space.mutate(s, rng)
        n = min(m.n_layers, s.n_layers)
        for f in ("num_heads", "query_groups", "head_size", "intermediate_size"):
            if m.n_layers != s.n_layers:
                assert getattr(m, f)[:n] == getattr(s, f)[:n]
        s = m


def test_layerwise_crossover_needs_equal_depth() -> None:
    space = space_for("coarse-layerwise", "smollm2")
    with pytest.raises(SearchSpaceError, match="equal depth"):
        space.crossover(SubNetwork(n_layers=3, num_heads=(3, 3, 3)), SubNetwork(n_layers=4), random.Random(0))
    uniform = space_for("coarse-uniform", "smollm2")  # uniform spaces inherit l like any dimension
    check_member(uniform, uniform.crossover(uniform.sample(random.Random(1)), uniform.sample(random.Random(2)),
                                            random.Random(0)))


# --------------------------------------------------------------------------- sizes


PYTHIA_6_9B = SubnasConfig(family="gpt_neox", vocab_size=50432, hidden_size=4096, num_hidden_layers=32,
                           num_attention_heads=32, head_dim=128, rotary_dim=32, intermediate_size=16384,
                           tie_word_embeddings=False, norm_type="layernorm", mlp_type="plain", qkv_bias=True,
                           o_bias=True, mlp_bias=True, residual="parallel")
TABLE_1 = {"n_embd": range(1, 4097), "intermediate_size": range(1, 16385)}  # h, l, hs {4..128}: defaults


def scientific(x: float) -> str:
    return f"{10 ** (x - math.floor(x)):.2f}e{math.floor(x)}"


def test_sizes_reproduce_the_paper() -> None:
    # Paper §2.1 / Table 16 for Pythia-6.9B: coarse uniform L*E*H*Hs*D = 4.33e12 (hs: 63 choices);
    # coarse layer-wise E*(H*Hs*D)^L = 1.65e244.
    uniform = get_search_space("coarse-uniform", PYTHIA_6_9B, **TABLE_1)
    assert uniform.size() == 32 * 4096 * 32 * 63 * 16384
    assert scientific(uniform.log10_size()) == "4.33e12"
    layerwise = get_search_space("coarse-layerwise", PYTHIA_6_9B, **TABLE_1)
    assert scientific(layerwise.log10_size()) == "1.65e244"
    assert math.isclose(layerwise.log10_size(), math.log10(4096) + 32 * math.log10(32 * 63 * 16384), rel_tol=1e-9)


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_sizes_match_the_formulas(family: str) -> None:
    cfg = CONFIGS[family]
    spaces = {name: space_for(name, family) for name in SPACES}
    c, s = spaces["coarse-uniform"].choices, spaces["coarse-uniform"].shape
    L, E, G, K, R, P, D = (s.layers, s.embd, s.groups, s.per_group, s.rotary, s.passes, s.inter)
    pairs = [(h, g) for h in range(1, s.heads + 1) for g in range(1, G + 1) if h % g == 0 and h // g <= K]
    assert set(c.attention) == set(pairs)
    assert c.n_embd[-1] == E and c.intermediate_size[-1] == D and c.head_size[0] == 4
    per_layer = len(pairs) * len(c.head_size) * len(c.intermediate_size)
    assert spaces["coarse-uniform"].size() == L * len(c.n_embd) * per_layer
    assert spaces["coarse-layerwise"].size() == len(c.n_embd) * sum(per_layer**n for n in range(1, L + 1))
    # Fine-grained: count index sets. Heads: choose g of G groups and k of K heads in each; head dims:
    # p of R/2 rotary pairs and q pass-through dims with 2p + q = hs.
    fc = spaces["fine-uniform"].choices
    assert fc.head_size == c.head_size  # every family here keeps even head sizes legal
    attn = sum(comb(G, g) * comb(K, h // g) ** g for h, g in pairs)
    dims = sum(comb(R // 2, p) * comb(P, hs - 2 * p) for hs in c.head_size for p in range(hs // 2 + 1)
               if 0 <= hs - 2 * p <= P)
    mlp = sum(comb(D, d) for d in c.intermediate_size)
    embd = sum(comb(E, e) for e in c.n_embd)
    layer = attn * dims * mlp
    # Fine-grained uniform (paper §2.1): the same sizes in every layer, each layer its own index
    # sets of those sizes — per size value, (sets of that size)^n over n kept layers.
    a_sets = [comb(G, g) * comb(K, h // g) ** g for h, g in pairs]
    d_sets = [sum(comb(R // 2, p) * comb(P, hs - 2 * p) for p in range(hs // 2 + 1) if 0 <= hs - 2 * p <= P)
              for hs in c.head_size]
    m_sets = [comb(D, d) for d in c.intermediate_size]
    uniform = sum(comb(L, n) * sum(x**n for x in a_sets) * sum(x**n for x in d_sets) * sum(x**n for x in m_sets)
                  for n in range(1, L + 1))
    assert spaces["fine-uniform"].size() == embd * uniform
    assert spaces["fine-layerwise"].size() == embd * sum(comb(L, n) * layer**n for n in range(1, L + 1))
    assert spaces["fine-layerwise"].log10_size() == pytest.approx(math.log10(spaces["fine-layerwise"].size()))
    assert count_parameters(cfg) == spaces["fine-layerwise"].bounds()[1]


MICRO = SubnasConfig(vocab_size=10, hidden_size=3, num_hidden_layers=2, num_attention_heads=2,
                     num_key_value_heads=2, head_dim=2, intermediate_size=3)
MICRO_CHOICES = {"n_embd": [2], "head_size": [2], "intermediate_size": [2]}


@pytest.mark.parametrize("name", SPACES)
def test_sampling_reaches_exactly_size_members(name: str) -> None:
    # On a micro model, enough draws reach every member: the distinct resolved sub-networks number
    # exactly size(), so the size is right and the sampler covers the whole space.
    space = get_search_space(name, MICRO, **MICRO_CHOICES)
    rng = random.Random(0)
    # Draws: ~10x the inverse of the rarest member's probability (e.g. 1/864 in fine-layerwise).
    draws = {"coarse-uniform": 200, "coarse-layerwise": 500, "fine-uniform": 3000, "fine-layerwise": 12000}[name]
    seen = {space.sample(rng).resolve(MICRO) for _ in range(draws)}
    assert len(seen) == space.size()


def test_bounds_are_the_extreme_members() -> None:
    space = space_for("coarse-uniform", "smollm2")
    lo, hi = space.bounds()
    assert hi == count_parameters(CONFIGS["smollm2"])
    assert lo == count_parameters(CONFIGS["smollm2"], SubNetwork(n_layers=1, n_embd=8, num_heads=1, query_groups=1,
                                                                 head_size=4, intermediate_size=64))


# --------------------------------------------------------------------------- Optuna


@pytest.mark.parametrize("family", ["smollm2", "pythia-410m"])
@pytest.mark.parametrize("name", SPACES)
def test_suggest_define_by_run(name: str, family: str) -> None:
    space = space_for(name, family)
    made: dict[int, SubNetwork] = {}

    def objective(trial: optuna.Trial) -> float:
        made[trial.number] = s = space.suggest(trial)
        check_member(space, s)
        return float(space.count(s))

    for sampler in (optuna.samplers.RandomSampler(seed=0), optuna.samplers.TPESampler(seed=0, n_startup_trials=3)):
        study = optuna.create_study(sampler=sampler)
        study.optimize(objective, n_trials=8)
        for trial in study.trials:
            assert {"n_layers", "n_embd"} <= set(trial.params)  # sizes are params, for the dashboard
            assert ("index_seed" in trial.params) == space.fine
            # The params alone reproduce the sub-network (index sets come from the seed).
            assert space.suggest(optuna.trial.FixedTrial(trial.params)) == made[trial.number]


# --------------------------------------------------------------------------- choices and membership


def test_choice_forms() -> None:
    assert parse_choices("d", range(64, 257, 64), 256) == (64, 128, 192, 256)
    assert parse_choices("d", "64:256:64", 256) == (64, 128, 192, 256)
    assert parse_choices("d", "64,256", 256) == (64, 256)
    assert parse_choices("d", {"min": 1, "max": 3}, 256) == (1, 2, 3)
    assert parse_choices("d", 7, 256) == (7,)
    assert parse_choices("d", [3, 1, 3], 256) == (1, 3)
    with pytest.raises(SearchSpaceError, match=r"1\.\.256"):
        parse_choices("d", [0, 300], 256)
    with pytest.raises(SearchSpaceError, match="lo:hi"):
        parse_choices("d", "a:b", 256)


def test_user_choices_shape_the_space() -> None:
    space = get_search_space("coarse-layerwise", CONFIGS["smollm2"], n_layers="10:20:5", n_embd=[256, 576],
                             num_heads=[3, 6], query_groups=3, head_size=range(32, 65, 16), intermediate_size=1536)
    assert space.choices.attention == ((3, 3), (6, 3))
    assert space.dimensions == ("l", "e", "h", "hs")
    rng = random.Random(0)
    for _ in range(50):
        s = space.sample(rng)
        assert s.n_layers in (10, 15, 20) and set(s.num_heads) <= {3, 6} and s.intermediate_size == (1536,) * s.n_layers


def test_bad_choices_are_explained() -> None:
    with pytest.raises(SearchSpaceError, match="rotary pair"):  # SmolLM2 rotates every head dim
        get_search_space("coarse-uniform", CONFIGS["smollm2"], head_size=[31, 32])
    get_search_space("coarse-uniform", CONFIGS["gpt2"], head_size=[31, 32])  # no rotary: fine
    with pytest.raises(SearchSpaceError, match="do not pair up"):
        get_search_space("coarse-uniform", CONFIGS["smollm2"], num_heads=[5])
    with pytest.raises(SearchSpaceError, match="unknown dimension"):
        get_search_space("coarse-uniform", CONFIGS["smollm2"], hidden=[5])
    uneven = SubnasConfig(num_hidden_layers=2, intermediate_size=[64, 128])
    with pytest.raises(SearchSpaceError, match="same shape"):
        get_search_space("fine-uniform", uneven)


def test_membership_of_foreign_subnetworks() -> None:
    cfg = CONFIGS["smollm2"]
    coarse, uniform = space_for("coarse-layerwise", "smollm2"), space_for("fine-uniform", "smollm2")
    picked = SubNetwork(n_layers=2, intermediate_indices=[5, 7])
    assert not coarse.contains(picked)
    with pytest.raises(SearchSpaceError, match="first n"):
        coarse.mutate(picked, random.Random(0))
    assert not uniform.contains(SubNetwork(n_layers=2, intermediate_size=(64, 128)))
    # The full model and first-n sub-networks written by hand are members of the coarse spaces.
    for name in ("coarse-uniform", "coarse-layerwise"):
        space = space_for(name, "smollm2")
        assert space.contains(SubNetwork())
        check_member(space, space.mutate(SubNetwork(n_layers=4, intermediate_size=64), random.Random(0)))
    first = SubNetwork(n_layers=3, intermediate_indices=list(range(64)))  # explicit, but first-n
    assert coarse.contains(first) and count_parameters(cfg, first) == coarse.count(first)


SMALL_GQA = SubnasConfig(vocab_size=50, hidden_size=48, num_hidden_layers=4, num_attention_heads=6,
                         num_key_value_heads=2, head_dim=12, rotary_dim=8, intermediate_size=40)


@pytest.mark.parametrize("name", SPACES)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_operators_accept_any_legal_member(name: str, data: st.DataObject) -> None:
    # Sub-networks written by users or stored by a search (drawn independently of the spaces, in
    # tests/strategies.py) can be mutated and crossed over, whatever sizes they hold.
    space = get_search_space(name, SMALL_GQA)
    a = data.draw(subnetworks(SMALL_GQA, fine=space.fine, layerwise=space.layerwise))
    b = data.draw(subnetworks(SMALL_GQA, fine=space.fine, layerwise=space.layerwise))
    rng = random.Random(data.draw(st.integers(0, 2**32 - 1)))
    space.mutate(a, rng).resolve(SMALL_GQA)
    if a.n_layers == b.n_layers or not space.layerwise:
        space.crossover(a, b, rng).resolve(SMALL_GQA)
    assert space.count(a) == count_parameters(SMALL_GQA, a)


def test_single_member_space_cannot_mutate() -> None:
    cfg = SubnasConfig(num_hidden_layers=2)
    space = get_search_space("coarse-uniform", cfg, n_layers=2, n_embd=64, num_heads=4, head_size=16,
                             intermediate_size=256)
    assert space.size() == 1
    with pytest.raises(SearchSpaceError, match="single member"):
        space.mutate(space.sample(random.Random(0)), random.Random(0))


def test_spaces_are_search_spaces() -> None:
    for name in SPACES:
        assert isinstance(space_for(name, "gpt2"), SearchSpace)
