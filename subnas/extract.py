"""`extract`: write a sub-network as a standalone model folder (safetensors + config + tokenizer).

The stock `transformers` architecture of the source family is used whenever it can express the
sub-network, so ``AutoModelForCausalLM.from_pretrained(out_dir)`` works in a process that never
imported subnas. Otherwise (layer-wise widths, arbitrary rotary pairs, a head size the family
fixes, ...) the folder holds subnas' flexible format, which loads through the same Auto classes
once ``import subnas`` has registered it — never through ``trust_remote_code``.

Both formats are written from `SubnasForCausalLM.sub_state_dict`, the same index plans the
supernet evaluates with, so the exported model computes what was evaluated.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel
from transformers.initialization import no_init_weights

from subnas._io import atomic_directory
from subnas.families import NotExpressible
from subnas.modeling import SubnasForCausalLM, sub_config
from subnas.params import config_parameters
from subnas.subnet import ResolvedSubNetwork, SubNetwork

Format = Literal["auto", "stock", "subnas"]
FORMATS = ("auto", "stock", "subnas")


@dataclass(frozen=True)
class ExtractResult:
    """Where and how a sub-network was written."""

    path: str
    format: str  # "stock" or "subnas"
    architecture: str  # e.g. "LlamaForCausalLM" or "SubnasForCausalLM"
    num_parameters: int
    reason: str | None  # why the stock format was not used, if it wasn't


def extract(supernet: Any, subnet: SubNetwork | ResolvedSubNetwork | dict[str, Any] | None,
            out_dir: str | os.PathLike[str], *, format: Format = "auto", overwrite: bool = False) -> ExtractResult:
    """Write ``subnet`` of ``supernet`` to ``out_dir`` as a standalone model.

    Args:
        supernet: a `subnas.Supernet`.
        subnet: the sub-network (``None``: the full model).
        out_dir: folder to create; replaced atomically, so a killed run never leaves half a model.
        format: ``"auto"`` (stock if possible), ``"stock"`` (error if impossible) or ``"subnas"``.
        overwrite: replace a non-empty ``out_dir``.

    Returns:
        An `ExtractResult`; ``reason`` says why ``"auto"`` fell back to the flexible format.
    """
    if format not in FORMATS:
        raise ValueError(f"format={format!r} is not one of {FORMATS}")
    if isinstance(subnet, dict):
        subnet = SubNetwork.from_dict(subnet)
    config = supernet.subnas_config
    resolved = (subnet or SubNetwork()).resolve(config) if not isinstance(subnet, ResolvedSubNetwork) else subnet

    with supernet.sub_network(resolved):
        state = supernet.model.sub_state_dict()
    sub_cfg = sub_config(config, resolved)
    expected = config_parameters(sub_cfg)

    model: PreTrainedModel | None = None
    reason: str | None = None
    if format != "subnas":
        family, hf_config = supernet.family, supernet.hf_config
        if family is None:
            reason = "the supernet itself is in the flexible subnas format"
        else:
            try:
                hf_sub, hf_state = family.to_hf(sub_cfg, state, hf_config)
                model = _materialize(lambda: AutoModelForCausalLM.from_config(hf_sub), hf_state)
            except NotExpressible as exc:
                reason = str(exc)
        if model is None and format == "stock":
            raise NotExpressible(f"the stock architecture cannot express this sub-network: {reason}; "
                                 f"use format='auto' or 'subnas'")
    if model is None:
        model = _materialize(lambda: SubnasForCausalLM(sub_cfg), state)

    written = sum(p.numel() for p in model.parameters())  # shared (tied) tensors count once
    if written != expected:  # the one-counter invariant, checked on every export
        raise AssertionError(f"internal error: exported model has {written} parameters, counter says {expected}")

    out = Path(out_dir)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if supernet.tokenizer is not None:
            supernet.tokenizer.save_pretrained(tmp)
        result = ExtractResult(path=str(out), format="subnas" if isinstance(model, SubnasForCausalLM) else "stock",
                               architecture=type(model).__name__, num_parameters=written, reason=reason)
        (tmp / "subnet.json").write_text(json.dumps(resolved.to_subnetwork().to_dict()) + "\n")
        (tmp / "subnas_extract.json").write_text(json.dumps(
            {**asdict(result), "source": supernet.source, "subnet": _compact(subnet)}, indent=2) + "\n")
    return result


def _compact(subnet: Any) -> Any:
    return subnet.to_dict() if isinstance(subnet, SubNetwork) else None


def _materialize(build: Any, state: dict[str, torch.Tensor]) -> PreTrainedModel:
    """Instantiate without random init and adopt ``state`` tensors (``assign``: no extra copy).

    Not on the meta device: `transformers` models compute non-persistent buffers (RoPE tables)
    in their constructors, which must be real.
    """
    with no_init_weights():
        model = build()
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    tied = set(getattr(model, "_tied_weights_keys", None) or {}) if model.config.tie_word_embeddings else set()
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise RuntimeError(f"internal error: export state does not fit {type(model).__name__}: "
                           f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    if model.config.tie_word_embeddings:
        model.tie_weights()
    model.eval()
    return model
