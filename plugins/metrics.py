"""Built-in metric plugins: the costs a search can minimise or bin by (`subnas.metrics`).

``params`` (`subnas.count_parameters`), ``flops`` (forward FLOPs per token at the search's sequence
length), ``weight-bytes`` and ``kv-bytes`` (at the context's dtype) are exact; ``latency`` (prefill
of ``batch × seq_len`` tokens, ms) and ``decode-latency`` (ms per generated token with a
``seq_len``-token KV cache) are measured on the context's device and cached per architecture.

Example:
    >>> import subnas
    >>> cfg = subnas.SubnasConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, intermediate_size=64)
    >>> subnas.get_metric("flops", cfg, subnas.SearchContext(seq_len=16))(None)
    51456.0
"""

from __future__ import annotations

from typing import Any, ClassVar

from subnas.hookspecs import hookimpl
from subnas.interfaces import Metric, SearchContext
from subnas.metrics import flops_per_token, kv_cache_bytes_per_token, measure_latency, weight_bytes
from subnas.params import count_parameters
from subnas.subnet import SubNetwork


class ParamsMetric(Metric):
    """Parameters (`subnas.count_parameters`, the one counter; tied weights once)."""

    unit = "parameters"

    def __call__(self, subnet: SubNetwork | None) -> float:
        return float(count_parameters(self.config, subnet))


class FlopsMetric(Metric):
    """Forward FLOPs per token at the context's sequence length (`subnas.metrics.flops_per_token`)."""

    unit = "FLOPs/token"

    def __call__(self, subnet: SubNetwork | None) -> float:
        return float(flops_per_token(self.config, subnet, seq_len=self.context.seq_len))

    def describe(self) -> str:
        return f"forward FLOPs per token at {self.context.seq_len} tokens"


class WeightBytesMetric(Metric):
    """Bytes of the weights at the context's dtype (`subnas.metrics.weight_bytes`)."""

    unit = "bytes"

    def __call__(self, subnet: SubNetwork | None) -> float:
        return float(weight_bytes(self.config, subnet, dtype=self.context.dtype))

    def describe(self) -> str:
        return f"weight bytes at {self.context.dtype}"


class KVBytesMetric(Metric):
    """KV-cache bytes per token at the context's dtype (`subnas.metrics.kv_cache_bytes_per_token`)."""

    unit = "bytes/token"

    def __call__(self, subnet: SubNetwork | None) -> float:
        return float(kv_cache_bytes_per_token(self.config, subnet, dtype=self.context.dtype))

    def describe(self) -> str:
        return f"KV-cache bytes per token at {self.context.dtype}"


class LatencyMetric(Metric):
    """Measured prefill latency in ms (`subnas.metrics.measure_latency`; median of ``repeats``).

    Args:
        model_or_config: the model (its stock class is timed when it expresses the sub-network).
        context: device, dtype, batch and sequence length.
        repeats, warmup, threads: the measurement (threads fixed so numbers compare).
    """

    unit = "ms"
    exact = False
    mode: ClassVar[str] = "prefill"

    def __init__(self, model_or_config: Any, context: SearchContext | None = None, *, repeats: int = 7,
                 warmup: int = 2, threads: int | None = 1) -> None:
        super().__init__(model_or_config, context)
        self.repeats, self.warmup, self.threads = repeats, warmup, threads
        self.last: Any = None  # the last `LatencyResult`, spread included

    def __call__(self, subnet: SubNetwork | None) -> float:
        c = self.context
        # hf_config when the source has one, so the stock class is timed.
        self.last = measure_latency(self.source, subnet, mode=self.mode, batch=c.batch,  # type: ignore[arg-type]
                                    seq_len=c.seq_len, device=c.device, dtype=c.dtype, warmup=self.warmup,
                                    repeats=self.repeats, threads=self.threads)
        return float(self.last.ms)

    def last_spread(self) -> float | None:
        return None if self.last is None else float(self.last.spread)

    def describe(self) -> str:
        c = self.context
        return f"{self.mode} ms, batch {c.batch} x {c.seq_len} tokens, {c.device} {c.dtype}, median of {self.repeats}"


class DecodeLatencyMetric(LatencyMetric):
    """Measured ms per generated token with a ``seq_len``-token KV cache (stock-expressible only)."""

    mode = "decode"


METRICS = {"params": ParamsMetric, "flops": FlopsMetric, "weight-bytes": WeightBytesMetric,
           "kv-bytes": KVBytesMetric, "latency": LatencyMetric, "decode-latency": DecodeLatencyMetric}


@hookimpl
def register_metrics(register: Any) -> None:
    for name, metric in METRICS.items():
        register(name, metric)
