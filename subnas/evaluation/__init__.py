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
from subnas.evaluation._perplexity import bits_per_byte, evaluate, perplexity

__all__ = ["ImportanceScorer", "ImportanceScores", "activation_scores", "bits_per_byte", "evaluate",
           "evaluate_tasks", "layer_removal_scores", "magnitude_scores", "perplexity"]
