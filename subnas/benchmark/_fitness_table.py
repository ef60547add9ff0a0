"""Recorded fitness tables: what cheap benchmark fitness functions (``replay``, ``surrogate``) read.

A table holds one row per evaluated sub-network of one model: the canonical key
(`subnas.SubNetwork.key`, so equal keys mean the same selected units whichever space
produced them), the sub-network as its space wrote it, its fitness, its parameter count, the bin
it was sampled for and how long the evaluation took. Its metadata says what was measured (model,
spaces, fitness name, direction, data) and holds the model's `SubnasConfig`, so a replay needs
neither the weights nor the Hub. `subnas.benchmark.record_table` writes one.

Two file formats, chosen by suffix: ``.json`` (``{"format", "metadata", "rows"}``, one row per
line) and ``.csv`` (a ``# metadata: {json}`` first line, then one row per line, the sub-network
as a JSON string).

Example:
    >>> from subnas import SubnasConfig, SubNetwork
    >>> cfg = SubnasConfig(num_hidden_layers=4, hidden_size=64, num_attention_heads=4, intermediate_size=128)
    >>> table = FitnessTable({"fitness": "toy", "direction": "minimize"}, config=cfg)
    >>> table.add(SubNetwork(n_layers=2), fitness=3.5, parameters=count_parameters(cfg, SubNetwork(n_layers=2)))
    >>> table.lookup(SubNetwork(n_layers=2, n_embd=64))["fitness"]  # n_embd=64 is the full width: same units
    3.5
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from subnas._io import atomic_write_text
from subnas.config import SubnasConfig
from subnas.params import count_parameters
from subnas.subnet import SubNetwork

FORMAT = "subnas-fitness-table/1"
FEATURES = ("n_layers", "n_embd", "heads_mean", "heads_min", "heads_max", "groups_mean", "groups_min",
            "groups_max", "head_size_mean", "head_size_min", "head_size_max", "mlp_mean", "mlp_min", "mlp_max",
            "log10_parameters")
_CSV_COLUMNS = ("key", "space", "fitness", "parameters", "bin_lo", "bin_hi", "seconds", "subnet")
# Architecture fields a key depends on: a table recorded on another model must not be replayed.
_SHAPE_FIELDS = ("family", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "head_dim", "rotary_dim", "intermediate_size", "tie_word_embeddings")


def table_key(config: SubnasConfig, subnet: SubNetwork) -> str:
    """The canonical key of ``subnet`` in ``config``'s model (what search dedup uses)."""
    return subnet.key(config)


def architecture_features(config: SubnasConfig, subnet: SubNetwork) -> np.ndarray:
    """Sizes that describe an architecture independently of its space, in `FEATURES` order."""
    r = subnet.resolve(config)
    per_layer = [[s.num_heads for s in r.layers], [s.query_groups for s in r.layers],
                 [s.head_size for s in r.layers], [s.intermediate_size for s in r.layers]]
    values: list[float] = [len(r.layers), len(r.embd)]
    for xs in per_layer:
        values += [float(np.mean(xs)), float(min(xs)), float(max(xs))]
    values.append(math.log10(count_parameters(config, subnet)))
    return np.asarray(values, dtype=np.float64)


def model_signature(config: SubnasConfig) -> dict[str, Any]:
    """The fields of ``config`` that keys depend on (compared before replaying a table)."""
    return {k: getattr(config, k, None) for k in _SHAPE_FIELDS}


