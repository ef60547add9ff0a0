"""`extract`: write a sub-network as a standalone model folder (safetensors + config + tokenizer).

``format="auto"`` writes an exact stock `transformers` model whenever one exists, so
``AutoModelForCausalLM.from_pretrained(out_dir)`` — and with it ``lm_eval --model hf``, vLLM and
llama.cpp's converter — works in a process that never imported subnas. It tries, in order:

1. the family's own class (``LlamaForCausalLM`` for a Llama sub-network);
2. another stock class that computes the same function when the family's config refuses the
   shape (e.g. ``MistralForCausalLM`` for Llama shapes with hidden % heads != 0, see
   `subnas.families.llama`) — same weights, same parameter count;
3. zero-padding (`subnas.export._padding`): layer-wise widths, or head counts a stock config refuses,
   padded to one stock shape with units that compute exactly zero and stay zero under training.
   The result states the true and the padded parameter count (``num_parameters`` /
   ``exported_parameters``); ``pad=False`` skips this step.

Only when none is exact (different head sizes per layer, arbitrary rotary pairs, ...) or when
asked (``format="subnas"``) is the flexible format written: `SubnasForCausalLM`, which loads
through the same Auto classes once ``import subnas`` has registered it — never through
``trust_remote_code``. Its folder's README.md and config.json say so, because transformers' own
error for an unregistered model type suggests upgrading transformers, which does not help.

Every format is written from `SubnasForCausalLM.sub_state_dict`, the same index plans the
supernet evaluates with, so the exported model computes what was evaluated.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel
from transformers.initialization import no_init_weights

from subnas._io import transformers_bars_off
from subnas._io import atomic_directory
from subnas.data._assets import shareable_name
from subnas.families import NotExpressible
from subnas.interfaces import ExtractResult
from subnas.modeling import SubnasForCausalLM, sub_config
from subnas.export._padding import to_hf_padded
from subnas.export._sliced import SlicedSource
from subnas.params import config_parameters
from subnas.subnet import ResolvedSubNetwork, SubNetwork

Format = Literal["auto", "stock", "subnas"]
FORMATS = ("auto", "stock", "subnas")

STOCK_LOAD = "AutoModelForCausalLM.from_pretrained({path!r}) in any process; no subnas needed"


def _flexible_load(path: str, reason: str | None) -> str:
    """What to do with a flexible folder: transformers' own error for it suggests upgrading transformers."""
    how = (f"`import subnas` first (it registers model type 'subnas' with transformers' Auto classes), then "
           f"AutoModelForCausalLM.from_pretrained({path!r})")
    if reason is None:  # written on request: a stock export exists
        return (f"{how}; tools that cannot import subnas (lm_eval --model hf, vLLM, llama.cpp) need a stock export: "
                f"re-run `subnas extract ... --format stock` (Python: format='stock')")
    return (f"{how}; no exact stock model exists ({reason}), so tools that cannot import subnas cannot run it: "
            f"evaluate it through subnas (`subnas evaluate`, `subnas.evaluation.evaluate_tasks`, or "
            f"`python -c \"import subnas, lm_eval.__main__ as m; m.cli_evaluate()\" --model hf ...`), or choose a "
            f"sub-network without that property")


