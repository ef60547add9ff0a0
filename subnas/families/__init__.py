"""Model families: the bridge between a `transformers` architecture and `SubnasConfig`.

One file per family (``llama.py``, ``gpt_neox.py``, ...), each a `ModelFamily` subclass that knows
three things about its `transformers` architecture:

1. ``to_subnas_config(hf_config)`` — its config as a `SubnasConfig` (no weights needed);
2. ``to_subnas_state(hf_state, config)`` — its weights renamed (and unfused) into subnas' layout;
3. ``to_hf(sub_config, state, hf_config)`` — a sub-network's config and weights back in the stock
   layout, or `NotExpressible` naming why the stock architecture cannot hold it (the extractor then
   writes the flexible subnas format instead).

Families are looked up by ``model_type``; plugins can add more through the ``register_model_families``
hook (see `subnas.hookspecs`).
"""

from __future__ import annotations

import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig, PretrainedConfig

from subnas.config import SubnasConfig

StateDict = dict[str, torch.Tensor]


class NotExpressible(Exception):
    """The stock `transformers` architecture cannot express this sub-network (message says why)."""


class UnsupportedModelError(ValueError):
    """A model whose family or configuration subnas does not support (message lists what is)."""


class ModelFamily(ABC):
    """How one `transformers` architecture maps to and from `SubnasConfig`."""

    #: ``config.model_type`` values this family handles.
    model_types: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def to_subnas_config(self, hf_config: PretrainedConfig) -> SubnasConfig:
        """The full model's architecture as a `SubnasConfig`."""

    @abstractmethod
    def to_subnas_state(self, hf_state: StateDict, config: SubnasConfig) -> StateDict:
        """The `transformers` state dict renamed into subnas' layout (tensors may be views)."""

    @abstractmethod
    def to_hf(self, sub: SubnasConfig, state: StateDict, hf_config: PretrainedConfig) -> tuple[PretrainedConfig, StateDict]:
        """A sub-network (config + subnas-layout weights) in stock layout, or raise `NotExpressible`."""

    def hf_config_for(self, sub: SubnasConfig, hf_config: PretrainedConfig) -> PretrainedConfig:
        """Only the stock config `to_hf` would write (no weights), or raise `NotExpressible`.

        Zero-padding (`subnas.export._padding`) calls it to find the smallest padded shape a stock class
        accepts without converting weights for every try. Optional for plugin families: without it
        padding tries one shape through `to_hf`.
        """
        raise NotImplementedError

    # Shared helper for the families' ``to_subnas_state``.
    def renamed_from_hf(self, hf_state: StateDict, config: SubnasConfig, *, layers: str,
                        layer_names: Mapping[str, str], global_names: Mapping[str, str],
                        convert: Callable[[int, str, str, torch.Tensor], StateDict | None] | None = None,
                        ignore: re.Pattern[str] | None = None, aliases: Mapping[str, str] | None = None,
                        module_name: Callable[[str], str] | None = None) -> StateDict:
        """The one `transformers` -> subnas renaming loop every family's `to_subnas_state` runs.

        ``layer_names`` and ``global_names`` map subnas module names to the stock ones (per decoder
        layer, and outside the layers); a stock layer module is ``{layers}.{i}.{name}``. ``convert(i,
        name, param, tensor)`` may take a layer weight over (unfuse q|k|v, transpose a Conv1D) and return
        its subnas entries, or None to rename it as usual. Keys matching ``ignore`` (buffers a
        checkpoint may carry) are skipped, ``aliases`` maps further stock module names to subnas ones,
        ``module_name`` normalises a stock module name first. A
        weight nothing maps is an `UnsupportedModelError`; a tied output head is dropped.

        Example:
            >>> import torch
            >>> family = family_for("llama")
            >>> state = {"model.layers.0.mlp.up_proj.weight": torch.zeros(2, 2), "model.norm.weight": torch.ones(2)}
            >>> sorted(family.renamed_from_hf(state, SubnasConfig(num_hidden_layers=1), layers="model.layers",
            ...        layer_names={"mlp.up": "mlp.up_proj"}, global_names={"model.norm": "model.norm"}))
            ['model.layers.0.mlp.up.weight', 'model.norm.weight']
        """
        layer_map = {stock: ours for ours, stock in layer_names.items()}
        global_map = {**{stock: ours for ours, stock in global_names.items()}, **(aliases or {})}
        in_layer = re.compile(rf"{re.escape(layers)}\.(\d+)\.(.+)")
        out: StateDict = {}
        for key, tensor in hf_state.items():
            if ignore is not None and ignore.search(key):
                continue
            module, _, param = key.rpartition(".")
            if module_name is not None:
                module = module_name(module)
            m = in_layer.fullmatch(module)
            if m:
                i, name = int(m.group(1)), m.group(2)
                converted = convert(i, name, param, tensor) if convert is not None else None
                if converted is not None:
                    out.update(converted)
                    continue
                if name in layer_map:
                    out[f"model.layers.{i}.{layer_map[name]}.{param}"] = tensor
                    continue
            elif module in global_map:
                out[f"{global_map[module]}.{param}"] = tensor
                continue
            raise UnsupportedModelError(f"unexpected weight {key!r} for family {self.model_types[0]}")
        if config.tie_word_embeddings:
            out.pop("lm_head.weight", None)
        return out

    @staticmethod
    def renamed_to_hf(state: StateDict, *, layers: str, layer_names: Mapping[str, str],
                      global_names: Mapping[str, str],
                      convert: Callable[[int, str, str, torch.Tensor], StateDict | None] | None = None,
                      ignore: re.Pattern[str] | None = None) -> StateDict:
        """The one subnas -> `transformers` renaming loop, the mirror of `renamed_from_hf`.

        A subnas layer weight ``model.layers.{i}.{name}.{param}`` becomes
        ``{layers}.{i}.{layer_names[name]}.{param}``, any other ``{module}.{param}`` becomes
        ``{global_names[module]}.{param}``. ``convert(i, name, param, tensor)`` may take a layer weight
        over and return its stock entries (``{}`` to drop it, e.g. q/k/v that the family fuses
        afterwards), or None to rename it as usual; keys matching ``ignore`` are skipped.

        Example:
            >>> import torch
            >>> state = {"model.layers.0.mlp.up.weight": torch.zeros(2, 2), "model.norm.weight": torch.ones(2)}
            >>> sorted(ModelFamily.renamed_to_hf(state, layers="model.layers", layer_names={"mlp.up": "mlp.up_proj"},
            ...        global_names={"model.norm": "model.norm"}))
            ['model.layers.0.mlp.up_proj.weight', 'model.norm.weight']
        """
        in_layer = re.compile(r"model\.layers\.(\d+)\.(.+)")
        out: StateDict = {}
        for key, tensor in state.items():
            if ignore is not None and ignore.search(key):
                continue
            module, _, param = key.rpartition(".")
            m = in_layer.fullmatch(module)
            if m is None:
                out[f"{global_names[module]}.{param}"] = tensor
                continue
            i, name = int(m.group(1)), m.group(2)
            converted = convert(i, name, param, tensor) if convert is not None else None
            if converted is None:
                converted = {f"{layers}.{i}.{layer_names[name]}.{param}": tensor}
            out.update(converted)
        return out

    # Shared helpers for the families' ``to_hf``.
    @staticmethod
    def stock_config(hf_config: PretrainedConfig, data: dict[str, Any]) -> PretrainedConfig:
        """``type(hf_config)`` built from ``data``; its own validation failing means `NotExpressible`."""
        try:
            return type(hf_config).from_dict(data)
        except (ValueError, TypeError, StrictDataclassError) as exc:  # transformers 5 validates configs
            cause = exc.__cause__ or exc
            raise NotExpressible(f"stock {type(hf_config).__name__} rejects it: {cause}") from None

    @staticmethod
    def require_uniform(sub: SubnasConfig, *names: str) -> None:
        for name in names:
            values = getattr(sub, name)
            if len(set(map(repr, values))) > 1:
                raise NotExpressible(f"{name} differs between layers ({values}); stock models need one value")


