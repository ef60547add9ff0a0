"""Samplers: the paper's bin-constrained evolution (Algorithm 1) as an Optuna sampler, and its operators.

- ``_evolution``: `BinEvolutionSampler` — the epochs, the population, the plan of offspring (which
  slots get a mutant, a child, a random member), rejection and repair inside a bin, workers and resume.
- ``_mo_evolution``: `ParetoEvolutionSampler` (multi-objective: non-dominated sorting + crowding).
- ``_operators``: the operators the sampler takes as objects — `TruncationSelection` (ranking and
  elites), `WeightedMoves` (mutation: which of the space's moves a parent gets, with
  `IMPORTANCE_WEIGHTS` in importance order), `LayerSwap` and `UnitSwap` (mutation by one kind of
  move), `EqualDepthCrossover` (the paper's crossover). The moves themselves — a local step of one
  dimension, a layer swap, a units swap along the importance order — are the space's
  (`subnas.spaces.StructuredSearchSpace.moves`), since only the space knows its structure.
"""

from subnas.samplers._evolution import SEED as EVOLUTION_SEED
from subnas.samplers._evolution import BinEvolutionSampler
from subnas.samplers._mo_evolution import SEED as MO_EVOLUTION_SEED
from subnas.samplers._mo_evolution import ParetoEvolutionSampler
from subnas.samplers._operators import (IMPORTANCE_WEIGHTS, Crossover, EqualDepthCrossover, LayerSwap, Mutation,
                                        Selection, TruncationSelection, UnitSwap, WeightedMoves)

# (EVOLUTION_SEED, MO_EVOLUTION_SEED: the study attribute each sampler keeps its seed under.)
__all__ = ["EVOLUTION_SEED", "IMPORTANCE_WEIGHTS", "MO_EVOLUTION_SEED", "BinEvolutionSampler", "Crossover", "EqualDepthCrossover", "LayerSwap", "Mutation",
           "ParetoEvolutionSampler", "Selection", "TruncationSelection", "UnitSwap", "WeightedMoves"]