@dataclass
class FitnessTable:
    """Rows of recorded evaluations plus metadata (see the module docstring).

    Args:
        metadata: free-form; ``fitness`` and ``direction`` are expected, ``model``, ``spaces`` and
            ``data`` recommended.
        rows: dicts with ``key``, ``space``, ``subnet``, ``fitness``, ``parameters``, ``bin``, ``seconds``.
        config: the model's architecture (stored in the metadata when saved).
    """

    metadata: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    config: SubnasConfig | None = None
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.config is None and isinstance(self.metadata.get("config"), dict):
            self.config = SubnasConfig.from_dict(self.metadata["config"])
        self._index = {row["key"]: i for i, row in enumerate(self.rows)}

    @property
    def direction(self) -> str:
        return str(self.metadata.get("direction", "minimize"))

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def require_config(self) -> SubnasConfig:
        if self.config is None:
            raise ValueError("this fitness table holds no model config; pass the model (supernet=...) or config=")
        return self.config

    def key(self, subnet: SubNetwork) -> str:
        return table_key(self.require_config(), subnet)

    def lookup(self, subnet: SubNetwork) -> dict[str, Any] | None:
        """The row recorded for exactly this sub-network (same selected units), or None."""
        i = self._index.get(self.key(subnet))
        return None if i is None else self.rows[i]

    def add(self, subnet: SubNetwork, *, fitness: float, parameters: int, space: str = "",
            bin: tuple[int, int] | None = None, seconds: float = 0.0, key: str | None = None) -> None:
        """Append a row (non-finite fitness is stored as null: JSON has no inf)."""
        key = key or self.key(subnet)
        if key in self._index:
            raise ValueError(f"sub-network {key} is already recorded")
        value = float(fitness)
        self._index[key] = len(self.rows)
        self.rows.append({"key": key, "space": space, "subnet": subnet.to_dict(),
                          "fitness": value if math.isfinite(value) else None, "parameters": int(parameters),
                          "bin": None if bin is None else [int(bin[0]), int(bin[1])],
                          "seconds": round(float(seconds), 4)})

    def value(self, row: dict[str, Any]) -> float:
        """A row's fitness; a recorded failure (null) is the worst value for the direction."""
        v = row["fitness"]
        if v is None:
            return math.inf if self.direction == "minimize" else -math.inf
        return float(v)

    def features(self) -> np.ndarray:
        """`architecture_features` of every row, shape (rows, len(FEATURES))."""
        cfg = self.require_config()
        if not self.rows:
            return np.zeros((0, len(FEATURES)))
        return np.stack([architecture_features(cfg, SubNetwork.from_dict(r["subnet"])) for r in self.rows])

    # ------------------------------------------------------------------ files
    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FitnessTable:
        """Read a ``.json`` or ``.csv`` table written by `save` (or by hand in the same layout)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"fitness table {str(path)!r} does not exist; record one with "
                                    f"subnas.benchmark.record_table")
        # A broken table is reported, never repaired or appended to: `record_table` loads before
        # it writes, so it stops here and the file stays as it was for the user to inspect.
        fix = ("restore it from a copy, or delete it and record it again (subnas.benchmark.record_table); "
               "it is never appended to while broken")
        try:
            text = path.read_text(encoding="utf-8")
            table = cls._from_csv(text, path) if path.suffix.lower() == ".csv" else cls._from_json(text, path)
        except UnicodeDecodeError:
            raise ValueError(f"fitness table {str(path)!r} is not text; {fix}") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"fitness table {str(path)!r} is corrupt: invalid JSON at line {exc.lineno} column "
                             f"{exc.colno} ({exc.msg}), e.g. a truncated file; {fix}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"fitness table {str(path)!r} is corrupt: {exc}; {fix}") from None
        return table

    @classmethod
    def _from_json(cls, text: str, path: Path) -> FitnessTable:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
            raise ValueError("not a fitness table (expected a JSON object with 'metadata' and a list of 'rows')")
        rows = data["rows"]
        for i, row in enumerate(rows):
            missing = [k for k in ("key", "subnet", "fitness", "parameters")
                       if not isinstance(row, dict) or k not in row]
            if missing:
                raise ValueError(f"row {i} lacks {', '.join(missing)}")
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise ValueError("'metadata' is not a JSON object")
        return cls(dict(metadata), list(rows))

    @classmethod
    def _from_csv(cls, text: str, path: Path) -> FitnessTable:
        lines = text.splitlines()
        metadata: dict[str, Any] = {}
        if lines and lines[0].startswith("# metadata:"):
            metadata = json.loads(lines.pop(0).split(":", 1)[1])
        rows = []
        for rec in csv.DictReader(lines):
            missing = [c for c in ("key", "fitness", "parameters", "subnet") if c not in rec]
            if missing:
                raise ValueError(f"missing column(s) {', '.join(missing)}; columns: {', '.join(_CSV_COLUMNS)}")
            lo, hi = rec.get("bin_lo") or "", rec.get("bin_hi") or ""
            rows.append({"key": rec["key"], "space": rec.get("space", ""), "subnet": json.loads(rec["subnet"]),
                         "fitness": float(rec["fitness"]) if rec["fitness"] not in ("", "None") else None,
                         "parameters": int(rec["parameters"]), "bin": [int(lo), int(hi)] if lo and hi else None,
                         "seconds": float(rec.get("seconds") or 0.0)})
        return cls(metadata, rows)

    def to_text(self, csv_format: bool = False) -> str:
        metadata = dict(self.metadata)
        if self.config is not None:
            metadata["config"] = self.config.to_dict()
        if csv_format:
            buf = io.StringIO()
            buf.write("# metadata: " + json.dumps(metadata, sort_keys=True) + "\n")
            writer = csv.writer(buf, lineterminator="\n")
            writer.writerow(_CSV_COLUMNS)
            for r in self.rows:
                b = r.get("bin") or [None, None]
                writer.writerow([r["key"], r.get("space", ""), r["fitness"], r["parameters"], b[0], b[1],
                                 r.get("seconds", 0.0), json.dumps(r["subnet"], separators=(",", ":"))])
            return buf.getvalue()
        # One row per line: small diffs, and a reader can eyeball it.
        body = ",\n".join("  " + json.dumps(r, separators=(",", ":")) for r in self.rows)
        return (f'{{"format": "{FORMAT}",\n "metadata": {json.dumps(metadata, sort_keys=True)},\n'
                f' "rows": [\n{body}\n]}}\n')

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (a kill never leaves a half-written table); format by suffix."""
        path = Path(path)
        atomic_write_text(path, self.to_text(csv_format=path.suffix.lower() == ".csv"))
