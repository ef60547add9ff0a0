"""The shape of the code (issue #12): no import cycles, every module importable on its own, the
module map in docs/concepts.md complete, every built-in an implementation of its interface."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import subnas
from subnas.interfaces import Extractor, Fitness, Sampler, SearchSpace
from subnas.lookups import sampler_strategy
from subnas.plugins import BUILTIN_PLUGINS, plugins_report, registry

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"subnas": ROOT / "subnas", "subnas_plugins": ROOT / "plugins"}


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of subnas and of the built-in plugins."""
    found = {}
    for prefix, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [prefix, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules it imports anywhere: at module level, inside functions and under
    ``if TYPE_CHECKING:`` (a circle the type checker sees is still a circle in the design), plus the
    packages whose ``__init__`` such an import runs first."""
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        pending = [ast.parse(path.read_text(encoding="utf-8"))]
        while pending:
            for node in ast.iter_child_nodes(pending.pop()):
                pending.append(node)
                if isinstance(node, ast.Import):
                    targets = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:
                        up = package.split(".")[: len(package.split(".")) - node.level + 1]
                        base = ".".join(up + ([base] if base else []))
                    # ``from pkg import mod`` imports the module; ``from mod import name`` the module.
                    targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
                else:
                    continue
                for target in targets:
                    parts = target.split(".")
                    for k in range(len(parts), 0, -1):
                        hit = ".".join(parts[:k])
                        if hit in mods:
                            graph[name].add(hit)
                            # Importing a.b.c runs a.b's __init__ first (unless we are inside a.b).
                            for j in range(2, k):
                                parent = ".".join(parts[:j])
                                if parent in mods and not name.startswith(parent + "."):
                                    graph[name].add(parent)
                            break
        graph[name].discard(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_no_import_cycles() -> None:
    graph = import_graph()
    found = cycles(graph)
    detail = "\n".join(f"{sorted(g)}: " + "; ".join(f"{a} -> {sorted(graph[a] & set(g))}" for a in g) for g in found)
    assert not found, (f"import cycles (function-local and `if TYPE_CHECKING:` imports included); type the "
                       f"argument with a small Protocol of what the lower module calls instead:\n{detail}")


def _below(graph: dict[str, set[str]], name: str) -> set[str]:
    """Every module ``name`` imports, directly or through others."""
    seen: set[str] = set()
    pending = [name]
    while pending:
        for imported in graph[pending.pop()] - seen:
            seen.add(imported)
            pending.append(imported)
    return seen


def test_contracts_sit_below_everything_that_uses_them() -> None:
    """The interfaces import only what no user of them imports back, and neither they nor the plugin
    manager reach the lookups above them (`subnas.lookups`, docs/design.md#architecture)."""
    graph = import_graph()
    below = _below(graph, "subnas.interfaces")
    above = {m for m in below if "subnas.interfaces" in _below(graph, m)}
    assert not above, f"subnas.interfaces imports modules that import it back: {sorted(above)}"
    users = {m for m, imported in graph.items() if "subnas.interfaces" in imported}
    assert not users & below, f"modules both below and above the contracts: {sorted(users & below)}"
    assert "subnas.lookups" not in below | _below(graph, "subnas.plugins")


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_every_module_imports_on_its_own() -> None:
    """A package ``__init__`` that re-exports can hide an order-dependent cycle: import each module
    first, in a process where no other subnas module is loaded yet (torch and transformers stay)."""
    names = sorted(m for m in modules() if not m.startswith("subnas_plugins") and not m.endswith("__main__"))
    script = (
        "import importlib, sys, traceback\n"
        "import torch, transformers, optuna  # the heavy imports, once\n"
        f"failed = []\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'subnas' or m.startswith(('subnas.', 'subnas_plugins'))]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        failed.append(name + ': ' + traceback.format_exc().strip().splitlines()[-1])\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]


def test_module_map_lists_every_module() -> None:
    """docs/concepts.md's module map names every module (and no module that does not exist)."""
    text = (ROOT / "docs" / "concepts.md").read_text(encoding="utf-8")
    section = text[text.index("## Where things live"):]
    section = section[: section.index("\n## ", 1)] if "\n## " in section[1:] else section
    listed = set(re.findall(r"`((?:subnas|plugins)/[\w/]*\.py)`", section))
    on_disk = {str(p.relative_to(ROOT)) for p in modules().values()}
    assert on_disk - listed == set(), "modules missing from the map in docs/concepts.md"
    assert listed - on_disk == set(), "the map in docs/concepts.md names modules that do not exist"


@pytest.mark.parametrize("kind, interface", [("search_spaces", SearchSpace), ("fitness", Fitness),
                                             ("extractors", Extractor)])
def test_builtins_implement_their_interface(kind: str, interface: type) -> None:
    builtin = {n for p in plugins_report() if p["name"] in BUILTIN_PLUGINS for n in p["registers"][kind]}
    assert builtin, f"no built-in {kind}"
    for name in builtin:
        factory = registry(kind)[name]
        assert isinstance(factory, type) and issubclass(factory, interface), f"{kind} {name!r}: {factory!r}"


def test_every_builtin_sampler_is_a_sampler_with_one_signature() -> None:
    builtin = {n for p in plugins_report() if p["name"] in BUILTIN_PLUGINS for n in p["registers"]["samplers"]}
    assert {"evolution", "random", "tpe", "nsga2"} <= builtin
    space = subnas.get_search_space("coarse-uniform", subnas.SubnasConfig(num_hidden_layers=4))
    lo, hi = space.bounds()
    for name in builtin:
        assert isinstance(registry("samplers")[name], Sampler), name
        # The same call builds every one of them; only evolution counts its budget in epochs.
        sampler = sampler_strategy(name)(space, subnas.ParameterBin(lo, hi), seed=0)
        assert sampler is not None and sampler_strategy(name).takes_epochs == (name == "evolution")
