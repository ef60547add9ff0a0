"""subnas: find, extract and train small language models inside large pretrained ones."""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForCausalLM

from subnas.bins import BinConstrainedSpace, InfeasibleBinError, ParameterBin
from subnas.config import SubnasConfig
from subnas.evolution import BinEvolutionSampler
from subnas.extract import ExtractResult, extract
from subnas.hookspecs import hookimpl
from subnas.modeling import SubnasForCausalLM
from subnas.params import count_parameters
from subnas.plugins import get_extractor, get_fitness, get_sampler, get_search_space, plugins_report
from subnas.search import search
from subnas.subnet import ResolvedSubNetwork, SubNetwork, SubNetworkError
from subnas.supernet import Supernet

# The flexible export format loads through the Auto classes once subnas is imported.
AutoConfig.register("subnas", SubnasConfig, exist_ok=True)
AutoModelForCausalLM.register(SubnasConfig, SubnasForCausalLM, exist_ok=True)

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
    "SubnasForCausalLM",
    "Supernet",
    "count_parameters",
    "extract",
    "get_extractor",
    "get_fitness",
    "get_sampler",
    "get_search_space",
    "hookimpl",
    "plugins_report",
    "search",
]
