"""What subnas records on Optuna trials, shared by the search driver, Pareto search and the
evolution sampler: a candidate's identity, the values already stored for it, the process evaluating
it, and freeing the trials of dead processes.

Several processes (``--workers``, or machines sharing a database) run one study; each writes
which process runs a trial, so a trial left RUNNING by a killed process can be failed and its
candidate handed out again (docs/design.md#reliability, nothing is lost).
"""

from __future__ import annotations

import os
import socket
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

KEY = "subnas:key"  # trial system attribute: the candidate's `SubNetwork.key`
WORKER = "subnas:worker"  # trial system attribute: {"host", "pid"} of the process running it


def record_worker(storage: Any, trial_id: int) -> None:
    """Write which process runs ``trial_id`` (read by `fail_dead_trials`)."""
    storage.set_trial_system_attr(trial_id, WORKER, {"host": socket.gethostname(), "pid": os.getpid()})


def evaluated_values(study: optuna.Study, cache: dict[str, list[float]], key: str) -> list[float] | None:
    """The objective values a complete trial of ``study`` already holds for the candidate ``key``
    (None: never evaluated), so that no architecture is evaluated twice (the search driver and
    Pareto search). ``cache`` keeps what was read; the study is read again only on a miss, because
    other workers add trials meanwhile.

    Example:
        >>> import optuna
        >>> study = optuna.create_study()
        >>> study.add_trial(optuna.trial.create_trial(value=2.5, system_attrs={KEY: "a"}))
        >>> cache: dict[str, list[float]] = {}
        >>> evaluated_values(study, cache, "a"), evaluated_values(study, cache, "b")
        ([2.5], None)
    """
    if key not in cache:
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            k = t.system_attrs.get(KEY)
            if k is not None and t.values is not None:
                cache.setdefault(k, list(t.values))
    return cache.get(key)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: A RUNNING trial with no worker record this old was left by a process killed between creating
#: the trial and its first write (microseconds apart in a live worker).
UNCLAIMED_SECONDS = 120


def fail_dead_trials(study: optuna.Study) -> int:
    """Mark RUNNING trials of dead processes on this machine as FAIL (a killed run's leftovers)."""
    import datetime

    host, failed = socket.gethostname(), 0
    now = datetime.datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.system_attrs.get(WORKER)
        orphan = (worker is None and t.datetime_start is not None
                  and (now - t.datetime_start).total_seconds() > UNCLAIMED_SECONDS)
        if orphan or (worker and worker["host"] == host and not _alive(int(worker["pid"]))):
            study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
            failed += 1
    with warnings.catch_warnings():  # "experimental" since Optuna 2.9; stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # other machines: the storage's heartbeat, if any
    return failed
