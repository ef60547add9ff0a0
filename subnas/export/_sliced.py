"""Extraction that reads only the kept slices of a safetensors model: memory in proportion to the sub-network.

`SlicedSource` stands for a model folder (or a model name resolved to one: ``"default"``, a cached
Hub name) without loading it. Its `SlicedSource.sub_state_dict` returns exactly the tensors that
`SubnasForCausalLM.sub_state_dict` returns for the same sub-network of the loaded model, reading
each from the files with ``safe_open(...).get_slice(name)[rows, cols]``; `subnas.extract` accepts a
`SlicedSource` in place of a `subnas.Supernet` and writes the same files byte for byte. A 25%
sub-network of a 70B model so needs the sub-network's memory, not the 70B.

How the kept slices are found, with no per-family code:

1. the selection: a `SubnasForCausalLM` built on the meta device (no memory) gets the sub-network,
   and its blocks list, as for every export, ``(weight, kept indices per dim)`` (`_Block.slices`);
2. where each subnas weight lives in the files: the family's own ``to_subnas_state`` is run on
   *probe* tensors whose values are their own index along one stored dim (``arange``, with the
   other dims of length 1, or broadcast with stride 0 where the family reshapes them), so each
   output element names the stored row (or column) it came from. Families rename, split, reshape
   and transpose weights; none computes with them, and the probe relies on that (a family that
   scaled weights would be caught by the byte-for-byte tests, tests/test_sliced_extract.py);
3. the read: kept rows are sorted and read in spans of at most ``block_bytes`` of the source
   (columns: the covering range, then gathered), each span through a freshly opened file so that
   its memory-mapped pages leave the process once copied. Peak memory is the sub-network in
   ``dtype`` plus one span (64 MiB by default) plus the file headers.

`open_source` makes the automatic choice `subnas extract` uses: a folder (or cached model name)
whose weights are all in ``*.safetensors`` files of a supported family is read sliced; anything
else (``.bin`` weights, a Hub name that is not cached, an unknown layout) is loaded whole with
`subnas.Supernet.from_pretrained`, as before.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from subnas.config import SubnasConfig
from subnas.families import ModelFamily, family_for, load_hf_config
from subnas.subnet import ResolvedSubNetwork, SubNetwork

BLOCK_BYTES = 64 * 2**20  # the most source bytes one read holds besides the output


@dataclass(frozen=True)
class _Located:
    """A subnas weight's place in the files: the stored key, and per subnas dim the stored dim and
    the stored index of each of its entries."""

    file: str
    key: str
    dims: tuple[tuple[int, torch.Tensor], ...]


class SlicedSource:
    """A safetensors model folder that sub-networks are read from slice by slice, never whole.

    Example:
        >>> import tempfile, torch
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> from subnas import SubNetwork, Supernet
        >>> folder = tempfile.mkdtemp()
        >>> LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        ...                              intermediate_size=64)).save_pretrained(folder)
        >>> sub = SubNetwork(n_layers=1, intermediate_size=16)
        >>> sliced = SlicedSource(folder).sub_state_dict(sub)
        >>> supernet = Supernet.from_pretrained(folder)
        >>> with supernet.sub_network(sub):
        ...     whole = supernet.model.sub_state_dict()
        >>> sliced.keys() == whole.keys() and all(torch.equal(sliced[k], whole[k]) for k in whole)
        True
    """

    def __init__(self, folder: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32,
                 source: str | None = None, block_bytes: int = BLOCK_BYTES) -> None:
        from subnas.supernet import load_tokenizer

        self.folder = Path(folder)
        self.files = safetensors_files(self.folder)
        if self.files is None:
            raise FileNotFoundError(f"{folder} has no *.safetensors weights; load it with Supernet.from_pretrained")
        self.dtype, self.block_bytes = dtype, block_bytes
        self.source = source if source is not None else str(folder)
        config = load_hf_config(str(self.folder))
        self.hf_config = None if isinstance(config, SubnasConfig) else config
        self.subnas_config: SubnasConfig = config if self.hf_config is None else \
            family_for(config.model_type).to_subnas_config(config)
        self.tokenizer = load_tokenizer(str(self.folder))
        self._located: dict[str, _Located] | None = None

    @property
    def family(self) -> ModelFamily | None:
        return None if self.hf_config is None else family_for(self.hf_config.model_type)

    def count_parameters(self, subnet: SubNetwork | ResolvedSubNetwork | None = None) -> int:
        from subnas.params import count_parameters

        return count_parameters(self.subnas_config, subnet)

    def __repr__(self) -> str:
        return f"SlicedSource({self.source!r}, dtype={self.dtype})"

    # ------------------------------------------------------------------ reading
    def sub_state_dict(self, subnet: SubNetwork | ResolvedSubNetwork | dict[str, Any] | None) -> dict[str, torch.Tensor]:
        """The sub-network's weights, as `SubnasForCausalLM.sub_state_dict` of the loaded model returns them."""
        from subnas.modeling import SubnasForCausalLM

        subnet = SubNetwork.coerce(subnet)
        with torch.device("meta"):
            model = SubnasForCausalLM(self.subnas_config)
        model.set_sub_network(subnet)
        names = {id(p): n for n, p in model.named_parameters()}
        located = self.located(model)
        plan, out = model._subnet_plan, {}
        blocks = [("model.", model.model)] + ([] if self.subnas_config.tie_word_embeddings else [("lm_head.", model.lm_head)])
        for prefix, block in blocks:
            for name, param, selection in block.slices(plan):
                out[prefix + name] = self._read(located[names[id(param)]], param.shape, selection)
        return out

    def located(self, model: Any) -> dict[str, _Located]:
        """Where every weight of the full subnas model lives in the files (computed once)."""
        if self._located is None:
            shapes: dict[str, tuple[str, tuple[int, ...]]] = {}
            for file, keys in self.files.items():
                with safe_open(file, framework="pt") as handle:
                    for key in keys:
                        shapes[key] = (file, tuple(handle.get_slice(key).get_shape()))
            self._located = locate_weights(self.family, self.subnas_config, shapes)
        missing = [n for n, _ in model.named_parameters() if n not in self._located]
        if missing:
            raise UnsupportedLayout(f"{self.folder}: weights {missing[:3]} not found in the safetensors files")
        return self._located

    def _read(self, where: _Located, shape: torch.Size, selection: Any) -> torch.Tensor:
        kept = [torch.arange(n) for n in shape]
        for dim, idx in selection:
            kept[dim] = kept[dim][idx]
        stored = [torch.empty(0, dtype=torch.long)] * len(shape)
        for e, (d, index) in enumerate(where.dims):
            stored[d] = index[kept[e]]
        block = read_rows(where.file, where.key, stored, self.dtype, self.block_bytes)
        order = [d for d, _ in where.dims]  # subnas dim e is stored dim order[e]
        return block.permute(*order).contiguous() if order != sorted(order) else block