def extract(supernet: Any, subnet: SubNetwork | ResolvedSubNetwork | dict[str, Any] | None,
            out_dir: str | os.PathLike[str], *, format: Format = "auto", overwrite: bool = False,
            pad: bool = True) -> ExtractResult:
    """Write ``subnet`` of ``supernet`` to ``out_dir`` as a standalone model.

    Args:
        supernet: a `subnas.Supernet`, or a `SlicedSource` (`subnas.export.open_source`), which reads only
            the kept slices from the model's safetensors files.
        subnet: the sub-network (``None``: the full model).
        out_dir: folder to create; replaced atomically, so a killed run never leaves half a model.
        format: ``"auto"`` (an exact stock model if one exists, else flexible), ``"stock"`` (error
            if no exact stock model exists) or ``"subnas"`` (the flexible format).
        overwrite: replace a non-empty output folder.
        pad: allow zero-padded stock exports. Turn it off when the exported architecture itself
            matters, e.g. to re-initialise it at random as a same-size baseline.

    Returns:
        An `ExtractResult`; ``reason`` says why the flexible format was written, ``note`` how a stock
        export differs from the family's own class (another class, padding).

    Example:
        >>> import tempfile
        >>> from subnas import Supernet, SubNetwork, extract
        >>> out = tempfile.mkdtemp()
        >>> extract(Supernet.from_pretrained("default"), SubNetwork(n_layers=20, n_embd=448, num_heads=6,
        ...         query_groups=2), out, overwrite=True).architecture
        'MistralForCausalLM'
    """
    if format not in FORMATS:
        raise ValueError(f"format={format!r} is not one of {FORMATS}")
    subnet = SubNetwork.coerce(subnet)
    config = supernet.subnas_config
    resolved = (subnet or SubNetwork()).resolve(config) if not isinstance(subnet, ResolvedSubNetwork) else subnet

    state = sub_state_dict(supernet, resolved)
    sub_cfg = sub_config(config, resolved)
    expected = config_parameters(sub_cfg)

    model: PreTrainedModel | None = None
    written_cfg, reason, note, padding = sub_cfg, None, None, None
    if format != "subnas":
        family, hf_config = supernet.family, supernet.hf_config
        if hf_config is not None and resolved.vocab is not None:
            hf_config = _pruned_vocab_config(hf_config, resolved.vocab)
        if family is None:
            reason = "the supernet itself is in the flexible subnas format"
        else:
            try:
                hf_sub, hf_state = family.to_hf(sub_cfg, state, hf_config)
            except NotExpressible as exc:
                reason = str(exc)
                if pad:
                    try:
                        hf_sub, hf_state, written_cfg, padding = to_hf_padded(
                            family, sub_cfg, state, hf_config, full=config, resolved=resolved)
                    except NotExpressible as pad_exc:
                        reason = f"{reason}; zero-padding: {pad_exc}"
                    else:
                        note, reason = f"zero-padded ({reason})", None
            if reason is None:
                model = _materialize(lambda: AutoModelForCausalLM.from_config(hf_sub), hf_state)
                if type(hf_config).__name__ != type(hf_sub).__name__:
                    own = f"{type(hf_config).__name__} refuses this shape; {type(hf_sub).__name__} computes the same function"
                    note = own if note is None else f"{note}; {own}"
        if model is None and format == "stock":
            raise NotExpressible(f"no stock architecture computes this sub-network exactly: {reason}; "
                                 f"use format='auto' or 'subnas' for the flexible format")
    if model is None:
        written_cfg = sub_cfg
        model = _materialize(lambda: SubnasForCausalLM(sub_cfg), state)

    written = sum(p.numel() for p in model.parameters())  # shared (tied) tensors count once
    if written != config_parameters(written_cfg):  # the one-counter invariant, checked on every export
        raise AssertionError(f"internal error: exported model has {written} parameters, counter says "
                             f"{config_parameters(written_cfg)}")

    out = Path(out_dir)
    flexible = isinstance(model, SubnasForCausalLM)

    def how_to_load(path: str) -> str:
        return _flexible_load(path, reason) if flexible else STOCK_LOAD.format(path=path)

    result = ExtractResult(path=str(out), format="subnas" if flexible else "stock", architecture=type(model).__name__,
                           num_parameters=expected, reason=reason, exported_parameters=written, padding=padding,
                           note=note, how_to_load=how_to_load(str(out)))
    # The folder is made to be shared: what it writes names no path of this machine. It loads by
    # the folder's own name (wherever it is copied to) and names its source without the writer's paths.
    how = how_to_load(out.name)
    shared = {**asdict(result), "how_to_load": how}
    del shared["path"]
    with atomic_directory(out, overwrite=overwrite) as tmp, transformers_bars_off():
        model.save_pretrained(tmp, safe_serialization=True)
        if supernet.tokenizer is not None and resolved.vocab is not None:
            from subnas.vocab import save_pruned_tokenizer

            save_pruned_tokenizer(supernet.tokenizer, resolved.vocab, tmp)  # kept tokens and merges only
        elif supernet.tokenizer is not None:
            supernet.tokenizer.save_pretrained(tmp)
        if flexible:
            # Read by people who open config.json after transformers' "does not recognize this
            # architecture" error; transformers itself ignores the key (it becomes a config attribute).
            cfg_path = tmp / "config.json"
            data = json.loads(cfg_path.read_text())
            data.pop("how_to_load", None)  # a flexible source folder's own hint names the old path
            cfg_path.write_text(json.dumps({"how_to_load": how, **data}, indent=2) + "\n")
        (tmp / "subnet.json").write_text(json.dumps(resolved.to_subnetwork().to_dict()) + "\n")
        (tmp / "subnas_extract.json").write_text(json.dumps(
            {**shared, "source": shareable_name(supernet.source), "source_fingerprint": _config_fingerprint(config),
             "subnet": _compact(subnet)}, indent=2) + "\n")
        (tmp / "README.md").write_text(_readme(replace(result, how_to_load=how)))
    return result


