"""The search driver: `search`, one Optuna study per parameter bin, in one storage; what ``subnas search`` runs.

The module is `subnas.search_driver`, so that `subnas.search` names one thing: the function.

Any registered sampler drives a study: ``evolution`` (`BinEvolutionSampler`, which stays inside
the bin by construction) or any Optuna sampler (``random``, ``tpe``, ``nsga2``, plugins), whose
proposals are moved into the bin by the space's repair (and pruned, recorded as infeasible, when
that fails). So every evaluated candidate lies in its bin, whatever the sampler.

Nothing is lost: trials live in the storage (a journal file by default), the results and the best
sub-networks are rewritten atomically after every trial, and running the same command again
resumes — trials that a killed run left RUNNING on this machine are marked FAIL and their
candidates handed out again. Several processes on one storage (``--workers N``, or the same
command started N times) share the work. A candidate already evaluated in the study is never
evaluated again: its stored value is reused.
"""

from __future__ import annotations

import json
import math
import os
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import optuna
from optuna.trial import TrialState

from subnas._io import atomic_write_text
from subnas.bins import BinExhaustedError, InfeasibleBinError, ParameterBin, SearchFinished
from subnas.spaces._choices import SearchSpaceError
from subnas.interfaces import Fitness, SearchContext, SearchSpace
from subnas.lookups import get_metric, get_search_space, make_fitness, sampler_strategy
from subnas.metric_bins import MetricBin, MetricBinnedSpace
from subnas.pareto import parse_objectives, pareto_search
from subnas.samplers._trials import KEY, evaluated_values, fail_dead_trials, record_worker
from subnas.params import count_parameters
from subnas.subnet import SubNetwork

CONFIRMED = "confirmed"  # study user attribute: {sub-network key: confirmed fitness}


def open_storage(storage: str | None, out_dir: Path) -> Any:
    """A storage for a URL (``sqlite:///…``, ``postgresql://…``), a journal file path, or None
    (a journal file in ``out_dir``; safe for several processes on one machine).

    Problems a user can fix are ValueErrors naming the storage and the fix: a missing database
    driver, an unreachable or refusing server, a corrupt journal file (never appended to). A
    SQLite file's folder is created, as a journal file's is."""
    if storage is None:
        storage = str(out_dir / "search.journal")
    if "://" in storage:
        return _open_rdb(storage)
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock, JournalStorage

    path = Path(storage)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise ValueError(f"--storage {storage} is a folder; give a journal file path (e.g. {path / 'search.journal'}) "
                         "or a database URL")
    if path.exists() and path.stat().st_size:
        lock = JournalFileSymlinkLock(str(path))
        lock.acquire()  # a writer in another process finishes its record first
        try:
            _check_journal(path)
        finally:
            lock.release()
    return JournalStorage(JournalFileBackend(str(path)))


