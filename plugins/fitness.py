"""Built-in fitness plugins: ``perplexity`` (paper §2.2) and ``importance`` (paper Appendix E).

Both score a sub-network of a `subnas.Supernet` in place — the model is never copied — and both
take the held-out text once: perplexity tokenizes it once (cached on disk) and reuses the tensor
for every candidate; importance runs one calibration pass (cached on disk) and then scores a
candidate with a few index sums.
"""

from __future__ import annotations

from typing import Any, ClassVar, Iterator, Literal

from subnas.assets import DataSourceError
from subnas.hookspecs import hookimpl
from subnas.interfaces import Fitness
from subnas.subnet import ResolvedSubNetwork, SubNetwork


class PerplexityFitness(Fitness):
    """Perplexity of the sub-network on held-out text, without further training (lower is better).

    Args:
        supernet: the `subnas.Supernet` whose sub-networks are scored.
        data: held-out text, a ``--data`` value (default: the offline Wikipedia *search* split, so
            the validation split that reports the winner stays unseen; DESIGN.md §12).
        seq_len: tokens per sequence (paper: 512).
        num_seqs: sequences (paper: 1000; the offline validation split holds ~89 x 512).
        batch_size: sequences per forward pass.
        progress: show a progress bar per candidate.
        confirm_seqs: sequences of ``data`` *after* the first ``num_seqs`` on which `confirm`
            re-measures the search's best few candidates (0: no confirmation). 16 x 256 tokens rank
            close candidates by luck; see docs/benchmarks/search.md for the measurement.
    """

    direction: ClassVar[Literal["minimize", "maximize"]] = "minimize"

    def __init__(self, supernet: Any, *, data: str = "default:search", seq_len: int = 256, num_seqs: int = 16,
                 batch_size: int = 4, progress: bool = False, confirm_seqs: int = 48) -> None:
        from subnas.evaluate import supernet_tokens

        if confirm_seqs < 0:
            raise ValueError(f"confirm_seqs {confirm_seqs} is negative; give 0 (no confirmation) or more sequences")
        self.supernet, self.batch_size, self.progress, self.data = supernet, batch_size, progress, data
        self.tokens = supernet_tokens(supernet, data, seq_len, num_seqs)
        self.confirm_tokens = None
        self.confirm_data = ""
        if confirm_seqs:
            # Blocks are cut from one token stream, so the first num_seqs of a longer request are
            # exactly self.tokens: the rest is text the search's own score never saw.
            try:
                more = supernet_tokens(supernet, data, seq_len, num_seqs + confirm_seqs)
            except DataSourceError as exc:
                raise DataSourceError(
                    f"{data!r} has too little text to confirm the best candidates on {confirm_seqs} more sequences "
                    f"of {seq_len} tokens after the {num_seqs} the search scores on; give fewer confirmation "
                    f"sequences (--fitness-options '{{\"confirm_seqs\": 8}}'), --confirm 0, or more text ({exc})"
                ) from exc
            self.confirm_tokens = more[num_seqs:]
            self.confirm_data = f"{data} sequences {num_seqs}-{num_seqs + confirm_seqs - 1} ({seq_len} tokens each)"

    def __call__(self, subnet: SubNetwork | ResolvedSubNetwork) -> float:
        value = float("nan")
        for _, value in self.steps(subnet):
            pass
        return value

    def steps(self, subnet: SubNetwork | ResolvedSubNetwork) -> Iterator[tuple[int, float]]:
        """Running perplexity after every batch: ``(tokens scored, perplexity so far)``."""
        from subnas.evaluate import nll_to_perplexity, running_nll

        with self.supernet.sub_network(subnet):
            for scored, nll in running_nll(self.supernet.model, self.tokens, batch_size=self.batch_size,
                                           progress=self.progress):
                yield scored, nll_to_perplexity(nll)

    def confirm(self, subnet: SubNetwork | ResolvedSubNetwork) -> float | None:
        """Perplexity on the ``confirm_seqs`` sequences that follow the search's own (None if 0)."""
        from subnas.evaluate import perplexity

        if self.confirm_tokens is None:
            return None
        with self.supernet.sub_network(subnet):
            return perplexity(self.supernet.model, self.confirm_tokens, batch_size=self.batch_size, progress=False)


class ImportanceFitness(Fitness):
    """Fraction of importance mass a sub-network keeps, in [0, 1] (higher is better).

    Args:
        supernet: the `subnas.Supernet` whose sub-networks are scored.
        method: ``"activation"`` (one calibration pass over ``data``) or ``"magnitude"`` (weights only).
        data: calibration text for ``"activation"`` (default: the offline Wikipedia *calibration*
            split, the one the importance order is computed on; validation stays unseen).
        seq_len, num_seqs, batch_size: size of the calibration pass.
    """

    direction: ClassVar[Literal["minimize", "maximize"]] = "maximize"

    def __init__(self, supernet: Any, *, method: str = "activation", data: str = "default:calibration",
                 seq_len: int = 256, num_seqs: int = 16, batch_size: int = 4) -> None:
        from subnas.evaluate import supernet_tokens
        from subnas.importance import ImportanceScorer, cached_scores

        self.data = data if method == "activation" else "weights"
        tokens = supernet_tokens(supernet, data, seq_len, num_seqs) if method == "activation" else None
        previous = supernet.active
        try:
            scores = cached_scores(supernet.model, method, tokens=tokens, source=str(supernet.source),
                                   batch_size=batch_size)
        finally:
            supernet.set_sub_network(previous)
        self.scorer = ImportanceScorer(scores, supernet.subnas_config)

    def __call__(self, subnet: SubNetwork | ResolvedSubNetwork) -> float:
        return self.scorer(subnet)


@hookimpl
def register_fitness(register: Any) -> None:
    register("perplexity", PerplexityFitness)
    register("importance", ImportanceFitness)
