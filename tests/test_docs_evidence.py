"""Every number in the docs has evidence in the repository: the results files a page cites are
committed, and every benchmark page names the committed script that produced it.

A page that cites ``lr_sweep.json`` or ``benchmarks/results/tiny_targets.json`` must find that file
among the committed ones (``git ls-files``), looked up from the repository root, from the page's
folder, from ``benchmarks/``, or by name anywhere when the page gives no folder. Files that subnas
writes into a *user's* run folder (``results.json``, ``summary.json``, a ``runs/...`` path) name
outputs, not evidence, and are not checked.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# Names of results files: what a number in the docs can come from.
CITATION = re.compile(r"(?<![\w./-])([\w./-]*[\w-]\.(?:json|jsonl|csv))\b")
# What subnas (or a training or search run) writes for its user, named in the docs as outputs.
OUTPUTS = {"results.json", "summary.json", "config.json", "tokenizer.json", "tokenizer_config.json", "trials.json",
           "trials.csv", "log.csv", "subnet.json", "best.json", "bin0_best_subnet.json", "binN_best_subnet.json",
           "subnas_extract.json", "my_table.json", "generation_config.json",
           # a user's own files in the multi-GPU commands (their sub-network, their corpus) and the
           # file torch.distributed.checkpoint writes beside its shards
           "student.json", "corpus.jsonl", "state.json",
           # a multi-objective search's front and its points
           "pareto.json", "pointNN.json",
           # the unit order a trained supernet is written with
           "subnas_unit_order.json"}


def committed_files() -> set[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:  # an unpacked sdist: nothing says what is committed
        pytest.skip(f"not a git checkout ({exc}): cannot tell committed files apart")
    return {name for name in out.decode().split("\0") if name}


def doc_pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "examples" not in p.relative_to(DOCS).parts)


def citations(text: str) -> set[str]:
    """Results files a page names, less the outputs of a user's run."""
    found = set()
    for name in CITATION.findall(text):
        if name.startswith(("runs/", "./runs/")) or Path(name).name in OUTPUTS:
            continue
        found.add(name)
    return found


def is_committed(name: str, page: Path, committed: set[str]) -> bool:
    if "/" not in name:
        return any(Path(f).name == name for f in committed)
    folder = page.parent.relative_to(ROOT).as_posix()
    return any((Path(base) / name).as_posix() in committed for base in ("", folder, "benchmarks"))


def missing_citations(pages: dict[Path, str], committed: set[str]) -> list[str]:
    """``{page: text}`` -> one line per cited results file that is not committed."""
    return [f"{page.relative_to(ROOT)} cites {name}, which is not committed"
            for page, text in pages.items() for name in sorted(citations(text))
            if not is_committed(name, page, committed)]


def pages_without_script(pages: dict[Path, str], committed: set[str]) -> list[str]:
    """``{page: text}`` -> one line per page that names no committed ``benchmarks/*.py``."""
    return [f"{page.relative_to(ROOT)} names no committed benchmarks/*.py script"
            for page, text in pages.items() if not set(re.findall(r"benchmarks/[\w/]+\.py", text)) & committed]


def read(pages: list[Path]) -> dict[Path, str]:
    return {page: page.read_text(encoding="utf-8") for page in pages}


def test_every_results_file_a_docs_page_cites_is_committed() -> None:
    problems = missing_citations(read(doc_pages()), committed_files())
    assert not problems, "\n".join(problems)


def test_every_benchmark_page_names_the_script_that_produced_it() -> None:
    pages = sorted((DOCS / "benchmarks").glob("*.md"))
    assert pages
    problems = pages_without_script(read(pages), committed_files())
    assert not problems, "\n".join(problems)


def test_the_checks_catch_an_uncommitted_citation_and_a_page_without_script() -> None:
    page = DOCS / "benchmarks" / "made_up.md"  # never written: the checks read the text they are given
    committed = {"benchmarks/results/a.json", "docs/benchmarks/b.json", "benchmarks/tiny.py"}
    text = ("From `python benchmarks/tiny.py` into `benchmarks/results/a.json`, `b.json`, `results/a.json` and "
            "`docs/benchmarks/gone.json`; a run writes runs/x/results.json and summary.json.")
    assert citations(text) == {"benchmarks/results/a.json", "b.json", "results/a.json", "docs/benchmarks/gone.json"}
    assert missing_citations({page: text}, committed) == [
        "docs/benchmarks/made_up.md cites docs/benchmarks/gone.json, which is not committed"]
    assert pages_without_script({page: text}, committed) == []
    assert pages_without_script({page: "Numbers measured by hand; see benchmarks/gone.py."}, committed) == [
        "docs/benchmarks/made_up.md names no committed benchmarks/*.py script"]
