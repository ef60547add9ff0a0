"""Built-in fitness plugins for benchmarking search strategies cheaply: ``replay`` and ``surrogate``.

Both read a recorded `subnas.benchmark.FitnessTable` (``subnas.benchmark.record_table``
writes one; ``benchmarks/tables/smollm2_coarse.json`` ships one for SmolLM2-135M) and need no
model weights, so a sampler comparison with thousands of evaluations runs in seconds.

* ``replay`` returns the recorded fitness of a candidate, looked up by its canonical key
  (`subnas.SubNetwork.key`). A candidate that was never recorded gets the fitness of its
  nearest recorded neighbour in standardised architecture features (``missing="nearest"``) or
  raises (``missing="error"``); every lookup is reported in ``last_lookup`` (the benchmark's
  trial log records it), so a reader sees how much of a benchmark was exact.
* ``surrogate`` predicts fitness with a k-nearest-neighbour regressor over the same features
  (inverse-distance weights, in log space for positive fitness such as perplexity), with optional
  Gaussian noise that is a deterministic function of (noise seed, candidate).

Features (`subnas.benchmark._fitness_table.FEATURES`): depth, width, mean/min/max per-layer heads, query
groups, head size and MLP width, and log10 of the parameter count.

Example:
    >>> import subnas, tempfile
    >>> from pathlib import Path
    >>> from subnas.benchmark import FitnessTable
    >>> cfg = subnas.SubnasConfig(num_hidden_layers=4, hidden_size=64, num_attention_heads=4, intermediate_size=128)
    >>> table = FitnessTable({"fitness": "toy", "direction": "minimize"}, config=cfg)
    >>> for n in (1, 2, 3):
    ...     s = subnas.SubNetwork(n_layers=n)
    ...     table.add(s, fitness=10.0 / n, parameters=subnas.count_parameters(cfg, s))
    >>> path = Path(tempfile.mkdtemp()) / "table.json"; table.save(path)
    >>> replay = subnas.get_fitness("replay", table=path)
    >>> replay(subnas.SubNetwork(n_layers=2)), replay.last_lookup["lookup"]
    (5.0, 'exact')
    >>> round(replay(subnas.SubNetwork(n_layers=4)), 3), replay.last_lookup["lookup"]  # nearest: 3 layers
    (3.333, 'nearest')
"""

from __future__ import annotations

import math
import os
from typing import Any, ClassVar, Literal

import numpy as np

from subnas.benchmark import FitnessTable, architecture_features, model_signature
from subnas.hookspecs import hookimpl
from subnas.interfaces import Fitness
from subnas.subnet import SubNetwork


