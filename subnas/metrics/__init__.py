"""Cost metrics beside `subnas.count_parameters`, one owner each (issue #22).

- ``_analytic``: `flops_per_token`, `weight_bytes`, `kv_cache_bytes_per_token` (exact, from the
  architecture) and `measure_flops` (PyTorch's FLOP counter on a real forward pass).
- ``_latency``: `measure_latency` (prefill and per-token decode, median of repeats, cached on disk).

The search uses them through the `subnas.interfaces.Metric` plugins (``plugins/metrics.py``).
"""

from subnas.metrics._analytic import flops_per_token, kv_cache_bytes_per_token, measure_flops, weight_bytes
from subnas.metrics._latency import LatencyResult, measure_latency

__all__ = ["LatencyResult", "flops_per_token", "kv_cache_bytes_per_token", "measure_flops", "measure_latency",
           "weight_bytes"]
