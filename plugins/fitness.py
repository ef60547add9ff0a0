"""Built-in fitness plugins: ``perplexity`` (paper §2.2) and ``importance`` (paper Appendix E).

Both score a sub-network of a `subnas.Supernet` in place — the model is never copied — and both
take the held-out text once: perplexity tokenizes it once (cached on disk) and reuses the tensor
for every candidate; importance runs one calibration pass (cached on disk) and then scores a
candidate with a few index sums.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from subnas.hookspecs import hookimpl
from subnas.interfaces import Fitness
from subnas.subnet import ResolvedSubNetwork, SubNetwork


def _tokens(supernet: Any, data: str, seq_len: int, num_seqs: int) -> Any:
    from subnas.assets import resolve_text_source
    from subnas.evaluate import check_sequence_length, requires_bos, tokenize_for_eval

    if supernet.tokenizer is None:
        raise ValueError(f"model {supernet.source!r} has no tokenizer beside it; a data-driven fitness needs one")
    check_sequence_length(supernet.model, seq_len)
    return tokenize_for_eval(resolve_text_source(data), supernet.tokenizer, seq_len, num_seqs,
                             add_bos=requires_bos(supernet.subnas_config))


class PerplexityFitness(Fitness):
    """Perplexity of the sub-network on held-out text, without further training (lower is better).

    Args:
        supernet: the `subnas.Supernet` whose sub-networks are scored.
        data: held-out text, a ``--data`` value (default: the offline Wikipedia validation split).
        seq_len: tokens per sequence (paper: 512).
        num_seqs: sequences (paper: 1000; the offline validation split holds ~89 x 512).
        batch_size: sequences per forward pass.
        progress: show a progress bar per candidate.
    """

    direction: ClassVar[Literal["minimize", "maximize"]] = "minimize"

    def __init__(self, supernet: Any, *, data: str = "default:validation", seq_len: int = 256, num_seqs: int = 16,
                 batch_size: int = 4, progress: bool = False) -> None:
        self.supernet, self.batch_size, self.progress = supernet, batch_size, progress
        self.tokens = _tokens(supernet, data, seq_len, num_seqs)

    def __call__(self, subnet: SubNetwork | ResolvedSubNetwork) -> float:
        from subnas.evaluate import perplexity

        with self.supernet.sub_network(subnet):
            return perplexity(self.supernet.model, self.tokens, batch_size=self.batch_size, progress=self.progress)


class ImportanceFitness(Fitness):
    """Fraction of importance mass a sub-network keeps, in [0, 1] (higher is better).

    Args:
        supernet: the `subnas.Supernet` whose sub-networks are scored.
        method: ``"activation"`` (one calibration pass over ``data``) or ``"magnitude"`` (weights only).
        data: calibration text for ``"activation"`` (default: the offline Wikipedia *train* split,
            so the held-out split stays unseen).
        seq_len, num_seqs, batch_size: size of the calibration pass.
    """

    direction: ClassVar[Literal["minimize", "maximize"]] = "maximize"

    def __init__(self, supernet: Any, *, method: str = "activation", data: str = "default:train", seq_len: int = 256,
                 num_seqs: int = 16, batch_size: int = 4) -> None:
        from subnas.importance import ImportanceScorer, cached_scores

        tokens = _tokens(supernet, data, seq_len, num_seqs) if method == "activation" else None
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
