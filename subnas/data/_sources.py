"""The ``--data`` grammar: one parser (`parse_text_source`) and the two ways to read what it names.

Accepted forms:

- ``default`` / ``default:SPLIT``: the offline default corpus (`subnas.data.default_corpus`);
  SPLIT is ``train``, ``validation``, ``search``, ``calibration`` or ``test`` (held out for
  headline numbers only; see `subnas.data.Corpus`).
- ``FILE.txt``: the whole file is one document. Blank lines in prose are paragraph breaks, not
  document boundaries, so splitting on them would insert end-of-text tokens inside articles.
- ``FOLDER``: every ``*.txt`` file in it (sorted by name) is one document.
- ``FILE.json|.jsonl|.parquet|.csv[:COLUMN]``: one document per row, from ``COLUMN`` (default
  ``text``), read with ``datasets.load_dataset``.
- ``NAME[:CONFIG[:SPLIT[:COLUMN]]]``: a dataset on the Hugging Face Hub (needs internet), e.g.
  ``wikitext:wikitext-2-raw-v1:test``. Each row is a document, so line-per-row datasets such as
  wikitext get an end-of-text token between lines when packed.

Without a split, evaluation reads ``default:validation`` and a dataset's validation split (else
test, else train); training reads the train split (`TextSource.with_default_split`).
`resolve_text_source` reads a source whole; `stream_text_source` reads table files and datasets row
by row (``datasets`` streaming) and the small kinds whole. Both drop empty documents.

Example:
    >>> parse_text_source("wikitext:wikitext-2-raw-v1").with_default_split("train").spec
    'wikitext:wikitext-2-raw-v1:train'
    >>> parse_text_source("default").kind
    'default'
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Iterator

from subnas.data import _assets
from subnas.data._assets import Corpus, DataSourceError

__all__ = ["DEFAULT_COLUMN", "TABLE_FORMATS", "TextSource", "parse_text_source", "resolve_text_source",
           "stream_text_source"]

TABLE_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
DEFAULT_COLUMN = "text"


@dataclass(frozen=True)
class TextSource:
    """A parsed ``--data`` value.

    Attributes:
        kind: ``"default"`` (the default corpus), ``"file"`` (a .txt file), ``"folder"`` (of .txt
            files), ``"table"`` (a .json/.jsonl/.parquet/.csv file) or ``"dataset"`` (a Hub name).
        spec: the value as given (or with its split filled in); names the source in messages and
            identifies a streamed source in the token cache.
        path: the local file or folder (file, folder, table).
        name: the dataset name (dataset).
        config: the dataset's configuration (dataset; ``None``: not given).
        split: the default corpus's or the dataset's split (``None``: not given).
        column: the column holding the text (table, dataset; ``None``: ``text``).
    """

    kind: str
    spec: str
    path: Path | None = None
    name: str = ""
    config: str | None = None
    split: str | None = None
    column: str | None = None

    def with_default_split(self, split: str) -> TextSource:
        """This source with ``split`` where it names none (the default corpus and datasets only).

        Example:
            >>> parse_text_source("default").with_default_split("train").spec
            'default:train'
        """
        if self.kind not in ("default", "dataset") or self.split:
            return self
        if self.kind == "default":
            return replace(self, split=split, spec=f"default:{split}")
        parts = [self.name, self.config or "", split] + ([self.column] if self.column else [])
        return replace(self, split=split, spec=":".join(parts))

    @property
    def streamable(self) -> bool:
        """Whether `stream_text_source` reads it row by row (the other kinds are small and read whole)."""
        return self.kind in ("table", "dataset")

    def stamp(self) -> str:
        """What identifies the source's text without reading it: its spec, plus size and mtime of a
        local file or folder."""
        if self.path is None:
            return self.spec
        st = self.path.stat()
        return f"{self.spec}|{self.path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def parse_text_source(spec: str | os.PathLike[str] | TextSource) -> TextSource:
    """The `TextSource` a ``--data`` value names (see the module docstring for the forms).

    Nothing is read except the file system's answer to "does this path exist".

    Raises:
        FileNotFoundError: a path (by its suffix or a leading ``/``, ``./``, ``../``, ``~``) that
            does not exist.
        DataSourceError: an unknown split of the default corpus, a column on a .txt file or a
            folder, an unsupported file type, or a value that is none of the forms.
    """
    if isinstance(spec, TextSource):
        return spec
    text = str(spec)
    if text == "default" or text.startswith("default:"):
        split = text.partition(":")[2]
        if split and split not in Corpus.SPLITS:
            raise DataSourceError(f"unknown split {split!r} of the default corpus; use one of "
                                  + ", ".join(f"default:{s}" for s in Corpus.SPLITS))
        return TextSource("default", text, name="default", split=split or None)
    local = _local_path(text)
    if local is None:
        parts = text.split(":")
        if len(parts) > 4 or not parts[0]:
            raise DataSourceError(f"cannot parse --data {text!r}: expected 'default', a local file, or "
                                  "NAME[:CONFIG[:SPLIT[:COLUMN]]]")
        name, config, split, column = (parts + ["", "", ""])[:4]
        return TextSource("dataset", text, name=name, config=config or None, split=split or None,
                          column=column or None)
    path, column = local
    if path.is_dir():
        if column:
            raise DataSourceError(f"{str(path)!r} is a folder of .txt files; it has no column {column!r}")
        return TextSource("folder", text, path=path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        if column:
            raise DataSourceError(f"{str(path)!r} is a text file; it has no column {column!r}")
        return TextSource("file", text, path=path)
    if suffix not in TABLE_FORMATS:
        raise DataSourceError(f"cannot read {str(path)!r}: supported files are .txt and "
                              + ", ".join(sorted(TABLE_FORMATS)))
    return TextSource("table", text, path=path, column=column or None)


def _looks_like_path(text: str) -> bool:
    return Path(text).suffix.lower() in {".txt", *TABLE_FORMATS} or text.startswith(("/", "./", "../", "~"))


def _local_path(text: str) -> tuple[Path, str | None] | None:
    """``(path, column)`` if ``text`` names a local file or folder, ``None`` for a Hub name."""
    path = Path(text).expanduser()
    if path.exists():
        return path, None
    head, sep, column = text.rpartition(":")
    if sep and head and Path(head).expanduser().exists():
        return Path(head).expanduser(), column
    for candidate in (head, text) if sep and head else (text,):
        if _looks_like_path(candidate):
            raise FileNotFoundError(f"data file {str(Path(candidate).expanduser())!r} does not exist")
    return None


# ---------------------------------------------------------------------------- reading
def resolve_text_source(spec: str | os.PathLike[str] | TextSource) -> list[str]:
    """The documents named by a ``--data`` value (or a parsed `TextSource`), read whole.

    Without a split, ``default`` means ``default:validation`` and a dataset its validation split,
    else test, else train. Empty documents are dropped.

    Raises:
        FileNotFoundError: a path that does not exist.
        DataSourceError: no text, a missing column (the message lists the columns), an unknown
            split, or a Hub dataset that cannot be loaded.
    """
    source = parse_text_source(spec)
    if source.kind == "default":
        return _non_empty(_assets.default_corpus()[source.split or "validation"], source.spec)
    if source.kind == "dataset":
        return _read_dataset(source)
    assert source.path is not None
    label = str(source.path)
    if source.kind == "folder":
        files = sorted(source.path.glob("*.txt"))
        if not files:
            raise DataSourceError(f"folder {label!r} has no *.txt files")
        return _non_empty([f.read_text(encoding="utf-8") for f in files], label)
    if source.kind == "file":
        return _non_empty([source.path.read_text(encoding="utf-8")], label)
    import datasets

    _check_not_empty(source.path)
    dataset = datasets.load_dataset(TABLE_FORMATS[source.path.suffix.lower()], data_files=label, split="train")
    return _non_empty(_column(dataset, source.column or DEFAULT_COLUMN, label), label)


def stream_text_source(spec: str | os.PathLike[str] | TextSource) -> Iterator[str]:
    """Documents of a table file or a `datasets` name, streamed row by row (nothing loaded whole).

    ``default``, .txt files and folders are small and read with `resolve_text_source`. A dataset
    without a split streams its train split.

    Raises:
        DataSourceError: a missing column (the message lists the columns) or no text at all.
    """
    source = parse_text_source(spec)
    if not source.streamable:
        yield from resolve_text_source(source)
        return
    import datasets

    if source.path is not None:
        _check_not_empty(source.path)
        label = str(source.path)
        rows = datasets.load_dataset(TABLE_FORMATS[source.path.suffix.lower()], data_files=label, split="train",
                                     streaming=True)
    else:
        label = source.spec
        try:
            rows = datasets.load_dataset(source.name, source.config, split=source.split or "train", streaming=True)
        except Exception as exc:  # the Hub raises many types (connection, not found, bad config)
            raise DataSourceError(f"could not stream dataset {source.spec!r} ({type(exc).__name__}: {exc}); offline, "
                                  "pass a local .txt/.json/.jsonl/.parquet/.csv file or 'default'") from exc
    yield from _non_empty_stream(_row_texts(rows, source.column or DEFAULT_COLUMN, label), label)


def _read_dataset(source: TextSource) -> list[str]:
    import datasets

    # Without this, an unreachable Hub costs ~30 s of retries before the same answer. In offline
    # mode `datasets` reads its cache itself, so there is nothing to probe.
    reason = None if _assets._hub_offline("HF_DATASETS_OFFLINE") else _assets.hub_unreachable_reason()
    if reason is not None:
        raise DataSourceError(
            f"cannot load dataset {source.spec!r}: the Hugging Face Hub is unreachable ({reason}). Offline, pass a "
            "local .txt/.json/.jsonl/.parquet/.csv file or 'default', or set HF_DATASETS_OFFLINE=1 to use a copy "
            "already in the datasets cache")
    try:
        loaded = datasets.load_dataset(source.name, source.config, split=source.split)
    except Exception as exc:  # the Hub raises many types (connection, not found, bad config)
        raise DataSourceError(
            f"could not load dataset {source.spec!r} from the Hugging Face Hub ({type(exc).__name__}: {exc}). "
            "The Hub may be unreachable (no internet) or the name, config or split may be wrong. "
            "Offline, pass a local .txt/.json/.jsonl/.parquet/.csv file or 'default'.") from exc
    split = source.split
    if not split:
        available = list(loaded.keys())
        split = next((s for s in ("validation", "test", "train") if s in available), None) or available[0]
        loaded = loaded[split]
    label = f"{source.name}:{source.config or ''}:{split}"
    return _non_empty(_column(loaded, source.column or DEFAULT_COLUMN, label), source.spec)


def _check_not_empty(path: Path) -> None:
    if path.stat().st_size == 0:  # datasets' own message for this is obscure
        raise DataSourceError(f"{str(path)!r} is empty")


def _column(dataset: Any, column: str, source: str) -> list[str]:
    if column not in dataset.column_names:
        raise DataSourceError(_no_column(source, column, dataset.column_names))
    values = [v for v in dataset[column] if v is not None]
    bad = next((v for v in values if not isinstance(v, str)), None)
    if bad is not None:
        raise DataSourceError(f"column {column!r} of {source!r} holds {type(bad).__name__} values, not text")
    return values


def _row_texts(rows: Iterable[dict[str, Any]], column: str, source: str) -> Iterator[str]:
    """`_column` for streamed rows: the text of each row, checked as it comes."""
    for i, row in enumerate(rows):
        if column not in row:
            raise DataSourceError(_no_column(source, column, sorted(row)))
        value = row[column]
        if value is not None and not isinstance(value, str):
            raise DataSourceError(f"column {column!r} of {source!r} holds {type(value).__name__} values, not text "
                                  f"(row {i})")
        if value is not None:
            yield value


def _no_column(source: str, column: str, columns: list[str]) -> str:
    return f"{source!r} has no column {column!r}; its columns are {columns} (choose one with {source}:COLUMN)"


def _non_empty(texts: list[str], source: str) -> list[str]:
    return list(_non_empty_stream(texts, source))


def _non_empty_stream(texts: Iterable[str], source: str) -> Iterator[str]:
    """``texts`` without blank documents; raises at the end if there were none."""
    any_text = False
    for text in texts:
        if text.strip():
            any_text = True
            yield text
    if not any_text:
        raise DataSourceError(f"{source!r} contains no text")
