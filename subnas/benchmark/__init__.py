"""Benchmarking search strategies: many samplers × seeds × bins, anytime curves, tables.

- ``_samplers``: `benchmark_samplers` (what ``subnas benchmark`` runs) and `record_table`.
- ``_report``: the trial log, the final table and the anytime-curve plot.
- ``_fitness_table``: recorded fitness tables that the cheap ``replay``/``surrogate`` fitness reads.
"""

from subnas.benchmark._fitness_table import FitnessTable, architecture_features, model_signature
from subnas.benchmark._samplers import benchmark_samplers, record_table

__all__ = ["FitnessTable", "architecture_features", "benchmark_samplers", "model_signature", "record_table"]
