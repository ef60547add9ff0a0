"""`GenomeSampler`: the Optuna plumbing shared by subnas's samplers that breed whole sub-networks.

Such a sampler chooses a candidate (a genome) in ``before_trial``, keeps it and its encoded Optuna
parameters per trial, hands the parameters back to ``suggest_*`` calls, and lets its inner sampler
answer any parameter it did not set (so it works with any objective). What to breed is the
subclass's: `BinEvolutionSampler` (one bin) and `ParetoEvolutionSampler` (the whole front).
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from subnas.subnet import SubNetwork


class GenomeSampler(BaseSampler):
    """Subclasses set ``_inner`` (the fallback sampler), ``_genomes`` and ``_params`` (per trial id),
    ``_seed`` and the study attribute it is kept under (``seed_attr``), and choose the genome in
    ``before_trial``."""

    #: The study system attribute that keeps the run's seed (each sampler its own, so that a study
    #: records which sampler started it).
    seed_attr: ClassVar[str]
    _seed: int
    _inner: BaseSampler
    _genomes: dict[int, SubNetwork]
    _params: dict[int, dict[str, Any]]

    def _study_seed(self, study: optuna.Study) -> int:
        """The seed the study was started with: stored on first use, so a resumed run or another
        worker draws with the first run's seed whatever seed it was given."""
        attrs = study._storage.get_study_system_attrs(study._study_id)
        if self.seed_attr not in attrs:
            study._storage.set_study_system_attr(study._study_id, self.seed_attr, self._seed)
            attrs = study._storage.get_study_system_attrs(study._study_id)
        return int(attrs[self.seed_attr])

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        value = self._params.get(trial._trial_id, {}).get(param_name)
        if value is not None and param_distribution._contains(param_distribution.to_internal_repr(value)):
            return value
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._inner.after_trial(study, trial, state, values)
        self._genomes.pop(trial._trial_id, None)
        self._params.pop(trial._trial_id, None)

    def genome_for(self, trial: Any) -> SubNetwork | None:
        """The candidate this sampler chose for ``trial`` (read by ``SearchSpace.suggest``)."""
        return self._genomes.get(trial._trial_id)