class UnsupportedLayout(ValueError):
    """The folder's weights cannot be read slice by slice (the message says why); load it whole."""


def safetensors_files(folder: Path) -> dict[str, list[str]] | None:
    """Shard file -> the keys it holds, when every weight of ``folder`` is in safetensors; else ``None``."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files: dict[str, list[str]] = {}
        for key, file in weight_map.items():
            files.setdefault(str(folder / file), []).append(key)
        return files
    shards = sorted(folder.glob("*.safetensors"))
    if not shards or any(folder.glob("*.bin")):
        return None
    files = {}
    for shard in shards:
        with safe_open(str(shard), framework="pt") as handle:
            files[str(shard)] = list(handle.keys())
    return files


def locate_weights(family: ModelFamily | None, config: SubnasConfig,
                   shapes: dict[str, tuple[str, tuple[int, ...]]]) -> dict[str, _Located]:
    """For every subnas weight, its stored key and, per subnas dim, the stored dim and indices (see the module doc)."""

    def convert(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return dict(state) if family is None else family.to_subnas_state(state, config)

    located: dict[str, _Located] = {}
    for key, (file, shape) in shapes.items():
        try:
            expected = convert({key: torch.empty(shape, device="meta")})
        except Exception as exc:  # a family's own "unexpected weight" error, or a shape it cannot split
            raise UnsupportedLayout(f"{file}: cannot map stored weight {key!r} ({exc})") from None
        dims: dict[str, list[tuple[int, torch.Tensor] | None]] = {n: [None] * t.dim() for n, t in expected.items()}
        for d in range(len(shape)):
            for name, (e, index) in _probe(convert, key, shape, d, expected).items():
                dims[name][e] = (d, index)
        for name, per_dim in dims.items():
            if any(x is None for x in per_dim):
                raise UnsupportedLayout(f"{file}: the layout of {key!r} -> {name!r} is not a slicing of the stored weight")
            located[name] = _Located(file, key, tuple(per_dim))  # type: ignore[arg-type]
    return located


def _probe(convert: Any, key: str, shape: tuple[int, ...], d: int,
           expected: dict[str, torch.Tensor]) -> dict[str, tuple[int, torch.Tensor]]:
    """Per output weight of stored ``key``: the output dim that stored dim ``d`` becomes, and the stored
    index of each of its entries. Tries a probe of length 1 in the other dims (no memory), then one
    broadcast over them with stride 0 (for families that reshape using the other dims' sizes)."""
    ids = torch.arange(shape[d])
    along = [1] * len(shape)
    along[d] = shape[d]
    for probe in (ids.view(along), ids.view(along).expand(shape)):
        try:
            out = convert({key: probe})
        except (RuntimeError, ValueError, IndexError):
            continue
        if out.keys() != expected.keys():
            continue
        found = {}
        for name, t in out.items():
            full = expected[name].shape
            if t.dim() != len(full) or any(n not in (1, f) for n, f in zip(t.shape, full)):
                break
            varying = [e for e in range(t.dim()) if full[e] > 1 and _varies(t, e)]
            if len(varying) > 1 or (not varying and shape[d] > 1 and t.numel() > 1):
                break
            e = varying[0] if varying else next((e for e in range(t.dim()) if t.shape[e] == shape[d]), 0)
            line = t[tuple(slice(None) if i == e else 0 for i in range(t.dim()))]
            found[name] = (e, line.reshape(-1).expand(full[e]).clone() if line.numel() == 1 else line.clone())
        else:
            return found
    return {}


def _varies(t: torch.Tensor, e: int) -> bool:
    """Whether ``t`` changes along dim ``e`` (read on one line, as the probe is constant across other dims)."""
    if t.shape[e] < 2:
        return False
    line = t[tuple(slice(None) if i == e else 0 for i in range(t.dim()))]
    return bool((line != line[0]).any())


def read_rows(file: str, key: str, index: list[torch.Tensor], dtype: torch.dtype, block_bytes: int) -> torch.Tensor:
    """``stored[index[0]][:, index[1]]...`` of ``key`` in ``file``, in ``dtype``, reading kept rows in
    sorted spans of at most ``block_bytes`` (full stored rows) and the covering range of the other dims."""
    with safe_open(file, framework="pt") as handle:
        full = tuple(handle.get_slice(key).get_shape())
        itemsize = torch.empty(0, dtype=_dtype(handle.get_slice(key).get_dtype())).element_size()
    if not full:  # a scalar
        with safe_open(file, framework="pt") as handle:
            return handle.get_tensor(key).to(dtype)
    rest = [(int(i.min()), int(i.max()) + 1) if i.numel() else (0, 0) for i in index[1:]]
    out = torch.empty(len(index[0]), *(len(i) for i in index[1:]), dtype=dtype)
    if out.numel() == 0:
        return out
    rows, inverse = torch.unique(index[0], return_inverse=True)  # sorted
    row_bytes = itemsize * max(1, int(torch.tensor(full[1:]).prod()) if len(full) > 1 else 1)
    span = max(1, block_bytes // row_bytes)
    start = 0
    while start < len(rows):
        lo = int(rows[start])
        stop = int(torch.searchsorted(rows, lo + span))  # the unique kept rows in [lo, lo + span)
        hi = int(rows[stop - 1]) + 1
        with safe_open(file, framework="pt") as handle:  # opened per span: its mapped pages go with it
            block = handle.get_slice(key)[(slice(lo, hi), *(slice(a, b) for a, b in rest))]
        block = block.index_select(0, rows[start:stop] - lo)
        for dim, ((a, _), i) in enumerate(zip(rest, index[1:]), start=1):
            if not (len(i) == block.shape[dim] and bool((i == torch.arange(a, a + len(i))).all())):
                block = block.index_select(dim, i - a)
        positions = ((inverse >= start) & (inverse < stop)).nonzero().squeeze(1)
        out[positions] = block.index_select(0, inverse[positions] - start).to(dtype)
        start = stop
    return out


def _dtype(name: str) -> torch.dtype:
    """A torch dtype from safetensors' name for it (``"BF16"``, ``"F32"``, ...)."""
    table = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
             "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
             "BOOL": torch.bool}
    return table[name]


def local_folder(name: str | os.PathLike[str]) -> Path | None:
    """The local folder a model name or path stands for (``"default"``, a folder, a cached Hub name), or ``None``."""
    from subnas.data._assets import _cached_snapshot, locate_model

    try:
        located = Path(locate_model(name)).expanduser()
    except Exception:
        return None
    if located.is_dir():
        return located
    cached = _cached_snapshot(str(name))
    return Path(cached) if cached is not None and Path(cached).is_dir() else None


def open_source(model: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32) -> Any:
    """What `subnas extract` reads ``model`` with: a `SlicedSource` when its weights are all safetensors
    and map slice by slice (memory ∝ the sub-network), else a whole `subnas.Supernet`."""
    from subnas.supernet import Supernet

    folder = local_folder(model)
    if folder is not None and safetensors_files(folder) is not None:
        from subnas._io import check_model_files

        check_model_files(str(folder))
        from subnas.modeling import SubnasForCausalLM

        try:
            source = SlicedSource(folder, dtype=dtype, source=str(folder))
            with torch.device("meta"):
                model = SubnasForCausalLM(source.subnas_config)
            source.located(model)  # fails here, not in extract, for a layout it cannot slice
            return source
        except UnsupportedLayout:
            pass
    return Supernet.from_pretrained(model, dtype=dtype)
