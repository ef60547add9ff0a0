"""Samplers: the paper's bin-constrained evolution (Algorithm 1) as an Optuna sampler.

- ``_evolution``: `BinEvolutionSampler` (mutation, crossover, rejection and repair inside a bin).
- ``_mo_evolution``: `ParetoEvolutionSampler` (multi-objective: non-dominated sorting + crowding).
"""

from subnas.samplers._evolution import BinEvolutionSampler
from subnas.samplers._mo_evolution import ParetoEvolutionSampler

__all__ = ["BinEvolutionSampler", "ParetoEvolutionSampler"]
