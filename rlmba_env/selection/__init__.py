"""What a round computes before anyone picks: modality weights, scores, diversity, metrics."""

from rlmba_env.selection.amcb import amcb_weights
from rlmba_env.selection.diversity import kmeans, kmeans_plus_plus, nearest_centroid
from rlmba_env.selection.efda import fused_uncertainty, minmax, selection_score
from rlmba_env.selection.metrics import balance_score, ece, nll, shapley_contributions, top1

__all__ = ["amcb_weights", "balance_score", "ece", "fused_uncertainty", "kmeans", "kmeans_plus_plus",
           "minmax", "nearest_centroid", "nll", "selection_score", "shapley_contributions", "top1"]
