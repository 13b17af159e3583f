"""What a round computes before anyone picks: weights, scores, candidates, metrics."""

from rlmba_env.selection.metrics import balance_score, ece, nll, shapley_contributions, top1

__all__ = ["balance_score", "ece", "nll", "shapley_contributions", "top1"]