def _config_fingerprint(config: Any) -> str:
    """The source architecture's fingerprint: a hash of its full config. The same whether the
    weights were sliced from the files or taken from a loaded model (hashing every weight would
    make slicing read the whole model)."""
    import hashlib

    text = json.dumps({k: v for k, v in config.to_dict().items() if k not in ("_name_or_path", "transformers_version")},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def sub_state_dict(supernet: Any, resolved: ResolvedSubNetwork) -> dict[str, torch.Tensor]:
    """The sub-network's weights: sliced from the files for a `SlicedSource`, else from the loaded supernet."""
    if isinstance(supernet, SlicedSource):
        return supernet.sub_state_dict(resolved)
    with supernet.sub_network(resolved):
        return supernet.model.sub_state_dict()  # type: ignore[no-any-return]


def _pruned_vocab_config(hf_config: Any, vocab: tuple[int, ...]) -> Any:
    """A copy of the source `transformers` config with the pruned vocabulary's size and token ids,
    so every family's ``to_hf`` (which starts from the source config) writes the pruned model."""
    import copy

    from subnas.modeling import remap_token_ids

    cfg = copy.deepcopy(hf_config)
    cfg.vocab_size = len(vocab)
    for key, value in remap_token_ids(hf_config, vocab).items():
        setattr(cfg, key, value)
    return cfg


def _readme(r: ExtractResult) -> str:
    lines = [f"# Sub-network exported by subnas ({r.format} format)", "",
             f"Architecture: `{r.architecture}`. Parameters: {r.num_parameters:,}"
             + ("" if r.exported_parameters == r.num_parameters else
                f" ({r.exported_parameters:,} in these files: zero-padded, see below)") + ".", "",
             "## Loading", "", f"{r.how_to_load}.", ""]
    if r.format == "subnas":
        lines += ["Without `import subnas`, transformers fails with \"model type `subnas` ... Transformers does not "
                  "recognize this architecture\"; upgrading transformers does not help — importing subnas does.", ""]
    if r.note:
        lines += ["## How it differs from the source family's own class", "", f"{r.note}.", ""]
    if r.padding:
        lines += ["Padded heads sit in whole zero query groups and padded MLP neurons have zero in/out weights: "
                  "they add exactly 0 to every output and get zero gradients, so they stay zero under training "
                  "(AdamW and weight decay included)."
                  + (" Some real query groups are written as several stock groups with copies of their key/value "
                     "weights (`kv_copies`): the same function, but training may move the copies apart."
                     if r.padding["kv_copies"] else "")
                  + (" Heads are padded to one head size; layers whose own head size is smaller have their query "
                     "weights multiplied by `query_scale` = sqrt(padded / own head size) to keep the attention "
                     "scale: the same function, but optimizers see a rescaled parameter."
                     if r.padding["query_scale"] else ""), "",
                  "Per-layer true widths, and the stock shape every layer is padded to:", "",
                  "```json", json.dumps(r.padding, indent=2), "```", ""]
    if r.reason:
        lines += ["## Why not a stock architecture", "", f"{r.reason}.", ""]
    return "\n".join(lines)


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
