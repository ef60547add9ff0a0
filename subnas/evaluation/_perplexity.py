"""Perplexity: the fitness that search uses and the number that evaluation reports (docs/design.md#the-method).

Text becomes a fixed ``[num_seqs, seq_len]`` tensor of token ids once (`tokenize_for_eval`: the
first blocks of `subnas.data.pack_texts`, whose packing and on-disk cache training shares), and
every candidate is scored on exactly that tensor by `perplexity`, so search, extraction checks and
final evaluation share one code path and one set of tokens.

Example:
    >>> from transformers import AutoModelForCausalLM, AutoTokenizer
    >>> from subnas.data import default_model_dir, resolve_text_source
    >>> folder = default_model_dir()  # the offline SmolLM2-135M
    >>> model = AutoModelForCausalLM.from_pretrained(folder)
    >>> tokens = tokenize_for_eval(resolve_text_source("default"), AutoTokenizer.from_pretrained(folder),
    ...                            seq_len=128, num_seqs=4)
    >>> tokens.shape
    torch.Size([4, 128])
    >>> 10 < perplexity(model, tokens) < 30  # the teacher on 512 tokens of its validation split
    True
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from subnas.data._assets import DataSourceError
from subnas.data._sources import resolve_text_source
from subnas.data._tokens import pack_texts
from subnas.vocab import VocabularyError, pruned_tokenizer, token_byte_lengths

# Upper bound on logits upcast to float32 at once in the loss: 32M elements = 128 MB. Upcasting a
# whole batch at once would take 8 x 512 x 262144 x 4 B = 4.3 GB for Gemma's vocabulary.
_CE_CHUNK_ELEMENTS = 1 << 25


def requires_bos(model_or_config: Any) -> bool:
    """Whether every evaluated sequence must start with BOS (Gemma; ``SubnasConfig.require_bos``)."""
    config = getattr(model_or_config, "config", model_or_config)
    return bool(getattr(config, "require_bos", False)) or str(getattr(config, "model_type", "")).startswith("gemma")


def tokenize_for_eval(
    texts: Sequence[str],
    tokenizer: Any,
    seq_len: int,
    num_seqs: int | None,
    add_bos: bool = False,
    *,
    cache: bool = True,
) -> torch.Tensor:
    """Pack documents into a ``[num_seqs, seq_len]`` LongTensor of token ids, deterministically.

    The first ``num_seqs`` blocks (``None``: every whole block, i.e. all of the text but the tail
    shorter than one block) of `subnas.data.pack_texts`, the packing training uses too:
    documents are tokenized without special tokens and joined with the tokenizer's EOS (BOS when
    it has none) between consecutive documents, and the stream is cut into consecutive blocks. Only
    as many documents as needed are tokenized. With ``add_bos`` each block is ``[BOS] + seq_len -
    1`` tokens of the stream. The stream is cached on disk (``cache_root()/tokens``).

    Args:
        texts: documents, e.g. from `subnas.data.resolve_text_source`.
        tokenizer: a `transformers` tokenizer, or any object with ``encode(text,
            add_special_tokens=False) -> list[int]``, ``eos_token_id`` and ``bos_token_id``.
        seq_len: tokens per sequence (at least 2: one token is predicted from another).
        num_seqs: number of sequences; ``None``: as many as the texts hold (all of a split).
        add_bos: start every sequence with BOS (see `requires_bos`).
        cache: read and write the on-disk cache.

    Raises:
        DataSourceError: the texts hold fewer tokens than ``num_seqs`` sequences need (the
            message says how many sequences of ``seq_len`` fit).
    """
    if seq_len < 2 or (num_seqs is not None and num_seqs < 1):
        raise ValueError(f"need seq_len >= 2 and num_seqs >= 1 (or None), got seq_len={seq_len}, "
                         f"num_seqs={num_seqs}")
    body = seq_len - 1 if add_bos else seq_len
    need = None if num_seqs is None else num_seqs * body
    blocks = pack_texts(texts, tokenizer, seq_len=seq_len, add_bos=add_bos, max_tokens=need, cache=cache)
    if num_seqs is None:
        num_seqs = max(1, len(blocks))  # no whole block at all: the error below says how many tokens there are
        need = num_seqs * body
    if len(blocks) < num_seqs:
        fits = len(blocks)
        hint = f"pass --num-seqs {fits} or a smaller --seq-len" if fits else "pass a smaller --seq-len"
        raise DataSourceError(
            f"the evaluation text has {len(blocks.tokens):,} tokens, but {num_seqs} sequences of {seq_len} tokens "
            f"need {need:,}; it holds {fits} sequence(s) of {seq_len} tokens ({hint}, or give more text)")
    return blocks.head(num_seqs)


def check_sequence_length(model: Any, seq_len: int) -> None:
    """Raise if ``seq_len`` exceeds the model's context (``config.max_position_embeddings``)."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(limit, int) and seq_len > limit:
        raise ValueError(f"sequence length {seq_len} exceeds the model's context of {limit} tokens "
                         f"(max_position_embeddings); pass --seq-len {limit} or less")


