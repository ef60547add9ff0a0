"""The documentation builds without warnings, the CLI reference is current, and its code runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_cli_reference_is_current() -> None:
    sys.path.insert(0, str(DOCS))
    try:
        from gen_cli import render
    finally:
        sys.path.remove(str(DOCS))
    assert (DOCS / "cli.md").read_text() == render(), "docs/cli.md is stale: run python docs/gen_cli.py"


def test_docs_build_strict(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


@pytest.mark.integration
@pytest.mark.parametrize("page", ["index.md", "search.md"])
def test_code_examples_run(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Python example of these pages runs as written (on the real default model)."""
    monkeypatch.chdir(tmp_path)
    for block in python_blocks(DOCS / page):
        # Keep the doc's own budget small enough for CI: the search example's n_trials.
        exec(compile(block.replace("n_trials=30", "n_trials=3"), f"{page}", "exec"), {})