def _check_journal(path: Path) -> None:
    """Refuse a journal Optuna cannot read back: appending to it would bury the damage."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline, as every complete journal does
    # A record cut short by a killed writer still starts like one; anything else is foreign.
    broken = [(n, line) for n, line in enumerate(lines, start=1)] + ([(len(lines) + 1, tail)]
                                                                     if tail and not tail.startswith(b'{"') else [])
    for number, line in broken:
        try:
            if not isinstance(json.loads(line), dict):
                raise ValueError
        except ValueError:
            raise ValueError(
                f"the search journal {path} is corrupt: line {number} is not an Optuna journal record; it is not "
                f"read or appended to. Move it aside (mv {path} {path}.broken) and rerun to start this search "
                f"afresh, or give another --out / --storage") from None
    if tail:
        keep = len(data) - len(tail)
        raise ValueError(
            f"the search journal {path} ends in an incomplete record (line {len(lines) + 1}, {len(tail)} bytes: a "
            f"writer was killed mid-write); it is not appended to. To resume, drop that record and keep the "
            f"{len(lines)} complete ones: truncate -s {keep} {path} (its trial, if left running, is handed out "
            f"again); or move the file aside (mv {path} {path}.broken) to start afresh")


def _open_rdb(url: str) -> Any:
    import sqlalchemy
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError as exc:
        raise ValueError(f"--storage {url!r} is not a database URL ({exc}); give e.g. sqlite:///OUT/search.db, "
                         "postgresql://USER:PASSWORD@HOST/DB or a journal file path") from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        parsed.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:
        raise ValueError(f"--storage {shown}: unknown database kind {parsed.drivername!r}; give sqlite:///FILE, "
                         "postgresql://USER:PASSWORD@HOST/DB, mysql+pymysql://... or a journal file path") from None
    if parsed.drivername == "postgresql":
        # SQLAlchemy 2.1 defaults to psycopg (3); use psycopg2 when only that one is installed.
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            parsed = parsed.set(drivername="postgresql+psycopg2")
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():  # heartbeat_interval: "experimental" since Optuna 2.9; stable in use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # Each running trial's machine writes a heartbeat every 30 s; a trial silent for 120 s
            # (its machine died) is failed by the next worker to start a trial, and handed out again.
            return optuna.storages.RDBStorage(parsed.render_as_string(hide_password=False), heartbeat_interval=30,
                                              grace_period=120)
    except ImportError:
        hint = {"postgresql": "pip install psycopg2-binary", "mysql": "pip install pymysql and use mysql+pymysql://"
                }.get(parsed.get_backend_name(), "install the driver SQLAlchemy names for it")
        raise ValueError(f"--storage {shown}: no database driver for {parsed.drivername!r} is installed; {hint}") from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        text = str(getattr(exc, "orig", None) or exc).strip()
        reason = text.splitlines()[0] if text else type(exc).__name__
        raise ValueError(f"--storage {shown}: cannot open the database ({reason}); check that the server is "
                         "running and the URL's host, user, password and database are right") from None


@dataclass
class BinSearch:
    """One bin's study and how to run a trial of it."""

    bin: ParameterBin
    study: optuna.Study
    space: SearchSpace
    fitness: Fitness
    sampler_name: str
    seed: int | None = None
    pruning: bool = False
    exhausted: str | None = None
    evaluated: dict[str, list[float]] = field(default_factory=dict)  # `evaluated_values`'s cache
    trials: int | None = None
    epochs: int | None = None
    confirm: int = 0
    bin_metric: str = "parameters"  # what the bin bounds (``--bin-metric``; `subnas.metric_bins`)

    def finished(self) -> bool:
        """True once the bin's budget is used (no candidate still being evaluated) or the bin is exhausted."""
        if self.exhausted:
            return True
        if any(t.system_attrs.get(KEY) is not None
               for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))):
            return False
        if self.epochs is not None:
            return sampler_strategy(self.sampler_name).is_finished(self.study)
        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        return self.trials is not None and len(done) >= self.trials

    def objective(self, trial: optuna.Trial) -> float:
        record_worker(trial.storage, trial._trial_id)
        subnet = self.space.suggest(trial)
        bred = self.space.bred(trial)
        if bred is not None and subnet.key(self.space.config) != bred.key(self.space.config):
            raise SearchSpaceError(
                f"search space {type(self.space).__name__}.suggest() returned a sub-network other than the one the "
                f"sampler bred; suggest() must return `self.bred(trial)` when it is not None (docs/plugins.md)")
        count = self.space.count(subnet)  # the bin's metric: parameters, or --bin-metric's
        if count not in self.bin:
            # Samplers that know nothing of bins: repair into the bin, deterministically per (seed,
            # trial) — seeding by the trial number alone made every seed repair alike.
            rng = random.Random(f"subnas-repair-{self.seed}-{self.study.study_name}-{trial.number}")
            repaired = self.space.repair(subnet, self.bin, rng)
            if repaired is None or self.space.count(repaired) not in self.bin:
                trial.set_user_attr("infeasible", True)
                trial.set_user_attr(self.bin_metric, count)
                raise optuna.TrialPruned(f"{count:,} {self.bin_metric} is outside bin {self.bin} and repair failed")
            trial.set_user_attr("repaired_from", subnet.to_dict())
            subnet, count = repaired, self.space.count(repaired)
        key = subnet.key(self.space.config)
        trial.storage.set_trial_system_attr(trial._trial_id, KEY, key)
        trial.set_user_attr("subnet", subnet.to_dict())
        trial.set_user_attr("parameters", count_parameters(self.space.config, subnet))
        if self.bin_metric != "parameters":
            trial.set_user_attr(self.bin_metric, count)
        cached = evaluated_values(self.study, self.evaluated, key)
        if cached is not None:  # never evaluate the same architecture twice
            trial.set_user_attr("duplicate", True)
            return cached[0]
        # Multi-fidelity: the fitness reports its running value after each chunk (for perplexity,
        # each batch of tokens) and Optuna's pruner may stop a hopeless candidate early.
        value, used = math.nan, 0
        try:
            for used, value in self.fitness.steps(subnet):
                if self.pruning:
                    trial.report(value, used)
                    if trial.should_prune():
                        trial.set_user_attr("budget_used", used)
                        raise optuna.TrialPruned(f"stopped by the pruner after {used:,} of the fitness budget")
        except (optuna.TrialPruned, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - one broken candidate must not end the search
            # Recorded as settled (PRUNED, with the error), so the sampler moves on and a resumed
            # search does not hand the same candidate out again.
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise optuna.TrialPruned(f"the fitness failed on this candidate: {type(exc).__name__}: {exc}") from exc
        trial.set_user_attr("budget_used", used)
        for name, metric in self.fitness.last_metrics.items():
            trial.set_user_attr(name, metric)  # perplexity and bits per byte, whichever ranks
        value = float(value)
        if math.isnan(value):
            value = math.inf if self.fitness.direction == "minimize" else -math.inf
        return value

    def confirm_best(self, progress: bool = False) -> dict[str, float]:
        """Re-measure the ``confirm`` best distinct candidates with `Fitness.confirm` (more text,
        never seen by the search) once the bin's budget is used; returns {key: confirmed fitness}.

        Stored in the study, so a resumed or parallel search confirms each candidate once (two
        workers finishing together may both measure one: same deterministic number)."""
        confirmed: dict[str, float] = dict(self.study.user_attrs.get(CONFIRMED, {}))
        if self.confirm < 1 or not self.finished():
            return confirmed
        todo = [t for t in self.top_trials(self.confirm) if t.system_attrs[KEY] not in confirmed]
        if not todo:
            return confirmed
        from tqdm.auto import tqdm

        for t in tqdm(todo, desc=f"confirming the best of bin {self.bin}", unit="candidate",
                      disable=None if progress else True):
            value = self.fitness.confirm(SubNetwork.from_dict(t.user_attrs["subnet"]))
            if value is None:  # this fitness has no second measurement: the search's ranking stands
                return confirmed
            # Re-read before writing: another worker may have confirmed others meanwhile.
            confirmed = {**self.study.user_attrs.get(CONFIRMED, {}), **confirmed,
                         t.system_attrs[KEY]: float(value)}
            self.study.set_user_attr(CONFIRMED, confirmed)
        return confirmed

    def top_trials(self, k: int) -> list[Any]:
        """The ``k`` best complete trials, one per distinct sub-network, best first."""
        trials = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if t.value is not None and math.isfinite(t.value) and t.system_attrs.get(KEY) is not None
                  and not t.user_attrs.get("duplicate")]
        trials.sort(key=lambda t: (t.value if self.fitness.direction == "minimize" else -t.value, t.number))
        seen: set[str] = set()
        out = []
        for t in trials:
            if t.system_attrs[KEY] not in seen:
                seen.add(t.system_attrs[KEY])
                out.append(t)
        return out[:k]

    def winner(self) -> tuple[Any, float | None]:
        """The bin's winner and its confirmed fitness: the best confirmed candidate once confirmation
        ran, else the best trial by the search's own fitness (confirmed fitness None)."""
        confirmed = self.study.user_attrs.get(CONFIRMED, {})
        candidates = [t for t in self.top_trials(max(self.confirm, 1)) if t.system_attrs[KEY] in confirmed]
        if candidates:
            sign = 1 if self.fitness.direction == "minimize" else -1
            best = min(candidates, key=lambda t: (sign * confirmed[t.system_attrs[KEY]], t.number))
            return best, float(confirmed[best.system_attrs[KEY]])
        return _best(self.study), None


