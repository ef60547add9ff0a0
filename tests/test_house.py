"""The house rules (issue #25): the repository explains itself, plugins use only the public API,
and every extension point has a caller."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / name for name in out.split()]


def test_nothing_cites_a_file_outside_the_repository() -> None:
    """The design lives in docs/design.md; no file points at a brief that is not in the repository."""
    outside = re.compile(r"DESIGN\.md|DEVELOPERS\.md|\.\./shared/")
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in _tracked() if p.suffix in (".py", ".md", ".toml", ".yml", ".cfg")
                 for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if outside.search(line)]
    assert not offenders, offenders
    assert (ROOT / "docs" / "design.md").is_file() and "design.md" in (ROOT / "mkdocs.yml").read_text()


def _subnas_imports(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) of every ``from subnas... import name`` in ``path``, function-local ones too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "subnas":
            found += [(node.lineno, node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, "") for alias in node.names if alias.name.split(".")[0] == "subnas"]
    return found


def test_built_in_plugins_use_only_the_public_api() -> None:
    """What a third-party plugin can import is what the built-in ones import: no private module
    (``subnas.x._y``) and no private name."""
    offenders = [f"plugins/{p.name}:{line}: {module} {name}".strip() for p in sorted((ROOT / "plugins").glob("*.py"))
                 for line, module, name in _subnas_imports(p)
                 if any(part.startswith("_") for part in module.split(".")) or name.startswith("_")]
    assert not offenders, offenders


def test_every_interface_has_a_caller_in_subnas() -> None:
    """An interface nothing calls is a promise the project does not keep: each abstract method of
    each interface is called somewhere in subnas/ outside interfaces.py."""
    import inspect

    import subnas.interfaces as interfaces

    core = "\n".join(p.read_text() for p in (ROOT / "subnas").rglob("*.py") if p.name != "interfaces.py")
    missing = []
    for name, cls in vars(interfaces).items():
        if inspect.isclass(cls) and cls.__module__ == interfaces.__name__ and inspect.isabstract(cls):
            for method in cls.__abstractmethods__:
                called = f".{method}(" in core or (method == "__call__" and re.search(r"\bfitness\(|score\(", core))
                if not called:
                    missing.append(f"{name}.{method}")
    assert not missing, missing


def test_every_subpackage_is_installed() -> None:
    """pyproject.toml lists its packages explicitly: a new subpackage missing there works in an
    editable checkout and is absent from a wheel."""
    block = re.search(r"^packages = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), flags=re.S | re.M)
    assert block, "pyproject.toml lists its packages"  # (tomllib is Python 3.11+; the project runs on 3.10)
    listed = set(re.findall(r'"([\w.]+)"', block.group(1)))
    found = {"subnas." + p.parent.relative_to(ROOT / "subnas").as_posix().replace("/", ".")
             for p in (ROOT / "subnas").rglob("__init__.py") if p.parent != ROOT / "subnas"}
    assert found <= listed, sorted(found - listed)


def test_no_top_level_name_hides_a_module() -> None:
    """``import subnas.x as m`` gives the module ``subnas.x``: no name re-exported by the package
    shadows a submodule of the same name (``subnas.search`` is the function; its module is
    `subnas.search_driver`)."""
    import importlib
    import pkgutil

    import subnas

    hidden = []
    for info in pkgutil.iter_modules(subnas.__path__):
        if info.name == "__main__":
            continue
        module = importlib.import_module(f"subnas.{info.name}")
        if getattr(subnas, info.name, module) is not module:
            hidden.append(f"subnas.{info.name} is {getattr(subnas, info.name)!r}, not the module")
    assert not hidden, hidden