def available_devices() -> list[str]:
    """The devices this process can run on, e.g. ``["cpu", "cuda:0", "cuda:1"]``."""
    found = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        found += [f"xpu:{i}" for i in range(xpu.device_count())]
    return found


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The `torch.device` for a ``--device`` value, checked to exist on this machine.

    ``None`` means CUDA when available, else CPU. A device that is not there (``cuda`` on a CPU
    build of torch, ``cuda:3`` on a one-GPU machine, ``mps`` off a Mac, a typo) raises
    `ValueError` naming it and the devices that are available, instead of failing deep inside torch.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {str(device)!r} is not a device name; available here: "
                         f"{', '.join(available_devices())}") from None
    if dev.type == "cpu":
        return dev
    available = available_devices()
    if dev.type == "cuda" and not torch.cuda.is_available():
        why = ("this PyTorch build has no CUDA support (a CPU build); install a CUDA build of torch to use a GPU"
               if torch.version.cuda is None else "no CUDA GPU is visible (check the driver and CUDA_VISIBLE_DEVICES)")
        raise ValueError(f"device {str(device)!r} is not available: {why}. Available here: "
                         f"{', '.join(available)}")
    wanted = f"{dev.type}:{dev.index}" if dev.index is not None else dev.type
    if not any(d == wanted or d.split(":")[0] == wanted for d in available):
        raise ValueError(f"device {str(device)!r} is not available on this machine; available here: "
                         f"{', '.join(available)}")
    return dev


def _model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device  # type: ignore[no-any-return]
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")


def mean_token_nll(
    model: Callable[..., Any],
    tokens: torch.Tensor,
    *,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> float:
    """Mean next-token negative log-likelihood (nats) of ``model`` over ``tokens``.

    Every block predicts its tokens 1..T-1 from the ones before; blocks are independent. The model
    is neither copied nor moved; it is put in eval mode for the call and its mode restored.

    Args:
        model: called as ``model(input_ids)``; returns an object with ``.logits`` ``[B, T, V]``
            (a `transformers` model, a `subnas.SubnasForCausalLM` with a sub-network active) or the
            logits tensor itself.
        tokens: ``[num_seqs, seq_len]`` token ids, e.g. from `tokenize_for_eval`.
        batch_size: sequences per forward pass.
        device: where batches go; default: the device of the model's first parameter.
        progress: show a progress bar (only on a terminal).
    """
    nll = math.nan
    for _, nll in running_nll(model, tokens, batch_size=batch_size, device=device, progress=progress):
        pass
    return nll


def running_nll(
    model: Callable[..., Any],
    tokens: torch.Tensor,
    *,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    progress: bool = False,
    dtype: str = "auto",
) -> Iterator[tuple[int, float]]:
    """`mean_token_nll` batch by batch: yields ``(tokens scored so far, mean NLL so far)``.

    What multi-fidelity search reports to Optuna's pruners after every batch, so a hopeless
    candidate stops after a fraction of its tokens; the last value equals `mean_token_nll`.
    ``dtype`` is the forward's precision (`eval_autocast`); the loss is float64 either way.
    """
    if tokens.dim() != 2 or tokens.shape[1] < 2:
        raise ValueError(f"tokens must be [num_seqs, seq_len >= 2], got shape {tuple(tokens.shape)}")
    check_sequence_length(model, tokens.shape[1])
    dev = torch.device(device) if device is not None else _model_device(model)
    autocast = eval_autocast(dev, dtype)
    kwargs = {"use_cache": False} if isinstance(model, PreTrainedModel) else {}
    was_training = getattr(model, "training", None)
    if was_training:
        model.eval()  # type: ignore[attr-defined]
    total = torch.zeros((), dtype=torch.float64, device=dev)
    scored = 0
    try:
        batches = tokens.split(batch_size)
        for batch in tqdm(batches, desc="perplexity", unit="batch", leave=False, disable=None if progress else True):
            with torch.no_grad(), autocast:
                ids = batch.to(dev, non_blocking=True)
                out = model(ids, **kwargs)
                logits = out if isinstance(out, torch.Tensor) else out.logits
                total += _nll_sum(logits, ids)
            scored += batch.shape[0] * (batch.shape[1] - 1)
            yield scored, float(total.item()) / scored
    finally:
        if was_training:
            model.train()  # type: ignore[attr-defined]


EVAL_DTYPES = ("auto", "float32", "bfloat16")


def resolved_dtype(dtype: str, device: str | torch.device) -> str:
    """The precision ``dtype`` means on ``device``: ``auto`` is bfloat16 on CUDA, float32 elsewhere.

    Example:
        >>> resolved_dtype("auto", "cpu"), resolved_dtype("auto", "cuda"), resolved_dtype("bfloat16", "cpu")
        ('float32', 'bfloat16', 'bfloat16')
    """
    if dtype not in EVAL_DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(EVAL_DTYPES)}")
    return "bfloat16" if dtype == "bfloat16" or (dtype == "auto" and torch.device(device).type == "cuda") else "float32"


