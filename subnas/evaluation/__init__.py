"""Evaluation: perplexity and bits per byte, importance scores, and lm-eval tasks.

- ``_perplexity``: `evaluate` (what ``subnas evaluate`` runs) and the perplexity fitness's measurement.
- ``_importance``: activation, magnitude and layer-removal scores (paper Appendix E, after Minitron).
- ``_lm_eval``: `evaluate_tasks`, downstream tasks through EleutherAI's lm-evaluation-harness.
"""

from subnas.evaluation._importance import (
    ImportanceScorer,
    ImportanceScores,
    activation_scores,
    layer_removal_scores,
    magnitude_scores,
)
from subnas.evaluation._lm_eval import evaluate_tasks
from subnas.evaluation._importance import cached_scores
from subnas.evaluation._perplexity import (EVAL_DTYPES, auto_batch_size, bits_per_byte, evaluate, nll_to_perplexity,
                                           perplexity, running_nll, supernet_tokenizer, supernet_tokens, target_bytes)

# What a fitness plugin needs (the built-in ones import exactly these): tokens of a --data value for
# a supernet, the running mean NLL of a sub-network over them, and the conversions of that NLL.
__all__ = ["EVAL_DTYPES", "ImportanceScorer", "ImportanceScores", "activation_scores", "auto_batch_size",
           "bits_per_byte", "cached_scores", "evaluate", "evaluate_tasks", "layer_removal_scores", "magnitude_scores",
           "nll_to_perplexity", "perplexity", "running_nll", "supernet_tokenizer", "supernet_tokens", "target_bytes"]
