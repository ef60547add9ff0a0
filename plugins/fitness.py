"""Built-in fitness plugins: ``perplexity`` (paper §2.2) and ``importance`` (paper Appendix E).

Both score a sub-network of a `subnas.Supernet` in place — the model is never copied — and both
take the held-out text once: perplexity tokenizes it once (cached on disk) and reuses the tensor
for every candidate; importance runs one calibration pass (cached on disk) and then scores a
candidate with a few index sums.
"""

from __future__ import annotations

from typing import Any, ClassVar, Iterator, Literal

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
    """

    direction: ClassVar[Literal["minimize", "maximize"]] = "minimize"

    def __init__(self, supernet: Any, *, data: str = "default:search", seq_len: int = 256, num_seqs: int = 16,
                 batch_size: int = 4, progress: bool = False) -> None:
        from subnas.evaluate import supernet_tokens

        self.supernet, self.batch_size, self.progress, self.data = supernet, batch_size, progress, data
        self.tokens = supernet_tokens(supernet, data, seq_len, num_seqs)

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
