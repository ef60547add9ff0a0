"""The plugin system: hooks, the manager, lookups by name, the report, and the example package."""

from __future__ import annotations

import importlib.util
import inspect
import json
import random
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import optuna
import pytest
from transformers import PretrainedConfig

import subnas
from subnas import SubnasConfig, SubNetwork, hookspecs
from subnas.families import ModelFamily, family_for, known_model_types, load_config
from subnas.interfaces import ExtractResult, Extractor, Fitness, SearchSpace
from subnas.plugins import (
    KINDS,
    DuplicateNameError,
    PluginError,
    UnknownNameError,
    get_plugin_manager,
    plugins_report,
    registry,
    reset_plugins,
)
from subnas_plugins.spaces import CoarseUniformSpace
from subnas_plugins.strategies import StandardStrategy

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "subnas-example-plugin"
HOOKS = sorted(name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("register_"))
CONFIG = SubnasConfig(vocab_size=100, hidden_size=32, num_hidden_layers=6, num_attention_heads=4, intermediate_size=64)


@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Every test loads the plugins afresh, in an environment without the selection variables."""
    monkeypatch.delenv("SUBNAS_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("SUBNAS_DISABLE_EXTERNAL_PLUGINS", raising=False)
    reset_plugins()
    yield
    reset_plugins()


def fake_install(site: Path, monkeypatch: pytest.MonkeyPatch, package: str, entry_points: dict[str, str],
                 modules: dict[str, str] | None = None, version: str = "0.1.0") -> None:
    """What ``pip install`` leaves behind, without pip: a ``.dist-info`` with the package's entry
    points (found by `importlib.metadata` on ``sys.path``) and its modules."""
    info = site / f"{package.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text("[subnas]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    for name, source in (modules or {}).items():
        (site / f"{name}.py").write_text(source)
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(site))


def install_example(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The example package, with the entry points its own pyproject.toml declares."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    fake_install(site, monkeypatch, project["name"], project["entry-points"]["subnas"],
                 {"subnas_depth_only": (EXAMPLE / "subnas_depth_only.py").read_text()}, project["version"])


def report_by_name() -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in plugins_report()}


def run_example_tests() -> None:
    """The example package's own tests, run here against the installed copy."""
    spec = importlib.util.spec_from_file_location("example_plugin_tests", EXAMPLE / "tests" / "test_depth_only.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tests = [f for name, f in vars(module).items() if name.startswith("test_")]
    assert tests
    for test in tests:
        test()


# --------------------------------------------------------------------------- built-ins and lookups


def test_builtins_are_ordinary_plugins() -> None:
    report = report_by_name()
    assert report["subnas_plugins.spaces"]["registers"]["search_spaces"] == sorted(
        ["coarse-uniform", "coarse-layerwise", "fine-uniform", "fine-layerwise"])
    assert report["subnas_plugins.samplers"]["registers"]["samplers"] == ["nsga2", "nsga3", "random", "tpe"]
    assert report["subnas_plugins.mo_evolution"]["registers"]["samplers"] == ["mo-evolution"]
    assert report["subnas_plugins.metrics"]["registers"]["metrics"] == sorted(
        ["params", "flops", "weight-bytes", "kv-bytes", "latency", "decode-latency"])
    families = report["subnas_plugins.families"]["registers"]["model_families"]
    assert {"llama", "gpt_neox", "gpt2", "gemma3_text", "qwen2"} <= set(families)
    for entry in report.values():
        assert set(entry) == {"name", "version", "package", "registers", "error"}
        assert set(entry["registers"]) == set(KINDS)
        if entry["package"] == "subnas":
            assert entry["error"] is None and entry["version"] == subnas.__version__
    json.dumps(plugins_report())  # what `subnas plugins --json` prints


def test_lookup_by_name() -> None:
    assert isinstance(subnas.get_search_space("fine-layerwise", CONFIG), SearchSpace)
    assert type(subnas.get_search_space("coarse-uniform", CONFIG)) is CoarseUniformSpace
    for name, cls in (("random", optuna.samplers.RandomSampler), ("tpe", optuna.samplers.TPESampler),
                      ("nsga2", optuna.samplers.NSGAIISampler)):
        assert type(subnas.get_sampler(name, seed=0)) is cls
    # Options reach the factory: two seeded samplers make the same study.
    params = []
    for _ in range(2):
        study = optuna.create_study(sampler=subnas.get_sampler("tpe", seed=7))
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
        params.append([t.params for t in study.trials])
    assert params[0] == params[1]


@pytest.mark.parametrize("kind, lookup", [
    ("search_spaces", lambda name: subnas.get_search_space(name, CONFIG)),
    ("samplers", subnas.get_sampler),
    ("fitness", subnas.get_fitness),
    ("extractors", subnas.get_extractor),
])
def test_unknown_names_list_the_known_ones(kind: str, lookup: Any) -> None:
    with pytest.raises(UnknownNameError) as err:
        lookup("no-such-thing")
    message = str(err.value)
    assert "'no-such-thing'" in message and KINDS[kind] in message
    assert all(name in message for name in registry(kind)) and (registry(kind) or "(none)" in message)


# --------------------------------------------------------------------------- a plugin defined in a test


class ParamCountFitness(Fitness):
    """Fitness = parameter count (a stand-in for perplexity)."""

    def __init__(self, config: Any) -> None:
        self.config = config

    def __call__(self, subnet: SubNetwork) -> float:
        return float(subnas.count_parameters(self.config, subnet))


class JsonExtractor(Extractor):
    """Writes only the sub-network's definition (a stand-in for an extractor of another format)."""

    def extract(self, supernet: Any, subnet: SubNetwork | None, out_dir: Any, *,
                overwrite: bool = False) -> ExtractResult:
        Path(out_dir).mkdir(parents=True, exist_ok=overwrite)
        (subnet or SubNetwork()).save(Path(out_dir) / "subnetwork.json")
        n = 0 if supernet is None else supernet.count_parameters(subnet)
        return ExtractResult(path=str(out_dir), format="json", architecture="none", num_parameters=n, reason=None)


class ToyConfig(PretrainedConfig):  # type: ignore[misc]
    model_type = "toy-arch"


class ToyFamily(ModelFamily):
    model_types = ("toy-arch",)

    def to_subnas_config(self, hf_config: Any) -> SubnasConfig:
        return CONFIG

    def to_subnas_state(self, hf_state: Any, config: Any) -> Any:
        raise NotImplementedError

    def to_hf(self, sub: Any, state: Any, hf_config: Any) -> Any:
        raise NotImplementedError


class LayersMetric(subnas.interfaces.Metric):
    unit = "layers"

    def __call__(self, subnet: SubNetwork | None) -> float:
        return float(len((subnet or SubNetwork()).resolve(self.config).layers))


class SmallCoarseSpace(CoarseUniformSpace):
    name = "small-coarse"


class ToyPlugin:
    """Implements every hook (the meta-test below checks that it does)."""

    @subnas.hookimpl
    def register_search_spaces(self, register: Any) -> None:
        register("small-coarse", SmallCoarseSpace)

    @subnas.hookimpl
    def register_samplers(self, register: Any) -> None:
        register("seeded-random", lambda seed=0: optuna.samplers.RandomSampler(seed=seed))

    @subnas.hookimpl
    def register_fitness(self, register: Any) -> None:
        register("param-count", ParamCountFitness)
        register("broken-fitness", lambda **kw: 42)

    @subnas.hookimpl
    def register_extractors(self, register: Any) -> None:
        register("json", JsonExtractor)

    @subnas.hookimpl
    def register_model_families(self, register: Any) -> None:
        register(ToyFamily())

    @subnas.hookimpl
    def register_metrics(self, register: Any) -> None:
        register("layers", LayersMetric)

    @subnas.hookimpl
    def register_training_strategies(self, register: Any) -> None:
        register("largest-only", StandardStrategy)


@pytest.fixture
def toy_plugin() -> Any:
    pm = get_plugin_manager()
    plugins_report()  # registries built before the plugin arrives must notice it
    pm.register(ToyPlugin(), name="toy")
    yield
    pm.unregister(name="toy")


def test_plugin_registered_inside_a_test(toy_plugin: Any, tmp_path: Path) -> None:
    space = subnas.get_search_space("small-coarse", CONFIG, n_layers=[2, 3])
    s = space.sample(random.Random(0))
    assert s.n_layers in (2, 3)
    assert type(subnas.get_sampler("seeded-random", seed=0)) is optuna.samplers.RandomSampler
    assert subnas.get_metric("layers", CONFIG)(SubNetwork(n_layers=2)) == 2.0
    fitness = subnas.get_fitness("param-count", config=CONFIG)
    assert fitness.direction == "minimize" and fitness(s) == subnas.count_parameters(CONFIG, s)
    out = subnas.get_extractor("json").extract(None, s, tmp_path / "out")
    assert SubNetwork.load(Path(out.path) / "subnetwork.json") == s
    assert isinstance(family_for("toy-arch"), ToyFamily) and "toy-arch" in known_model_types()
    assert load_config(ToyConfig()) is CONFIG
    assert isinstance(subnas.get_training_strategy("largest-only"), StandardStrategy)
    with pytest.raises(PluginError, match="made a int, not a Fitness"):
        subnas.get_fitness("broken-fitness")
    toy = report_by_name()["toy"]
    assert toy["registers"] == {"search_spaces": ["small-coarse"], "samplers": ["seeded-random"],
                                "fitness": ["broken-fitness", "param-count"], "extractors": ["json"],
                                "model_families": ["toy-arch"], "metrics": ["layers"],
                                "training_strategies": ["largest-only"]}
    assert toy["package"] == "tests"


def test_unregistered_plugin_is_gone(toy_plugin: Any) -> None:
    assert "small-coarse" in registry("search_spaces")
    get_plugin_manager().unregister(name="toy")
    assert "small-coarse" not in registry("search_spaces") and "toy" not in report_by_name()
    get_plugin_manager().register(ToyPlugin(), name="toy")  # for the fixture's teardown


# --------------------------------------------------------------------------- third-party packages

TWIN = '''
import subnas
from subnas_plugins.spaces import CoarseUniformSpace

@subnas.hookimpl
def register_search_spaces(register):
    register("twin", CoarseUniformSpace)
    register("{extra}", CoarseUniformSpace)
'''


def test_duplicate_names_name_both_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_install(tmp_path / "a", monkeypatch, "pkg-alpha", {"alpha": "twin_alpha"},
                 {"twin_alpha": TWIN.format(extra="alpha-only")})
    fake_install(tmp_path / "b", monkeypatch, "pkg-beta", {"beta": "twin_beta"},
                 {"twin_beta": TWIN.format(extra="coarse-uniform")})
    with pytest.warns(UserWarning, match="registered twice"):
        report = report_by_name()
    for name in ("twin", "coarse-uniform"):
        with pytest.raises(DuplicateNameError) as err:
            subnas.get_search_space(name, CONFIG)
        assert "'pkg-beta'" in str(err.value)
        assert ("'pkg-alpha'" if name == "twin" else "'subnas'") in str(err.value)
    # Unrelated names keep working; the duplicate is on the later package's report entry.
    assert isinstance(subnas.get_search_space("alpha-only", CONFIG), SearchSpace)
    assert isinstance(subnas.get_search_space("fine-uniform", CONFIG), SearchSpace)
    assert "registered twice" in report["beta"]["error"] and report["alpha"]["error"] is None


def test_family_reusing_a_builtin_model_type_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = '''
import subnas
from subnas.families import family_for

@subnas.hookimpl
def register_model_families(register):
    register(type("MyLlama", (type(family_for("llama")),), {})())
'''
    fake_install(tmp_path, monkeypatch, "pkg-llama", {"myllama": "my_llama"}, {"my_llama": source})
    with pytest.warns(UserWarning, match="model family 'llama' is registered twice"):
        report = report_by_name()
    assert "'pkg-llama'" in report["myllama"]["error"]
    # One duplicate rule for every kind: the name is ambiguous, and looking it up says so, naming
    # both packages and the fix (never a silent choice between the two families).
    with pytest.raises(DuplicateNameError, match="'subnas'.*'pkg-llama'.*SUBNAS_LOAD_PLUGINS"):
        family_for("llama")
    with monkeypatch.context() as m:  # the fix the message names: load without the plugin
        m.setenv("SUBNAS_LOAD_PLUGINS", "")
        reset_plugins()
        assert type(family_for("llama")).__name__ == "LlamaLikeFamily"
    assert type(family_for("gpt2")).__name__ == "GPT2Family"  # unrelated families keep working


BROKEN = {
    "import_fails": "raise ImportError('needs libfoo, which is not installed')\n",
    "hook_typo": "import subnas\n\n@subnas.hookimpl\ndef register_serch_spaces(register):\n    pass\n",
    "hook_raises": ("import subnas\n\n@subnas.hookimpl\ndef register_samplers(register):\n"
                    "    raise RuntimeError('boom')\n"),
}


def test_broken_plugins_are_reported_and_do_not_break_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, source in BROKEN.items():
        fake_install(tmp_path / name, monkeypatch, f"pkg-{name.replace('_', '-')}", {name: f"mod_{name}"},
                     {f"mod_{name}": source})
    install_example(tmp_path / "example", monkeypatch)
    with pytest.warns(UserWarning) as warned:
        report = report_by_name()
    assert "libfoo" in report["import_fails"]["error"]
    assert any("'import_fails' (package 'pkg-import-fails')" in str(w.message) for w in warned)
    assert "register_serch_spaces" in report["hook_typo"]["error"]
    assert "boom" in report["hook_raises"]["error"]
    assert report["depth_only"]["error"] is None
    assert isinstance(subnas.get_search_space("depth-only", CONFIG), SearchSpace)
    assert isinstance(subnas.get_sampler("random"), optuna.samplers.RandomSampler)
    assert family_for("llama") is not None


# --------------------------------------------------------------------------- the example package


def test_example_plugin_through_its_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_example(tmp_path, monkeypatch)
    entry = report_by_name()["depth_only"]
    assert entry == {"name": "depth_only", "version": "0.1.0", "package": "subnas-example-plugin",
                     "registers": {kind: (["depth-only"] if kind == "search_spaces" else []) for kind in KINDS},
                     "error": None}
    space = subnas.get_search_space("depth-only", CONFIG, n_layers=[2, 4])
    assert space.sample(random.Random(0)).n_layers in (2, 4)
    run_example_tests()


@pytest.mark.parametrize("setting, loaded", [
    ({}, True),
    ({"SUBNAS_DISABLE_EXTERNAL_PLUGINS": "1"}, False),
    ({"SUBNAS_LOAD_PLUGINS": "some-other-plugin"}, False),
    ({"SUBNAS_LOAD_PLUGINS": ""}, False),
    ({"SUBNAS_LOAD_PLUGINS": "subnas-example-plugin"}, True),
    ({"SUBNAS_LOAD_PLUGINS": "other, depth_only"}, True),
])
def test_environment_selects_plugins(setting: dict[str, str], loaded: bool, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    install_example(tmp_path, monkeypatch)
    for key, value in setting.items():
        monkeypatch.setenv(key, value)
    report = report_by_name()
    assert ("depth_only" in report) is loaded
    assert "subnas_plugins.spaces" in report  # built-ins always load


@pytest.mark.slow
def test_example_plugin_real_pip_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real build and install of the example package (no network: --no-index, --no-deps, the
    # current environment's setuptools), into a folder put on sys.path.
    source, site = tmp_path / "src", tmp_path / "site"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--no-build-isolation", "--target", str(site), str(source)], check=True)
    assert "depth_only = subnas_depth_only" in next(site.glob("*.dist-info/entry_points.txt")).read_text()
    monkeypatch.delitem(sys.modules, "subnas_depth_only", raising=False)
    monkeypatch.syspath_prepend(str(site))
    assert report_by_name()["depth_only"]["version"] == "0.1.0"
    assert Path(sys.modules["subnas_depth_only"].__file__).parent == site  # type: ignore[arg-type]
    run_example_tests()


# --------------------------------------------------------------------------- meta-tests


def test_every_hook_has_a_documented_signature() -> None:
    docs = (ROOT / "docs" / "plugins.md").read_text()
    assert HOOKS == ["register_extractors", "register_fitness", "register_metrics", "register_model_families",
                     "register_samplers", "register_search_spaces", "register_training_strategies"]
    for name in HOOKS:
        spec = getattr(hookspecs, name)
        assert list(inspect.signature(spec).parameters) == ["register"]
        doc = inspect.getdoc(spec) or ""
        assert "\n" not in doc and "register(" in doc, f"{name}: one-line docstring with an example"
        assert f"`{name}(register)`" in docs, f"docs/plugins.md does not document {name}"


def test_every_hook_is_tested() -> None:
    # ToyPlugin implements every hook and test_plugin_registered_inside_a_test uses what each one
    # registers; the example package covers register_search_spaces through a real entry point.
    implemented = sorted(name for name in vars(ToyPlugin) if name.startswith("register_"))
    assert implemented == HOOKS
    body = inspect.getsource(test_plugin_registered_inside_a_test)
    for lookup in ("get_search_space", "get_sampler", "get_fitness", "get_extractor", "family_for", "get_metric",
                   "get_training_strategy"):
        assert lookup in body


def test_subnas_extract_goes_through_the_registered_extractor(toy_plugin: Any, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`subnas extract --extractor NAME` calls the plugin's extractor (the registry is the one way
    a model is written), and reports what it returned."""
    from subnas.cli import main
    from tests._train_helpers import tiny_model_dir

    (tmp_path / "s.json").write_text('{"n_layers": 1}')
    model = tiny_model_dir(tmp_path)
    assert main(["extract", str(model), "--subnet", str(tmp_path / "s.json"), "--out", str(tmp_path / "x"),
                 "--extractor", "json"]) == 0
    assert "[json format]" in capsys.readouterr().out
    assert SubNetwork.load(tmp_path / "x" / "subnetwork.json") == SubNetwork(n_layers=1)
    assert main(["extract", str(model), "--subnet", str(tmp_path / "s.json"), "--out", str(tmp_path / "y"),
                 "--extractor", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
