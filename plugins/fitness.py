"""Built-in fitness plugins: ``perplexity`` (paper §2.2) and ``importance`` (paper Appendix E).

Both score a sub-network of a `subnas.Supernet` in place — the model is never copied — and both
take the held-out text once: perplexity tokenizes it once (cached on disk) and reuses the tensor
for every candidate; importance runs one calibration pass (cached on disk) and then scores a
candidate with a few index sums.
"""

from __future__ import annotations

from typing import Any, ClassVar, Iterator, Literal

from subnas.data import DataSourceError
from subnas.hookspecs import hookimpl
from subnas.interfaces import Fitness
from subnas.subnet import ResolvedSubNetwork, SubNetwork


class PerplexityFitness(Fitness):
    """Perplexity of the sub-network on held-out text, without further training (lower is better).

    Every candidate also gets its bits per byte (`last_metrics`). Candidates with a pruned
    vocabulary read the text through their pruned tokenizer; their per-token perplexity is not
    comparable with other vocabularies' (docs/design.md#measure-the-product), so ``metric="bits_per_byte"`` ranks by
    bits per byte — what `subnas.search` asks for whenever the space chooses the vocabulary.

    Args:
        supernet: the `subnas.Supernet` whose sub-networks are scored.
        data: held-out text, a ``--data`` value (default: the offline Wikipedia *search* split, so
            the validation split that reports the winner stays unseen; docs/design.md#measure-the-product).
        seq_len: tokens per sequence (paper: 512).
        num_seqs: sequences (paper: 1000; the offline validation split holds ~89 x 512).
        batch_size: sequences per forward pass; ``"auto"``: what fills the device
            (`subnas.evaluation._perplexity.auto_batch_size`: 4 on CPU).
        progress: show a progress bar per candidate.
        metric: ``"perplexity"`` (the paper's fitness) or ``"bits_per_byte"``.
        confirm_seqs: sequences of ``data`` *after* the first ``num_seqs`` on which `confirm`
            re-measures the search's best few candidates (0: no confirmation). 16 x 256 tokens rank
            close candidates by luck; see docs/search.md for the measurement.
        dtype: precision of the forward passes: ``float32``, ``bfloat16`` (autocast, CPU and CUDA) or
            ``auto`` (bf16 on CUDA, float32 on CPU; docs/benchmarks/eval_dtype.md measures the choice).
    """

    direction: ClassVar[Literal["minimize", "maximize"]] = "minimize"
    METRICS: ClassVar[tuple[str, ...]] = ("perplexity", "bits_per_byte")

    def __init__(self, supernet: Any, *, data: str = "default:search", seq_len: int = 256, num_seqs: int = 16,
                 batch_size: int | str = "auto", progress: bool = False, metric: str = "perplexity",
                 confirm_seqs: int = 48, dtype: str = "auto") -> None:
        from subnas.evaluation import EVAL_DTYPES, auto_batch_size

        if dtype not in EVAL_DTYPES:
            raise ValueError(f"dtype={dtype!r} is not one of {', '.join(EVAL_DTYPES)}")
        if batch_size == "auto":
            batch_size = auto_batch_size(supernet.subnas_config, seq_len, num_seqs, supernet.device)
        self.dtype = dtype
        if metric not in self.METRICS:
            raise ValueError(f"metric={metric!r} is not one of {', '.join(self.METRICS)}")
        if confirm_seqs < 0:
            raise ValueError(f"confirm_seqs {confirm_seqs} is negative; give 0 (no confirmation) or more sequences")
        self.supernet, self.batch_size, self.progress, self.data = supernet, batch_size, progress, data
        self.seq_len, self.num_seqs, self.metric = seq_len, num_seqs, metric
        self.confirm_seqs = confirm_seqs
        self.confirm_tokens = None
        self.confirm_data = ""
        # One tokenization for both: blocks are cut from one token stream, so the first num_seqs of
        # the longer request are the search's own and the rest is text its score never saw.
        stream = self._stream(None)
        self.tokens = stream[:num_seqs]
        if confirm_seqs:
            self.confirm_tokens = stream[num_seqs:]
            self.confirm_data = f"{data} sequences {num_seqs}-{num_seqs + confirm_seqs - 1} ({seq_len} tokens each)"
        if metric == "bits_per_byte":
            from subnas.evaluation import target_bytes

            if not target_bytes(supernet.tokenizer, self.tokens):
                raise ValueError(f"metric='bits_per_byte' needs the bytes each token stands for, which this "
                                 f"tokenizer ({type(supernet.tokenizer).__name__}) does not give (a fast BPE "
                                 f"tokenizer does); use metric='perplexity'")
        self._streams: dict[Any, Any] = {None: stream}
        self.last_metrics: dict[str, float | None] = {}

    @classmethod
    def from_context(cls, context: Any, **options: Any) -> PerplexityFitness:
        """Perplexity for a search: its text, sequence length and number of sequences; about four
        reports per candidate when a pruner judges them; no confirmation text when nothing is
        confirmed; bits per byte when the space chooses the vocabulary (per-token perplexity is
        not comparable across vocabularies, issue #13). ``options`` win."""
        wanted: dict[str, Any] = {"data": context.data, "seq_len": context.seq_len, "num_seqs": context.num_seqs,
                                  "dtype": context.dtype}
        if context.pruning:
            wanted["batch_size"] = max(1, context.num_seqs // 4)
        if context.confirm == 0:
            wanted["confirm_seqs"] = 0
        if len(context.vocab_choices) > 1:
            wanted["metric"] = "bits_per_byte"
        return cls(context.supernet, **{**wanted, **options})

    def _stream(self, vocab: tuple[int, ...] | None) -> Any:
        """The search's and the confirmation's sequences of ``data``, in a vocabulary's numbering."""
        from subnas.evaluation import supernet_tokens

        try:
            return supernet_tokens(self.supernet, self.data, self.seq_len, self.num_seqs + self.confirm_seqs,
                                   vocab=vocab)
        except DataSourceError as exc:
            if not self.confirm_seqs:
                raise
            supernet_tokens(self.supernet, self.data, self.seq_len, self.num_seqs, vocab=vocab)  # the plain error
            raise DataSourceError(
                f"{self.data!r} has too little text to confirm the best candidates on {self.confirm_seqs} more "
                f"sequences of {self.seq_len} tokens after the {self.num_seqs} the search scores on; give fewer "
                f"confirmation sequences (--fitness-options '{{\"confirm_seqs\": 8}}'), --confirm 0, or more "
                f"text ({exc})") from exc

    def trivial_baseline(self) -> tuple[float, str]:
        """The score of a unigram model fitted to the very tokens scored (so an optimistic baseline):
        a sub-network worse than it has learned nothing a token count does not know.

        Example:
            >>> import math, torch
            >>> f = PerplexityFitness.__new__(PerplexityFitness)
            >>> f.tokens, f.metric, f.data = torch.tensor([[0, 1, 2, 1, 2]]), "perplexity", "toy"
            >>> value, what = f.trivial_baseline()
            >>> round(value, 3) == round(math.exp(-2 * 0.5 * math.log(0.5)), 3), what
            (True, 'a unigram model of toy (perplexity 2.00)')
        """
        import math

        import torch

        from subnas.evaluation import bits_per_byte, nll_to_perplexity, supernet_tokenizer, target_bytes

        targets = self.tokens[:, 1:].reshape(-1)
        p = torch.bincount(targets).double() / targets.numel()
        p = p[p > 0]
        nll = float(-(p * p.log()).sum())  # the mean NLL of the best unigram model, in nats
        ppl = nll_to_perplexity(nll)
        what = f"a unigram model of {self.data} (perplexity {ppl:.2f})"
        if self.metric == "bits_per_byte":
            bpb = bits_per_byte(nll, self.tokens, target_bytes(supernet_tokenizer(self.supernet, None), self.tokens))
            return (math.nan if bpb is None else bpb), f"a unigram model of {self.data} ({bpb:.3f} bits per byte)"
        return ppl, what

    def __call__(self, subnet: SubNetwork | ResolvedSubNetwork) -> float:
        value = float("nan")
        for _, value in self.steps(subnet):
            pass
        return value

    def tokens_for(self, vocab: tuple[int, ...] | None, *, confirm: bool = False) -> Any:
        """The evaluation (or confirmation) tokens in a (pruned) vocabulary's numbering, tokenized
        once per vocabulary."""
        if vocab not in self._streams:
            if len(self._streams) > 16:
                self._streams = {None: self._streams[None]}
            self._streams[vocab] = self._stream(vocab)
        stream = self._streams[vocab]
        return stream[self.num_seqs:] if confirm else stream[:self.num_seqs]

    def steps(self, subnet: SubNetwork | ResolvedSubNetwork) -> Iterator[tuple[int, float]]:
        """Running fitness after every batch: ``(tokens scored, perplexity or bits per byte so far)``."""
        yield from self._running(subnet, confirm=False)

    def confirm(self, subnet: SubNetwork | ResolvedSubNetwork) -> float | None:
        """The fitness on the ``confirm_seqs`` sequences that follow the search's own (None if 0)."""
        if self.confirm_tokens is None:
            return None
        value = float("nan")
        for _, value in self._running(subnet, confirm=True):
            pass
        return value

    def _running(self, subnet: SubNetwork | ResolvedSubNetwork, *, confirm: bool) -> Iterator[tuple[int, float]]:
        from subnas.evaluation import bits_per_byte, nll_to_perplexity, running_nll, supernet_tokenizer, target_bytes

        resolved = subnet if isinstance(subnet, ResolvedSubNetwork) else subnet.resolve(self.supernet.subnas_config)
        tokens = self.tokens_for(resolved.vocab, confirm=confirm)
        tokenizer = supernet_tokenizer(self.supernet, resolved.vocab)
        with self.supernet.sub_network(resolved):
            for scored, nll in running_nll(self.supernet.model, tokens, batch_size=self.batch_size,
                                           progress=self.progress and not confirm, dtype=self.dtype):
                # Bytes of the batches scored so far, so bits per byte is a running value like perplexity.
                part = tokens[: scored // (tokens.shape[1] - 1)]
                bpb = bits_per_byte(nll, part, target_bytes(tokenizer, part))
                metrics = {"perplexity": nll_to_perplexity(nll), "bits_per_byte": bpb}
                if not confirm:
                    self.last_metrics = metrics
                value = metrics[self.metric]
                yield scored, float("nan") if value is None else value


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
        from subnas.evaluation import supernet_tokens
        from subnas.evaluation import ImportanceScorer, cached_scores

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