def stock_rope_theta(sub_freqs: list[float], full_freqs: list[float], full_theta: float, rope_type: str) -> float:
    """RoPE base that reproduces a sub-network's kept frequencies in a stock model, or `NotExpressible`.

    Keeping the first k of R/2 rotary pairs keeps inverse frequencies theta^(-2i/R), i < k; a stock
    model of rotary width r = 2k computes theta'^(-2i/r), equal for theta' = theta^(r/R). Any other
    pair selection (or a non-default RoPE type) has no stock equivalent.
    """
    if list(sub_freqs) == list(full_freqs):
        return full_theta
    if rope_type != "default":
        raise NotExpressible(f"the head size changed the rotary width and RoPE type {rope_type!r} cannot be rescaled")
    r, R = 2 * len(sub_freqs), 2 * len(full_freqs)
    theta = full_theta ** (r / R)
    stock = 1.0 / (theta ** (torch.arange(0, r, 2, dtype=torch.int64).float() / r))
    if not torch.allclose(stock, torch.tensor(sub_freqs, dtype=torch.float32), rtol=1e-5, atol=0):
        raise NotExpressible("the kept rotary pairs are not the first ones, so no stock RoPE base reproduces their frequencies")
    return theta


def _registered_families() -> Mapping[str, ModelFamily]:
    """Every family by model type: the built-in ones (plugin ``subnas_plugins.families``) and those
    third-party plugins add through the ``register_model_families`` hook."""
    from subnas.plugins import registry

    return registry("model_families")