def eval_autocast(device: torch.device, dtype: str = "auto") -> contextlib.AbstractContextManager[Any]:
    """The precision of evaluation forwards: ``float32``, ``bfloat16`` (autocast, on CPU and CUDA) or
    ``auto``: bf16 on CUDA (the paper's setup) and float32 on CPU. On this project's CPU bf16 ranked 30
    candidates of a search bin exactly as float32 (Spearman 1.0, same winner) at 1.64x per CPU-second,
    but its per-candidate error (median 0.08%) exceeds the gap between some neighbours of a real
    search, and the recorded CPU results are float32: so bf16 is an opt-in there
    (docs/benchmarks/eval_dtype.md).

    Example:
        >>> with eval_autocast(torch.device("cpu"), "bfloat16"):
        ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
        torch.bfloat16
    """
    if dtype not in EVAL_DTYPES:
        raise ValueError(f"dtype={dtype!r} is not one of {', '.join(EVAL_DTYPES)}")
    bf16 = dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


#: Sequences per evaluation forward on CPU. Measured on this project's CPU (docs/benchmarks/eval_dtype.md,
#: 256 tokens each, one thread): 1, 4 and 8 gave 378, 396 and 413 float32 tokens per CPU-second; 8 is 4%
#: ahead of 4, one sample each on a shared machine, so 4 stays — as before, with bit-identical results
#: and twice as many reports per candidate for a pruner.
CPU_BATCH_SIZE = 4


