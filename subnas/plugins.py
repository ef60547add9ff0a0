"""The plugin manager: built-in plugins plus third-party ones from the ``subnas`` entry-point group.

Built-ins are ordinary plugins (as in simonw/llm): the modules of ``subnas_plugins`` implement the
same hooks (`subnas.hookspecs`) a third-party package does. Plugins load on the first lookup.

Environment variables:
    ``SUBNAS_LOAD_PLUGINS=a,b``: load only these third-party plugins (distribution or entry-point
    names; set but empty: none). Built-ins always load.
    ``SUBNAS_DISABLE_EXTERNAL_PLUGINS=1``: load no third-party plugin.

A plugin that fails to load is skipped with a warning and listed with its error in
`plugins_report`; a name registered twice is an error naming both packages, raised only when that
name is looked up, so unrelated commands keep working.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable

import pluggy

from subnas import hookspecs

BUILTIN_PLUGINS = ("subnas_plugins.spaces", "subnas_plugins.samplers", "subnas_plugins.evolution",
                   "subnas_plugins.fitness", "subnas_plugins.extractors", "subnas_plugins.benchmark_fitness",
                   "subnas_plugins.families",
                   "subnas_plugins.metrics", "subnas_plugins.mo_evolution", "subnas_plugins.strategies")
KINDS = {"search_spaces": "search space", "samplers": "sampler", "fitness": "fitness function",
         "extractors": "extractor", "model_families": "model family", "metrics": "metric",
         "training_strategies": "training strategy"}


class PluginError(Exception):
    """A plugin problem: unknown or duplicate name, or a plugin that returned the wrong type."""


class UnknownNameError(PluginError, KeyError):
    """No plugin registered this name (the message lists the registered ones)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateNameError(PluginError):
    """Two plugins registered the same name (the message names both packages)."""


@dataclass
class PluginInfo:
    name: str
    package: str
    version: str | None
    load_error: str | None = None
    error: str | None = None  # the load error, or a registration problem found later
    registers: dict[str, list[str]] = field(default_factory=lambda: {kind: [] for kind in KINDS})


class Registry(Mapping[str, Any]):
    """Names of one kind (``"search_spaces"``, ...) -> what the plugins registered under them."""

    def __init__(self, kind: str) -> None:
        self.kind, self._items, self._owners, self._conflicts = kind, {}, {}, {}  # type: ignore[var-annotated]

    def add(self, name: str, obj: Any, owner: PluginInfo) -> None:
        owner.registers[self.kind].append(name)
        first = self._owners.get(name)
        if first is None:
            self._items[name], self._owners[name] = obj, owner
            return
        message = (f"{KINDS[self.kind]} {name!r} is registered twice: by package {first.package!r} (plugin "
                   f"{first.name!r}) and by package {owner.package!r} (plugin {owner.name!r}); uninstall one "
                   f"or choose with SUBNAS_LOAD_PLUGINS")
        self._conflicts[name] = owner.error = message
        warnings.warn(message, stacklevel=3)

    def __getitem__(self, name: str) -> Any:
        if name in self._conflicts:
            raise DuplicateNameError(self._conflicts[name])
        if name not in self._items:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise UnknownNameError(f"unknown {KINDS[self.kind]} {name!r}; registered: {known}")
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


