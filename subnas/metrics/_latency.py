"""`measure_latency`: measured prefill and per-token decode time of a sub-network on a device.

Latency depends on the architecture, the device, the dtype, the batch and the sequence length, not
on the weights' values: the model timed is the sub-network's own architecture with random weights,
built as the export writes it — the family's stock `transformers` class when one expresses the
sub-network (what a user deploys), else the flexible `SubnasForCausalLM`. Decode needs a KV cache,
which only the stock classes have; a sub-network no stock class expresses has a prefill latency
only.

Method: ``torch.inference_mode``, a fixed number of threads, ``warmup`` untimed runs, then
``repeats`` timed runs (the device synchronised around each); the result is their median, with the
spread (min, max, interquartile range) reported beside it. Results are cached on disk under
``cache_root()/latency``, keyed by the architecture, device, dtype, batch, sequence length, mode,
threads, the host and torch's version, so a search measures each architecture once.
"""

from __future__ import annotations

import hashlib
import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from subnas.subnet import ResolvedSubNetwork, SubNetwork

MODES = ("prefill", "decode")


@dataclass(frozen=True)
class LatencyResult:
    """One latency measurement: the median of ``repeats`` timed runs, in milliseconds.

    ``ms`` is per prefill (``batch × seq_len`` tokens) or per decoded token (a batch of one new
    token each, after a ``seq_len``-token prompt in the cache)."""

    ms: float
    min_ms: float
    max_ms: float
    iqr_ms: float
    repeats: int
    mode: str
    device: str
    dtype: str
    batch: int
    seq_len: int
    threads: int
    model_class: str
    cached: bool = False

    @property
    def spread(self) -> float:
        """The interquartile range relative to the median (0.05: the middle half within ±2.5%)."""
        return self.iqr_ms / self.ms if self.ms else 0.0


def _timing_model(supernet_or_config: Any, subnet: Any, dtype: torch.dtype, device: str) -> Any:
    """The sub-network's architecture as the export would write it, with random weights."""
    from transformers import AutoModelForCausalLM

    from subnas.families import NotExpressible, family_for, load_config
    from subnas.modeling import SubnasForCausalLM, sub_config

    config = load_config(supernet_or_config)
    if isinstance(subnet, dict):
        subnet = SubNetwork.from_dict(subnet)
    resolved = subnet if isinstance(subnet, ResolvedSubNetwork) else (subnet or SubNetwork()).resolve(config)
    sub = sub_config(config, resolved)
    hf_config = getattr(supernet_or_config, "hf_config", None)
    if hf_config is None and hasattr(supernet_or_config, "model_type") and supernet_or_config.model_type != "subnas":
        hf_config = supernet_or_config
    model = None
    if hf_config is not None:
        try:
            stock = family_for(hf_config.model_type).hf_config_for(sub, hf_config)
            stock.vocab_size = sub.vocab_size
            model = AutoModelForCausalLM.from_config(stock, dtype=dtype)
        except (NotExpressible, NotImplementedError):
            model = None
    if model is None:
        model = SubnasForCausalLM(sub).to(dtype)
    return model.to(device).eval(), sub


def _key(sub: Any, **what: Any) -> str:
    data = sub.to_dict()
    for key in ("architectures", "transformers_version", "_name_or_path", "bos_token_id", "eos_token_id",
                "pad_token_id"):
        data.pop(key, None)
    blob = json.dumps({"arch": data, "host": platform.node(), "machine": platform.machine(),
                       "torch": torch.__version__, **what}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_latency(model_or_config: Any, subnet: SubNetwork | ResolvedSubNetwork | dict[str, Any] | None = None,
                    *, mode: Literal["prefill", "decode"] = "prefill", batch: int = 1, seq_len: int = 256,
                    device: str = "cpu", dtype: str | torch.dtype = "float32", warmup: int = 2, repeats: int = 7,
                    threads: int | None = 1, cache: bool = True) -> LatencyResult:
    """Measured latency of a model or sub-network (see the module docstring for the method).

    Args:
        model_or_config: a `subnas.Supernet`, a `transformers` model or config, or a model name.
        subnet: the sub-network (None: the full model).
        mode: ``"prefill"`` (one forward pass over ``batch × seq_len`` tokens) or ``"decode"`` (one
            new token per sequence with a ``seq_len``-token KV cache; stock-expressible only).
        batch: sequences per pass.
        seq_len: prompt tokens.
        device: e.g. ``"cpu"`` or ``"cuda"``.
        dtype: weights' and activations' dtype.
        warmup: untimed runs first.
        repeats: timed runs; the median is reported.
        threads: torch's intra-op threads while timing (None: leave as is).
        cache: read and write the on-disk cache.

    Example:
        >>> from subnas import SubnasConfig
        >>> cfg = SubnasConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, intermediate_size=64)
        >>> r = measure_latency(cfg, seq_len=8, repeats=3, warmup=1, cache=False)
        >>> r.ms > 0 and r.min_ms <= r.ms <= r.max_ms
        True
    """
    from subnas.data._assets import cache_root
    from subnas._io import atomic_write_text

    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {', '.join(MODES)}")
    for name, value in (("batch", batch), ("seq_len", seq_len), ("repeats", repeats)):
        if value < 1:
            raise ValueError(f"{name}={value} is not a positive number")
    torch_dtype = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; give e.g. float32, bfloat16 or float16")
    previous_threads = torch.get_num_threads()
    used_threads = threads or previous_threads
    model, sub = _timing_model(model_or_config, subnet, torch_dtype, device)
    model_class = type(model).__name__
    key = _key(sub, mode=mode, batch=batch, seq_len=seq_len, device=device, dtype=str(torch_dtype),
               threads=used_threads, warmup=warmup, repeats=repeats, model_class=model_class)
    path = cache_root() / "latency" / f"{key}.json"
    if cache and path.exists():
        return LatencyResult(**{**json.loads(path.read_text()), "cached": True})
    if mode == "decode" and model_class == "SubnasForCausalLM":
        raise ValueError("decode latency needs a KV cache, which only the stock transformers classes have; this "
                         "sub-network is exported in the flexible subnas format. Measure mode='prefill' instead")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, sub.vocab_size, (batch, seq_len), generator=g).to(device)
    times: list[float] = []
    try:
        if threads:
            torch.set_num_threads(threads)
        with torch.inference_mode():
            for i in range(warmup + repeats):
                if mode == "prefill":
                    _sync(device)
                    start = time.perf_counter()
                    model(ids)
                    _sync(device)
                else:
                    cache_obj = model(ids, use_cache=True).past_key_values  # the prompt, untimed
                    step = ids[:, -1:]
                    _sync(device)
                    start = time.perf_counter()
                    model(step, past_key_values=cache_obj, use_cache=True)
                    _sync(device)
                if i >= warmup:
                    times.append((time.perf_counter() - start) * 1000)
    finally:
        torch.set_num_threads(previous_threads)
    quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    result = LatencyResult(ms=statistics.median(times), min_ms=min(times), max_ms=max(times),
                           iqr_ms=quartiles[2] - quartiles[0], repeats=repeats, mode=mode, device=device,
                           dtype=str(torch_dtype).removeprefix("torch."), batch=batch, seq_len=seq_len,
                           threads=used_threads, model_class=model_class)
    if cache:
        atomic_write_text(path, json.dumps(asdict(result)) + "\n")
    return result