def known_model_types() -> list[str]:
    return sorted(_registered_families())


def family_for(model_type: str) -> ModelFamily:
    """The family that handles ``model_type`` (raises `UnsupportedModelError` listing the known ones,
    or `subnas.plugins.DuplicateNameError` when two plugins registered it)."""
    families = _registered_families()
    if model_type not in families:
        raise UnsupportedModelError(
            f"model type {model_type!r} is not supported; supported: {', '.join(known_model_types())} "
            f"(a plugin can add a family through the register_model_families hook)"
        )
    return families[model_type]  # type: ignore[no-any-return]


def load_hf_config(name_or_path: str | os.PathLike[str]) -> PretrainedConfig:
    """A `transformers` config from a model folder, a ``config.json``, a hub name or ``"default"``."""
    from subnas.data._assets import locate_model

    name = locate_model(name_or_path)  # "default"; a Hub name fails fast when the Hub is unreachable
    path = Path(name)
    if path.is_file():
        data = json.loads(path.read_text())
        model_type = data.get("model_type")
        if model_type == "subnas":
            return SubnasConfig.from_dict(data)
        if not model_type:
            raise UnsupportedModelError(f"{name} has no 'model_type'; is it a transformers config.json?")
        return AutoConfig.for_model(**data)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model folder {name!r} has no config.json")
    elif name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or os.sep in name and path.parent.exists():
        raise FileNotFoundError(f"no model folder or config.json at {name!r}")
    try:
        return AutoConfig.from_pretrained(name)
    except OSError as exc:
        raise FileNotFoundError(
            f"cannot load a model config from {name!r}: not a local folder or config.json, and the hub "
            f"could not be reached or has no such model ({exc.__class__.__name__})"
        ) from None


def load_config(model_or_config: Any) -> SubnasConfig:
    """The full architecture of anything that names a model, as a `SubnasConfig`.

    Accepts a `SubnasConfig`, a `transformers` config, a model (anything with ``.config``), a
    `subnas.Supernet`, a folder, a ``config.json``, a hub name or ``"default"``.
    """
    if isinstance(model_or_config, SubnasConfig):
        return model_or_config
    supernet_config = getattr(model_or_config, "subnas_config", None)
    if isinstance(supernet_config, SubnasConfig):
        return supernet_config
    if isinstance(model_or_config, (str, os.PathLike)):
        model_or_config = load_hf_config(model_or_config)
    if not isinstance(model_or_config, PretrainedConfig):
        inner = getattr(model_or_config, "config", None)
        if not isinstance(inner, PretrainedConfig):
            raise TypeError(f"expected a model, config or model name, got {type(model_or_config).__name__}")
        model_or_config = inner
    if isinstance(model_or_config, SubnasConfig):
        return model_or_config
    return family_for(model_or_config.model_type).to_subnas_config(model_or_config)


def rope_from_hf(rotary_cls: Any, hf_config: PretrainedConfig, layer_type: str | None = None) -> tuple[list[float], float]:
    """Inverse frequencies and attention scaling exactly as the family's own rotary module computes them."""
    params = getattr(hf_config, "rope_parameters", None) or {}
    if layer_type is not None and isinstance(params.get(layer_type), dict):
        params = params[layer_type]
    rope_type = params.get("rope_type", "default")
    if "dynamic" in str(rope_type) or rope_type == "longrope":
        raise UnsupportedModelError(
            f"RoPE type {rope_type!r} changes with sequence length; subnas supports static RoPE types "
            f"(default, linear, llama3, yarn)"
        )
    with torch.device("cpu"):
        module = rotary_cls(hf_config)
    prefix = f"{layer_type}_" if layer_type is not None else ""
    inv_freq = getattr(module, f"{prefix}inv_freq")
    scaling = getattr(module, f"{prefix}attention_scaling")
    return [float(x) for x in inv_freq.float()], float(scaling)


def config_kwargs(hf_config: PretrainedConfig) -> dict[str, Any]:
    """Token ids that a `SubnasConfig` carries over unchanged from the source config."""
    return {k: getattr(hf_config, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