def auto_batch_size(config: Any, seq_len: int, num_seqs: int, device: torch.device) -> int:
    """Sequences per evaluation forward that fill ``device``: `CPU_BATCH_SIZE` on CPU; on CUDA as many
    as half the free memory holds at ``seq_len`` tokens each — the bf16 logits (``vocab_size`` values
    per token) plus a few float32 hidden-width activations per token — up to ``num_seqs``.

    Example:
        >>> from subnas import SubnasConfig
        >>> auto_batch_size(SubnasConfig(), 256, 16, torch.device("cpu"))
        4
    """
    if device.type != "cuda":
        return min(CPU_BATCH_SIZE, num_seqs)
    widest = max([config.hidden_size, *config.intermediate_size,
                  *(h * d for h, d in zip(config.num_attention_heads, config.head_dim))])
    per_seq = seq_len * (2 * config.vocab_size + 4 * 8 * widest)
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(num_seqs, int(0.5 * free) // per_seq))


def _nll_sum(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Summed next-token NLL in float64, upcasting at most `_CE_CHUNK_ELEMENTS` logits at a time."""
    B, T = ids.shape
    if logits.shape[:2] != (B, T):
        raise ValueError(f"model returned logits of shape {tuple(logits.shape)} for input {(B, T)}")
    rows = max(1, _CE_CHUNK_ELEMENTS // logits.shape[-1])
    total = torch.zeros((), dtype=torch.float64, device=logits.device)
    with torch.autocast(logits.device.type, enabled=False):
        for b in range(B):  # per sequence: logits[b, :-1] is a view, never a copy of the batch
            for s in range(0, T - 1, rows):
                e = min(s + rows, T - 1)
                nll = F.cross_entropy(logits[b, s:e].float(), ids[b, s + 1:e + 1], reduction="sum")
                total += nll.double()
    return total


def perplexity(
    model: Callable[..., Any],
    tokens: torch.Tensor,
    *,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> float:
    """Perplexity ``exp(mean next-token NLL)`` of ``model`` on ``tokens`` (see `mean_token_nll`).

    Returns ``inf`` when the mean NLL overflows ``exp`` and ``nan`` when the model produced NaN
    logits, so a broken candidate does not stop a search (the caller decides how to rank it).

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> uniform = lambda ids: SimpleNamespace(logits=torch.zeros(*ids.shape, 50))
        >>> round(perplexity(uniform, torch.randint(0, 50, (4, 16)), progress=False), 3)
        50.0
    """
    nll = mean_token_nll(model, tokens, batch_size=batch_size, device=device, progress=progress)
    return nll_to_perplexity(nll)


def nll_to_perplexity(nll: float) -> float:
    """``exp(nll)``; ``inf`` where it overflows, ``nan`` for a NaN mean NLL (a broken candidate)."""
    return math.exp(nll) if nll < 700 else (math.inf if not math.isnan(nll) else math.nan)


def evaluate(
    model: Any,
    *,
    data: str = "default:validation",
    subnet: Any = None,
    seq_len: int = 512,
    num_seqs: int | None = 16,
    batch_size: int = 4,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Perplexity and bits per byte of a model or one of its sub-networks on held-out text
    (``subnas evaluate``).

    A sub-network with a pruned vocabulary reads the text through its pruned tokenizer (the one
    its export carries), so its numbers are what the export gives. Per-token perplexity is not
    comparable across vocabularies (a smaller vocabulary predicts more, easier tokens); bits per
    byte is: the summed NLL in bits over the UTF-8 bytes those tokens stand for. From Python,
    ``num_seqs=None`` scores every whole sequence of the text (all of a split), as the benchmarks do.

    Args:
        model: a `subnas.Supernet`, or a model folder / hub name / ``"default"`` to load as one.
        data: text file, .json/.jsonl/.parquet/.csv file, a `datasets` name, or
            ``default[:split]`` (`subnas.data.resolve_text_source`).
        subnet: a `SubNetwork` to evaluate in place (``None``: the whole model).
        seq_len: tokens per sequence.
        num_seqs: number of sequences (``None``: every whole sequence of the text, such as all of a
            split; ``default:validation`` holds ~89 x 512).
        batch_size: sequences per forward pass.
        device: cpu, cuda, cuda:1, ... (default: cuda if available, else cpu).
        progress: show a progress bar.

    Returns:
        ``{"perplexity", "nll", "bits_per_byte", "bytes", "tokens", "parameters", "vocab_size",
        "seq_len", "num_seqs", "data", "subnet"}`` (``bits_per_byte`` is ``None`` for a tokenizer
        whose tokens' bytes are unknown).
    """
    from subnas.supernet import Supernet

    dev = resolve_device(device)  # before loading: a missing device is named at once
    supernet = model if isinstance(model, Supernet) else Supernet.from_pretrained(model)
    supernet.to(dev)
    from subnas.subnet import SubNetwork

    subnet = SubNetwork.coerce(subnet)
    resolved = None if subnet is None else (subnet.resolve(supernet.subnas_config)
                                            if hasattr(subnet, "resolve") else subnet)
    vocab = None if resolved is None else resolved.vocab
    tokens = supernet_tokens(supernet, data, seq_len, num_seqs, vocab=vocab)
    with supernet.sub_network(resolved):
        nll = mean_token_nll(supernet.model, tokens, batch_size=batch_size, progress=progress)
        parameters = supernet.count_parameters(resolved)
    ppl = nll_to_perplexity(nll)
    nbytes = target_bytes(supernet_tokenizer(supernet, vocab), tokens)
    return {"perplexity": ppl, "nll": nll, "bits_per_byte": bits_per_byte(nll, tokens, nbytes),
            "bytes": nbytes, "tokens": int(tokens.numel()), "parameters": parameters,
            "vocab_size": supernet.subnas_config.vocab_size if vocab is None else len(vocab),
            "seq_len": seq_len, "num_seqs": int(tokens.shape[0]), "data": str(data),
            "subnet": None if subnet is None else (subnet.to_dict() if hasattr(subnet, "to_dict")
                                                   else subnet.to_subnetwork().to_dict())}


def document_bits_per_byte(model: Callable[..., Any], tokenizer: Any, texts: Sequence[str], *,
                           max_length: int) -> float:
    """Bits per byte of whole documents, scored as lm-eval's ``loglikelihood_rolling`` tasks
    (wikitext's ``bits_per_byte``) score them: every token of a document, the first predicted from
    the BOS token (EOS when there is none; lm-eval's ``prefix_token_id``), in disjoint windows of at most ``max_length`` predictions with as much context as
    fits; bytes are the documents' UTF-8 bytes. What `tests/test_vocab.py` checks lm-eval against.
    """
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    total, nbytes = 0.0, 0
    dev = _model_device(model)
    with torch.no_grad():
        for text in texts:
            ids = tokenizer.encode(text, add_special_tokens=False)
            full = [prefix] + ids
            nbytes += len(text.encode("utf-8"))
            for start in range(0, len(ids), max_length):
                n = min(max_length, len(ids) - start)
                end = start + n  # the last predicted token is full[end]
                window = full[max(0, end - max_length):end]
                out = model(torch.tensor([window], device=dev))
                logits = (out if isinstance(out, torch.Tensor) else out.logits)[0, -n:].float()
                target = torch.tensor(full[end - n + 1:end + 1], device=dev)
                total += float(F.cross_entropy(logits, target, reduction="sum"))
    return total / (math.log(2) * nbytes)


def supernet_tokenizer(supernet: Any, vocab: Sequence[int] | None = None) -> Any:
    """The supernet's tokenizer, or its pruned form for the kept token ids ``vocab``."""
    if vocab is None or supernet.tokenizer is None:
        return supernet.tokenizer
    return pruned_tokenizer(supernet.tokenizer, vocab)


def target_bytes(tokenizer: Any, tokens: torch.Tensor) -> int | None:
    """UTF-8 bytes that the predicted tokens (``tokens[:, 1:]``) stand for; ``None`` when the
    tokenizer's bytes per token are unknown (no fast tokenizer)."""
    try:
        lengths = _byte_lengths(tokenizer)
    except (VocabularyError, AttributeError, TypeError, ValueError):
        return None
    return int(lengths[tokens[:, 1:].clamp(max=len(lengths) - 1)].sum())


_BYTE_LENGTHS: dict[int, tuple[Any, torch.Tensor]] = {}


def _byte_lengths(tokenizer: Any) -> torch.Tensor:
    """`token_byte_lengths`, computed once per tokenizer object."""
    hit = _BYTE_LENGTHS.get(id(tokenizer))
    if hit is None or hit[0] is not tokenizer:
        hit = (tokenizer, token_byte_lengths(tokenizer))
        _BYTE_LENGTHS[id(tokenizer)] = hit
    return hit[1]


def bits_per_byte(nll: float, tokens: torch.Tensor, nbytes: int | None) -> float | None:
    """Bits per byte from a mean next-token NLL (nats) over ``tokens``' predicted positions."""
    if not nbytes:
        return None
    predicted = tokens.shape[0] * (tokens.shape[1] - 1)
    return nll * predicted / (math.log(2) * nbytes)


def supernet_tokens(supernet: Any, data: str, seq_len: int, num_seqs: int | None,
                    vocab: Sequence[int] | None = None) -> torch.Tensor:
    """``[num_seqs, seq_len]`` evaluation tokens of ``data`` for ``supernet`` (tokenized once, cached;
    ``num_seqs=None``: every whole block of ``data``).

    What every data-driven fitness and the importance order read; raises a clear error when the
    model has no tokenizer or ``seq_len`` exceeds its context. ``vocab`` (kept token ids of a
    pruned vocabulary) tokenizes with the pruned tokenizer, in the sub-network's own numbering.
    """
    if supernet.tokenizer is None:
        raise ValueError(f"model {supernet.source!r} has no tokenizer beside it; evaluating on text needs one")
    check_sequence_length(supernet.model, seq_len)
    return tokenize_for_eval(resolve_text_source(data), supernet_tokenizer(supernet, vocab), seq_len, num_seqs,
                             add_bos=requires_bos(supernet.subnas_config))