class NotRecordedError(KeyError, ValueError):
    """A candidate the table does not hold, with ``missing="error"`` (a ValueError too, so the CLI
    reports it as a one-line error)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class _TableFitness(Fitness):
    """What replay and surrogate share: the table, its config, standardised features."""

    #: Tells `subnas.benchmark._samplers` to pass the model or config as it is, never to load weights.
    needs_weights: ClassVar[bool] = False

    def __init__(self, *, table: str | os.PathLike[str] | FitnessTable, supernet: Any = None,
                 config: Any = None) -> None:
        self.table = table if isinstance(table, FitnessTable) else FitnessTable.load(table)
        if not self.table.rows:
            raise ValueError("the fitness table is empty; record some candidates first")
        given = config if config is not None else supernet
        if given is not None:
            from subnas.families import load_config

            cfg = load_config(given)
            if self.table.config is not None and model_signature(cfg) != model_signature(self.table.config):
                raise ValueError(f"the fitness table was recorded on model {self.table.metadata.get('model')!r}, "
                                 f"whose architecture differs from the model given here")
            self.table.config = cfg
        self.config = self.table.require_config()
        self.direction = "maximize" if self.table.direction == "maximize" else "minimize"  # type: ignore[misc]
        feats = self.table.features()
        # Standardise so that depth (~10), width (~500) and log-parameters (~8) weigh alike; a
        # constant feature (std 0) carries no information and must not divide by zero.
        self._mean = feats.mean(axis=0)
        std = feats.std(axis=0)
        self._std = np.where(std > 0, std, 1.0)
        self._x = (feats - self._mean) / self._std
        self._y = np.array([self.table.value(r) for r in self.table.rows])
        self.last_lookup: dict[str, Any] | None = None
        self.last_cost = 0.0

    def _distances(self, subnet: SubNetwork) -> np.ndarray:
        x = (architecture_features(self.config, subnet) - self._mean) / self._std
        return np.asarray(np.sqrt(((self._x - x) ** 2).sum(axis=1)))


class ReplayFitness(_TableFitness):
    """The recorded fitness of a candidate (exact key), else of its nearest recorded neighbour.

    Args:
        table: a fitness table file (``.json``/``.csv``) or a `FitnessTable`.
        supernet: optional model (or config); only its architecture is used, to check the table
            was recorded on it. Without it the config stored in the table is used.
        config: same as ``supernet``, by another name.
        missing: ``"nearest"`` (default) or ``"error"`` for a candidate that was never recorded.
        simulate_time: report the recorded evaluation time as ``last_cost`` so that benchmarks
            with a time budget see what the evaluations cost when they were recorded.
    """

    def __init__(self, *, table: str | os.PathLike[str] | FitnessTable, supernet: Any = None, config: Any = None,
                 missing: Literal["nearest", "error"] = "nearest", simulate_time: bool = False) -> None:
        if missing not in ("nearest", "error"):
            raise ValueError(f"missing={missing!r}: use 'nearest' or 'error'")
        super().__init__(table=table, supernet=supernet, config=config)
        self.missing, self.simulate_time = missing, simulate_time
        self.lookups = {"exact": 0, "nearest": 0}
        # Equal resolved selections <=> equal canonical keys (the key is a hash of the resolved
        # form), and comparing them skips serialising ~1e5 indices per query to hash them.
        self._row_of = {SubNetwork.from_dict(r["subnet"]).resolve(self.config): i
                        for i, r in enumerate(self.table.rows)}

    def __call__(self, subnet: SubNetwork) -> float:
        i = self._row_of.get(subnet.resolve(self.config))
        row = None if i is None else self.table.rows[i]
        if row is not None:
            self.last_lookup = {"lookup": "exact", "key": row["key"], "distance": 0.0}
        elif self.missing == "error":
            raise NotRecordedError(f"sub-network {self.table.key(subnet)} ({subnet.to_dict()}) is not in the fitness "
                                   f"table ({len(self.table)} rows); record it, or use missing='nearest'")
        else:
            d = self._distances(subnet)
            i = int(np.argmin(d))  # ties: the earliest row, so replays are deterministic
            row = self.table.rows[i]
            self.last_lookup = {"lookup": "nearest", "key": row["key"], "distance": round(float(d[i]), 6)}
        self.lookups[self.last_lookup["lookup"]] += 1
        self.last_cost = float(row.get("seconds") or 0.0) if self.simulate_time else 0.0
        return self.table.value(row)


class SurrogateFitness(_TableFitness):
    """A k-nearest-neighbour regressor over standardised architecture features, fitted on a table.

    Predictions average the k nearest rows with inverse-distance weights (an exact match returns
    its recorded value); with ``log_target`` they average log-fitness (a geometric mean, right for
    perplexities spanning orders of magnitude). Non-finite recorded values are left out.

    Args:
        table, supernet, config: as for `ReplayFitness`.
        k: neighbours.
        log_target: average in log space; default: when every recorded value is positive.
        noise: standard deviation of Gaussian noise added to each prediction (in log units with
            ``log_target``, so 0.05 is ~5%); the noise of a candidate depends only on
            (``noise_seed``, candidate), so repeated queries agree.
        noise_seed: seed of the noise.
    """

    def __init__(self, *, table: str | os.PathLike[str] | FitnessTable, supernet: Any = None, config: Any = None,
                 k: int = 5, log_target: bool | None = None, noise: float = 0.0, noise_seed: int = 0) -> None:
        super().__init__(table=table, supernet=supernet, config=config)
        if k < 1:
            raise ValueError(f"k={k}: need at least one neighbour")
        if noise < 0:
            raise ValueError(f"noise={noise} must be >= 0")
        finite = np.isfinite(self._y)
        if not finite.any():
            raise ValueError("the fitness table holds no finite fitness value to fit")
        self._x, self._y = self._x[finite], self._y[finite]
        self._rows = [r for r, f in zip(self.table.rows, finite) if f]
        self.log_target = bool((self._y > 0).all()) if log_target is None else log_target
        if self.log_target and not (self._y > 0).all():
            raise ValueError("log_target needs every recorded fitness > 0")
        self._t = np.log(self._y) if self.log_target else self._y
        self.k, self.noise, self.noise_seed = min(k, len(self._y)), noise, noise_seed

    def predict(self, subnet: SubNetwork) -> float:
        """The noiseless prediction."""
        d = self._distances(subnet)
        order = np.argsort(d, kind="stable")[: self.k]
        if d[order[0]] == 0.0:
            t = float(self._t[d == 0.0].mean())
        else:
            w = 1.0 / d[order]
            t = float((w * self._t[order]).sum() / w.sum())
        self.last_lookup = {"lookup": "surrogate", "key": self._rows[int(order[0])]["key"],
                            "distance": round(float(d[order[0]]), 6)}
        return t

    def __call__(self, subnet: SubNetwork) -> float:
        t = self.predict(subnet)
        if self.noise > 0:
            key = self.table.key(subnet)
            rng = np.random.default_rng([self.noise_seed, int(key[:15], 16)])
            t += float(rng.normal(0.0, self.noise))
        return math.exp(t) if self.log_target else t

    def leave_one_out(self) -> np.ndarray:
        """Noiseless predictions of every (finite) row from the other rows: the surrogate's honesty check."""
        d = np.sqrt(((self._x[:, None, :] - self._x[None, :, :]) ** 2).sum(axis=2))
        np.fill_diagonal(d, np.inf)
        out = np.empty(len(self._t))
        for i in range(len(self._t)):
            order = np.argsort(d[i], kind="stable")[: self.k]
            w = 1.0 / np.maximum(d[i, order], 1e-12)
            out[i] = (w * self._t[order]).sum() / w.sum()
        return np.exp(out) if self.log_target else out


@hookimpl
def register_fitness(register: Any) -> None:
    register("replay", ReplayFitness)
    register("surrogate", SurrogateFitness)