PRUNERS = ("none", "median", "successive-halving", "hyperband")


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """Optuna's own pruner for ``--pruner`` (multi-fidelity search over the fitness's steps)."""
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        # Compare against the median of earlier candidates at the same number of tokens, after a
        # few complete ones, from the second chunk on (one chunk is too noisy to judge).
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    raise ValueError(f"unknown pruner {name!r}; choose one of {', '.join(PRUNERS)}")


def search(
    model: Any,
    *,
    space: str = "coarse-uniform",
    bins: Sequence[str | ParameterBin | tuple[int, int]] = ("85M-100M",),
    fitness: str = "perplexity",
    data: str = "default:search",
    seq_len: int = 256,
    num_seqs: int = 16,
    order: Literal["importance", "block-influence", "natural"] = "importance",
    calibration: str = "default:calibration",
    pruner: Literal["none", "median", "successive-halving", "hyperband"] = "none",
    confirm: int = 4,
    sampler: str | None = None,
    storage: str | None = None,
    study_name: str = "subnas",
    epochs: int | None = None,
    trials: int | None = None,
    out_dir: str | os.PathLike[str] = "runs/search",
    seed: int | None = 0,
    space_choices: dict[str, Any] | None = None,
    sampler_options: dict[str, Any] | None = None,
    fitness_options: dict[str, Any] | None = None,
    workers: int = 1,
    objectives: str | Sequence[str] | None = None,
    bin_metric: str = "params",
    device: str = "cpu",
    dtype: Literal["auto", "float32", "bfloat16"] = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Search the best sub-network in each bin: one Optuna study per bin (``subnas search``).

    The fitness reads ``data`` and the importance order reads ``calibration`` (by default the
    offline corpus's *search* and *calibration* splits), so neither touches the validation split
    on which winners are reported. A stored search resumes only with the order it began with.

    Args:
        model: a `subnas.Supernet`, or a model folder / hub name / ``"default"`` to load as one.
        space: coarse-uniform, coarse-layerwise, fine-uniform, fine-layerwise or a plugin's space.
            Measured on SmolLM2-135M (40 trials, 3 seeds, test split; docs/benchmarks/search.md):
            coarse-uniform — one size per dimension for all layers: the default, the cheapest and
            the steadiest (85M-100M: 79.5 test perplexity; one-shot prune 96.7);
            coarse-layerwise — per-layer sizes: 82.3 there, ahead near the full size (110M-120M);
            fine-uniform — the same sizes, every layer its own units: within 1.4% in 85M-100M,
            refines a coarse winner by neuron and channel swaps;
            fine-layerwise — per-layer sizes and units, the largest: best mean in 110M-120M.
        bins: parameter bins, e.g. 30M-40M 60M-70M or 135M±5% (or `ParameterBin` objects, or
            ``(lo, hi)`` tuples); one study each.
        fitness: perplexity (a forward pass per candidate), importance (microseconds per candidate
            after one calibration pass; ranks worse, see docs/benchmarks/search.md) or a plugin's.
        data: text the fitness scores on (default: the corpus's search split, never the validation
            split).
        seq_len: tokens per sequence (perplexity); cost grows linearly.
        num_seqs: sequences (perplexity); cost grows linearly, and fewer make the winner a matter of
            noise between the search and validation text.
        order: which units "the first n" keeps (`subnas.spaces.importance_order`). importance: the
            n most important — layers by the loss of skipping each one, width units by activation
            (calibration passes, cached; ~2 min once for SmolLM2-135M on 2 CPU cores);
            block-influence: the same but layers by ShortGPT's block influence (the literature's
            one-shot prune; worse, ~15 s); natural: the paper's first n (for reproducing it; far
            worse on real models).
        calibration: text for the importance order's calibration passes (default: the corpus's
            calibration split), or ``weights`` for a data-free weight-magnitude order.
        pruner: multi-fidelity: stop hopeless candidates after a fraction of their tokens (Optuna
            pruners, `make_pruner`).
        confirm: re-measure the best ``confirm`` candidates of each bin on 48 more sequences the
            search never scored (`Fitness.confirm`; for perplexity the next 48 sequences of
            ``data``) and keep the best confirmed one (~15 s each on 2 CPU cores; 0: keep the
            search's ranking, which on 16 sequences is partly luck).
        sampler: evolution (default with bins), mo-evolution (default with objectives), random, tpe,
            nsga2, nsga3 or a plugin's.
        storage: Optuna storage URL (``sqlite:///x.db``, ``postgresql://...``) or journal file;
            default: ``search.journal`` in the output folder.
        study_name: prefix of the per-bin study names.
        epochs: evolution epochs T (Algorithm 1); the evolution sampler only. Give ``epochs`` or
            ``trials``: with neither, the search stops before loading anything and asks for one.
        trials: evaluations per bin (any sampler; the evolution sampler stops after this many even
            mid-epoch). With neither ``trials`` nor ``epochs``, the search asks for one (no default
            budget: a search's cost is the user's call).
        out_dir: folder for ``results.json``, the best sub-networks and the plot.
        seed: seed (same seed, one worker: same trajectory).
        space_choices: per-dimension choices, e.g. ``{"intermediate_size": "64:1536:64"}``;
            ``{"vocab_size": "4k,8k,16k,32k,full"}`` (or ``"default"``) adds the vocabulary as a
            dimension and ranks candidates by bits per byte.
        sampler_options: sampler keyword options, e.g. ``{"population_size": 20, "num_elites": 5}``.
        fitness_options: fitness keyword options.
        workers: processes sharing the storage.
        objectives: two or three objectives, e.g. perplexity,params or perplexity,params,latency: one
            multi-objective study over the whole trade-off instead of one study per bin (`subnas.pareto`;
            writes pareto.json, pareto/pointNN.json and pareto.png).
        bin_metric: what the bins bound: params (default), flops (forward FLOPs per token at
            seq_len), weight-bytes, kv-bytes, latency (measured prefill ms; a candidate is inside when
            the median of its repeats is, see docs/search.md) or a plugin's metric; e.g.
            ``--bin-metric flops --bins 60M-80M``.
        device: where the latency metrics measure (cpu, cuda).
        dtype: precision of the perplexity fitness's forwards and of the latency and byte metrics:
            float32, bfloat16 (autocast) or auto (bf16 on CUDA, float32 on CPU; bf16 there is 1.6x
            faster with the same ranking measured, docs/benchmarks/eval_dtype.md).
        progress: show progress bars.

    Returns:
        The content of ``results.json``: per bin the best sub-network, its fitness, its
        parameter count and the number of evaluations, and which data produced each number.
    """
    from subnas.evaluation._perplexity import resolved_dtype
    from subnas.supernet import Supernet

    if epochs is None and trials is None:
        raise ValueError("give a budget: --epochs (evolution) or --trials (any sampler)")
    for name, value in (("trials", trials), ("epochs", epochs), ("workers", workers), ("num_seqs", num_seqs),
                        ("seq_len", seq_len)):
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} {value} is not a positive number; give at least 1")
    if confirm < 0:
        raise ValueError(f"--confirm {confirm} is negative; give 0 (keep the search's ranking) or a number of candidates")
    if pruner not in PRUNERS:
        raise ValueError(f"unknown pruner {pruner!r}; choose one of {', '.join(PRUNERS)}")
    names = None if objectives is None else parse_objectives(objectives)
    if sampler is None:
        sampler = "evolution" if names is None else "mo-evolution"
    if names is not None and pruner != "none":
        raise ValueError(f"--pruner {pruner}: Optuna's pruners judge one objective and do not apply to a "
                         f"multi-objective search (--objectives); use --pruner none")
    strategy = sampler_strategy(sampler)
    if epochs is not None and not strategy.takes_epochs:
        raise ValueError(f"--epochs applies to the evolution sampler; give --trials for {sampler!r}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress bars say it better
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # A bad storage or fitness option is reported before any model loads.
    check_fitness_options(fitness, dict(fitness_options or {}))
    journal = None if storage is not None and "://" in storage else Path(storage or out / "search.journal")
    # (A journal that does not exist yet is created only once the model has loaded.)
    store = open_storage(storage, out) if journal is None or journal.exists() else None
    bins = [_parse_bin(spec, bin_metric) for spec in bins]
    if names is None and bin_metric == "params":
        # Parameter bins depend on counts alone: an unreachable one is reported now, from the
        # config, before the model loads and before minutes of calibration passes (issue #19).
        check_bins_reachable(model, space, bins, space_choices or {})
    if workers > 1:
        if not isinstance(model, (str, os.PathLike)):
            raise ValueError("workers > 1 needs the model as a name or folder (each worker process loads it)")
        return _run_workers(workers, locals())

    supernet = model if isinstance(model, Supernet) else Supernet.from_pretrained(model)
    search_space = make_space(space, supernet, order=order, calibration=calibration,
                              choices=space_choices or {})
    # One context for every plugin the search builds: each takes what it needs from it.
    context = SearchContext(supernet=supernet, config=supernet.subnas_config, data=data, seq_len=seq_len,
                            num_seqs=num_seqs, device=device,
                            dtype=resolved_dtype(dtype, device), pruning=pruner != "none",
                            confirm=confirm, vocab_choices=tuple(search_space.vocab_choices))
    if names is not None:
        return pareto_search(context, search_space, names, fitness=fitness, fitness_options=fitness_options or {},
                             sampler=sampler, sampler_options=sampler_options or {},
                             store=store or open_storage(storage, out), out=out,
                             study_name=study_name, trials=trials, seed=seed, confirm=confirm, progress=progress)
    score = make_fitness(fitness, context, **(fitness_options or {}))
    if store is None:
        store = open_storage(storage, out)

    runs = []
    bin_space: Any = search_space
    if bin_metric != "params":  # bins of FLOPs, bytes or milliseconds: the space seen through the metric
        bin_space = MetricBinnedSpace(search_space, get_metric(bin_metric, supernet, context), bin_metric)
    for i, b in enumerate(bins):
        opts = dict(sampler_options or {})
        if strategy.takes_epochs and epochs is not None:
            opts.setdefault("epochs", epochs)
        smp = strategy(bin_space, b, seed=seed, **opts)
        study = optuna.create_study(storage=store, study_name=f"{study_name}-bin{i}-{b.lo}-{b.hi}", sampler=smp,
                                    direction=score.direction, load_if_exists=True, pruner=make_pruner(pruner))
        stored = strategy.stored_seed(study)
        if seed is not None and stored is not None and stored != seed:
            raise ValueError(f"{out} holds a search started with --seed {stored}; rerun with --seed {stored} to "
                             f"resume it, or give a new --out (or --study-name) for a search with --seed {seed}")
        unit_order = None if search_space.order is None else search_space.order.source
        started = study.user_attrs.get("order")
        if unit_order is not None and started is not None and started != unit_order:
            # The seeds and every "first n" of the stored trials' space would silently change.
            raise ValueError(f"{out} holds a search whose units were ranked as {started!r}, but this run ranks them "
                             f"as {unit_order!r} (another --order or --calibration, or a subnas version with "
                             f"another importance order); rerun with the original options to resume it, or give a "
                             f"new --out (or --study-name)")
        study.set_user_attr("bin", [b.lo, b.hi])
        study.set_user_attr("space", space)
        if unit_order is not None:
            study.set_user_attr("order", unit_order)
        fail_dead_trials(study)
        runs.append(BinSearch(b, study, bin_space, score, sampler, seed=seed, pruning=pruner != "none",
                              trials=trials, epochs=epochs, confirm=confirm,
                              bin_metric="parameters" if bin_metric == "params" else bin_metric))

    for i, run in enumerate(runs):
        _optimize(run, epochs=epochs, trials=trials, progress=progress, label=f"bin {i} ({run.bin})",
                  on_trial=lambda: _write_results(runs, out))
        run.confirm_best(progress=progress)
    return _write_results(runs, out, plot=True)


def _parse_bin(spec: str | ParameterBin | tuple[int, int], metric: str) -> ParameterBin:
    """A bin of parameters (``metric == "params"``) or of ``metric`` (`MetricBin`)."""
    if isinstance(spec, ParameterBin):
        return spec
    if metric != "params":
        return MetricBin(*spec, metric) if isinstance(spec, tuple) else MetricBin.parse(spec, metric)
    return ParameterBin.coerce(spec)


def check_bins_reachable(model: Any, space: str, bins: Sequence[ParameterBin], choices: dict[str, Any]) -> None:
    """Raise `InfeasibleBinError` for a bin no member of the space reaches, from the model's config
    alone: the space in its natural order has the same members and counts as in any other order,
    and building it costs no forward pass."""
    from subnas.bins import BinConstrainedSpace
    from subnas.families import load_config
    from subnas.plugins import registry

    config = model.subnas_config if hasattr(model, "subnas_config") else load_config(model)
    order = {"order": "natural"} if getattr(registry("search_spaces")[space], "takes_order", False) else {}
    natural = get_search_space(space, config, **order, **choices)
    for b in bins:
        BinConstrainedSpace(natural, b)  # raises, naming the bin and the space's range


def check_fitness_options(name: str, options: dict[str, Any]) -> None:
    """Unknown ``--fitness-options`` keys, named next to the accepted ones (before any model loads)."""
    import inspect

    from subnas.plugins import registry

    factory = registry("fitness")[name]  # an unknown name: PluginError listing the known ones
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a factory without a signature: let it judge its options
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if params and not takes_any:
        accepted = [n for n, p in params.items() if n != "supernet" and p.kind in
                    (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ValueError(f"--fitness-options: {name!r} has no option {', '.join(map(repr, unknown))}; its options "
                             f"are {', '.join(accepted) or 'none'}")


def make_space(name: str, supernet: Any, *, order: str, calibration: str, choices: dict[str, Any]) -> SearchSpace:
    """The search space ``name`` over ``supernet`` in ``order`` (importance from ``calibration``)."""
    from subnas.plugins import registry
    from subnas.spaces._structured import resolve_order

    if not getattr(registry("search_spaces")[name], "takes_order", False):  # no notion of unit order
        return get_search_space(name, supernet.subnas_config, **choices)
    unit_order = resolve_order(order, supernet, supernet.subnas_config, name, calibration=calibration)
    if "vocab_size" in choices and supernet.tokenizer is not None:  # issue #13: most frequent tokens first
        from subnas.vocab import vocab_order

        choices = {"vocab_order": vocab_order(supernet, data=calibration), **choices}
    return get_search_space(name, supernet.subnas_config, order=unit_order, **choices)


def _optimize(run: BinSearch, *, epochs: int | None, trials: int | None, progress: bool, label: str,
              on_trial: Any) -> None:
    from tqdm.auto import tqdm

    strategy = sampler_strategy(run.sampler_name)
    counted = (TrialState.COMPLETE, TrialState.PRUNED)

    def done() -> int:
        return len(run.study.get_trials(deepcopy=False, states=counted))

    def finished() -> bool:
        if epochs is not None:
            return strategy.is_finished(run.study)
        # Trials other workers are evaluating count too, so N workers never overshoot the budget
        # by more than the trials they started at the same moment.
        running = [t for t in run.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                   if t.system_attrs.get(KEY) is not None]
        return trials is not None and done() + len(running) >= trials

    total = trials if trials is not None else None
    bar = tqdm(total=total, initial=done(), desc=label, unit="eval", disable=None if progress else True)

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        bar.update(1)
        best = _best(study)
        if best is not None:
            bar.set_postfix(best=f"{best.value:.4g}")
        on_trial()
        if finished():
            study.stop()

    try:
        while not finished():
            run.study.optimize(run.objective, n_trials=1, callbacks=[callback], catch=())
    except (SearchFinished, InfeasibleBinError) as exc:
        # The sampler found out while setting up a trial: that trial never ran; close it.
        if exc.trial_id is not None:
            run.study._storage.set_trial_system_attr(exc.trial_id, "subnas:not_run", str(exc))
            run.study._storage.set_trial_state_values(exc.trial_id, state=TrialState.FAIL)
        if isinstance(exc, BinExhaustedError):  # a small bin fully searched: done, not failed
            run.exhausted = str(exc)
            bar.write(f"{label}: {exc}")
        elif not isinstance(exc, SearchFinished):
            raise
    finally:
        bar.close()


def _best(study: optuna.Study) -> Any:
    try:
        return study.best_trial
    except ValueError:
        return None


def _write_results(runs: Sequence[BinSearch], out: Path, plot: bool = False) -> dict[str, Any]:
    first = runs[0] if runs else None
    order = first.space.order if first else None
    results: dict[str, Any] = {
        # Which data produced each number (docs/design.md#measure-the-product: never select and report on the same tokens).
        "fitness_data": first.fitness.data if first else "",
        "order": None if order is None else order.source,
        # How many sub-networks the space holds (paper §2.1's N), as a power of ten: 10^14,346 for
        # SmolLM2's fine-grained layer-wise space does not fit a float.
        "space_size_log10": None if first is None else round(math.log10(first.space.size()), 1),
        "bins": []}
    for i, run in enumerate(runs):
        best, confirmed_value = run.winner()
        complete = run.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        pruned = run.study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
        entry = {"bin": [run.bin.lo, run.bin.hi], "study": run.study.study_name, "sampler": run.sampler_name,
                 "evaluations": len(complete), "pruned": len([t for t in pruned if not t.user_attrs.get("infeasible")]),
                 "budget_used": sum(int(t.user_attrs.get("budget_used", 0)) for t in complete + pruned
                                    if not t.user_attrs.get("duplicate")),
                 "direction": run.fitness.direction, "metric": run.fitness.metric, "bin_metric": run.bin_metric}
        entry["finished"] = run.finished()
        if run.exhausted:
            entry["exhausted"] = run.exhausted
        if best is not None:
            entry.update(best_fitness=best.value, best_parameters=best.user_attrs.get("parameters"),
                         best_subnet=best.user_attrs.get("subnet"), best_trial=best.number,
                         best_subnet_file=str(out / f"bin{i}_best_subnet.json"))
            if run.bin_metric != "parameters":
                entry[f"best_{run.bin_metric}"] = best.user_attrs.get(run.bin_metric)
            confirmed = run.study.user_attrs.get(CONFIRMED, {})
            if confirmed:
                # The winner is the best of the confirmed few, on text the search never scored.
                entry.update(confirmed_fitness=confirmed_value,
                             confirm_data=run.fitness.confirm_data,
                             confirmed=[{"trial": t.number, "fitness": t.value,
                                         "confirmed_fitness": confirmed[t.system_attrs[KEY]]}
                                        for t in run.top_trials(run.confirm) if t.system_attrs[KEY] in confirmed])
            SubNetwork.from_dict(best.user_attrs["subnet"]).save(out / f"bin{i}_best_subnet.json")
            # The search's own score of the winner: measured on the very tokens the baseline is fitted to.
            warning = _worse_than_trivial(run.fitness, best.value)
            if warning:
                entry["warning"] = warning
        results["bins"].append(entry)
    # False while a search runs, and after one was killed or a worker is still evaluating: rerun
    # the command to complete it.
    results["complete"] = all(entry["finished"] for entry in results["bins"])
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    if plot:
        _plot_trajectory(runs, out / "trajectory.png")
        results["plot"] = str(out / "trajectory.png")
    return results


def _worse_than_trivial(fitness: Fitness, value: float | None) -> str | None:
    """Words for a winner that does not beat the fitness's trivial baseline (None if it does)."""
    baseline = fitness.trivial_baseline()
    if baseline is None or value is None:
        return None
    bound, what = baseline
    worse = value >= bound if fitness.direction == "minimize" else value <= bound
    if not worse:
        return None
    return (f"the best sub-network found ({fitness.metric or 'fitness'} {value:.4g} on the search text) is no better "
            f"than {what}, fitted to those very tokens: it predicts no better than token counts do; the bin is "
            f"probably too small for this model (try a larger bin)")


def _plot_trajectory(runs: Sequence[BinSearch], path: Path) -> None:
    """Best fitness so far vs evaluations, one line per bin (paper Figure 14)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plotting is optional: pip install matplotlib
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for run in runs:
        trials = sorted(run.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
        best, ys = None, []
        for t in trials:
            v = float(t.value)  # type: ignore[arg-type]
            better = best is None or (v < best if run.fitness.direction == "minimize" else v > best)
            best = v if better else best
            ys.append(best)
        ax.plot(range(1, len(ys) + 1), ys, label=f"bin {run.bin}")
    ax.set_xlabel("evaluations")
    ax.set_ylabel("best fitness so far")
    if runs and runs[0].fitness.direction == "minimize":
        ax.set_yscale("log")  # perplexities of untrained sub-networks span orders of magnitude
    ax.set_title("search trajectory")
    ax.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def _run_workers(workers: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``workers`` processes on one storage: this one plus workers - 1 spawned copies."""
    import multiprocessing as mp

    import inspect

    # Every parameter of search() reaches the workers: built from its signature, so an option added
    # later cannot be dropped on the way (issue #19: --confirm once was).
    kwargs = {k: kwargs[k] for k in inspect.signature(search).parameters}
    kwargs["workers"] = 1
    if kwargs.get("storage") is None:
        kwargs["storage"] = str(Path(kwargs["out_dir"]) / "search.journal")
    ctx = mp.get_context("spawn")
    # Share the cores instead of oversubscribing them: each process gets its slice of threads.
    threads = max(1, (os.cpu_count() or 1) // workers)
    procs = [ctx.Process(target=_worker, kwargs={**kwargs, "progress": False, "threads": threads})
             for _ in range(workers - 1)]
    import torch

    torch.set_num_threads(threads)
    for p in procs:
        p.start()
    try:
        search(**kwargs)  # this process is one of the workers
    finally:
        for p in procs:
            p.join()
    bad = [p.exitcode for p in procs if p.exitcode]
    if bad:
        raise RuntimeError(f"{len(bad)} search worker(s) failed (exit codes {bad}); rerun the command to resume")
    # Rewrite results now that every worker has finished.
    return search(**{**kwargs, "progress": False})


def _worker(*, threads: int, **kwargs: Any) -> None:
    import torch

    torch.set_num_threads(threads)
    search(**kwargs)
