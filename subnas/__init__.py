"""subnas: find, extract and train small language models inside large pretrained ones."""

from __future__ import annotations

import os

# Idle OpenMP threads that wait by spinning take the CPU from the threads doing the work whenever
# cores are shared (other jobs, other ranks, a busy laptop): on a busy 2-core VM a distillation
# step ran 6.5x faster with passive waiting (docs/training.md, "Threads"). libgomp reads this once,
# when torch loads, so it applies when subnas is imported before torch; an explicit value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from subnas.bins import BinConstrainedSpace, InfeasibleBinError, ParameterBin
from subnas.config import SubnasConfig
from subnas.samplers._evolution import BinEvolutionSampler
from subnas.export._extract import ExtractResult, extract
from subnas.hookspecs import hookimpl
from subnas.modeling import SubnasForCausalLM
from subnas.params import count_parameters
from subnas.interfaces import SearchContext
from subnas.lookups import get_extractor, get_fitness, get_metric, get_sampler, get_search_space, get_training_strategy
from subnas.plugins import plugins_report
from subnas.search_driver import search
from subnas.subnet import ResolvedSubNetwork, SubNetwork, SubNetworkError
from subnas.supernet import Supernet
from subnas.training import train_supernet

__version__ = "0.1.0"

__all__ = [
    "BinConstrainedSpace",
    "BinEvolutionSampler",
    "ExtractResult",
    "InfeasibleBinError",
    "ParameterBin",
    "ResolvedSubNetwork",
    "SubNetwork",
    "SubNetworkError",
    "SubnasConfig",
    "SearchContext",
    "SubnasForCausalLM",
    "Supernet",
    "count_parameters",
    "extract",
    "get_extractor",
    "get_fitness",
    "get_metric",
    "get_sampler",
    "get_search_space",
    "get_training_strategy",
    "hookimpl",
    "plugins_report",
    "search",
    "train_supernet",
]