_pm: pluggy.PluginManager | None = None
_infos: dict[str, PluginInfo] = {}
_registries: dict[str, Registry] = {}
_registered: list[str] = []  # the plugins the cached registries were built from


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _add(pm: pluggy.PluginManager, info: PluginInfo, load: Callable[[], object]) -> None:
    if info.name in _infos:
        other = _infos[info.name]
        info.load_error = info.error = (f"plugin name {info.name!r} is used by package {other.package!r} and "
                                        f"package {info.package!r}")
        _infos[f"{info.name} ({info.package})"] = info
        warnings.warn(info.error, stacklevel=3)
        return
    _infos[info.name] = info
    try:
        pm.register(load(), name=info.name)
        pm.check_pending()  # a hook name that matches no hookspec (a typo) is this plugin's error
    except Exception as exc:
        if pm.has_plugin(info.name):
            pm.unregister(name=info.name)
        info.load_error = info.error = f"{type(exc).__name__}: {exc}"
        warnings.warn(f"subnas plugin {info.name!r} (package {info.package!r}) failed to load and is skipped: "
                      f"{info.error}", stacklevel=3)


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, loading the plugins on first use."""
    global _pm
    if _pm is not None:
        return _pm
    _pm = pm = pluggy.PluginManager("subnas")
    pm.add_hookspecs(hookspecs)
    version = metadata.version("subnas")
    for module in BUILTIN_PLUGINS:
        _add(pm, PluginInfo(module, "subnas", version), lambda module=module: importlib.import_module(module))
    if os.environ.get("SUBNAS_DISABLE_EXTERNAL_PLUGINS", "") not in ("", "0"):
        return pm
    allow = os.environ.get("SUBNAS_LOAD_PLUGINS")
    wanted = None if allow is None else {_norm(n) for n in allow.split(",") if n.strip()}
    for ep in sorted(metadata.entry_points(group="subnas"), key=lambda ep: ep.name):
        package = ep.dist.name if ep.dist is not None else ep.module.split(".")[0]
        if wanted is None or {_norm(ep.name), _norm(package)} & wanted:
            _add(pm, PluginInfo(ep.name, package, ep.dist.version if ep.dist else None), ep.load)
    return pm


def reset_plugins() -> None:
    """Forget the loaded plugins; the next lookup loads them again (tests, changed environment)."""
    global _pm
    _pm = None
    _infos.clear()
    _registries.clear()
    _registered.clear()


def _info(name: str, plugin: object) -> PluginInfo:
    """Loaded plugins have an info; one registered directly (``pm.register(obj)``) gets one here."""
    if name not in _infos:
        module = getattr(plugin, "__name__", None) or type(plugin).__module__
        _infos[name] = PluginInfo(name, module.split(".")[0], None)
    return _infos[name]


def registry(kind: str) -> Registry:
    """Everything the loaded plugins registered of one kind (a key of `KINDS`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown plugin kind {kind!r}; kinds: {', '.join(KINDS)}")
    pm = get_plugin_manager()
    names = [name for name, _ in pm.list_name_plugin()]
    if names != _registered:  # a plugin was (un)registered since: rebuild every kind
        _registries.clear()
        _registered[:] = names
        for info in _infos.values():
            info.error, info.registers = info.load_error, PluginInfo("", "", None).registers
    if kind in _registries:
        return _registries[kind]
    reg = _registries[kind] = Registry(kind)
    # Each implementation is called on its own, so every name is attributed to its plugin.
    for impl in getattr(pm.hook, f"register_{kind}").get_hookimpls():
        owner = _info(impl.plugin_name, impl.plugin)
        if kind == "model_families":
            def register(family: Any, owner: PluginInfo = owner) -> None:
                for model_type in family.model_types:
                    reg.add(model_type, family, owner)
        else:
            def register(name: str, factory: Any, owner: PluginInfo = owner) -> None:
                reg.add(name, factory, owner)
        try:
            impl.function(register=register)
        except Exception as exc:
            owner.error = f"register_{kind} failed: {type(exc).__name__}: {exc}"
            warnings.warn(f"subnas plugin {owner.name!r}: {owner.error}", stacklevel=2)
    return reg


def plugins_report() -> list[dict[str, Any]]:
    """One dict per plugin: name, version, package, registers (names by kind), error (None or text).

    Example:
        >>> [p["name"] for p in plugins_report() if p["package"] == "subnas"][:2]
        ['subnas_plugins.spaces', 'subnas_plugins.samplers']
    """
    for kind in KINDS:
        registry(kind)
    live = set(_registered)  # plus those that failed to load, below
    return [{"name": i.name, "version": i.version, "package": i.package,
             "registers": {kind: sorted(names) for kind, names in i.registers.items()}, "error": i.error}
            for i in _infos.values() if i.name in live or i.load_error]


def build(kind: str, name: str, expected: type, *args: Any, adapt: Callable[[Any], Any] | None = None,
          **kwargs: Any) -> Any:
    """Call what a plugin registered as ``name`` (through ``adapt`` when given) and check that it
    made an ``expected`` (the lookups of `subnas.interfaces` use this)."""
    factory = registry(kind)[name]
    obj = (adapt(factory) if adapt is not None else factory)(*args, **kwargs)
    if not isinstance(obj, expected):
        owner = registry(kind)._owners[name]
        raise PluginError(f"{KINDS[kind]} {name!r} from package {owner.package!r} made a {type(obj).__name__}, "
                          f"not a {expected.__name__}")
    return obj
