"""The task model the active-learning loop trains every round: evidential opinions per modality."""

from rlmba_env.learner.evidential import (
    EVIDENCE_FUNCTIONS,
    FUSION_METHODS,
    discount,
    dirichlet_mean_variance,
    ds_combine,
    ds_conflict,
    edl_loss,
    evidence,
    evidence_to_alpha,
    expected_probs,
    fuse,
    fuse_dempster_shafer,
    fuse_geometric,
    fuse_weighted,
    kl_to_uniform_dirichlet,
    opinion,
)
from rlmba_env.learner.model import MultimodalEvidentialNet
from rlmba_env.learner.trainer import EvidentialLearner, FitStats, LearnerConfig

__all__ = [
    "EVIDENCE_FUNCTIONS",
    "FUSION_METHODS",
    "EvidentialLearner",
    "FitStats",
    "LearnerConfig",
    "MultimodalEvidentialNet",
    "dirichlet_mean_variance",
    "discount",
    "ds_combine",
    "ds_conflict",
    "edl_loss",
    "evidence",
    "evidence_to_alpha",
    "expected_probs",
    "fuse",
    "fuse_dempster_shafer",
    "fuse_geometric",
    "fuse_weighted",
    "kl_to_uniform_dirichlet",
    "opinion",
]
