"""Samplers: the paper's bin-constrained evolution (Algorithm 1) as an Optuna sampler.

- ``_evolution``: `BinEvolutionSampler` (mutation, crossover, rejection and repair inside a bin).
"""

from subnas.samplers._evolution import BinEvolutionSampler

__all__ = ["BinEvolutionSampler"]
