"""The task model: one encoder and one evidential head per modality.

Per modality ``m``: standardise the cached features, encode them with a one-layer MLP, and map
the embedding to non-negative evidence with a linear head and an evidence function (exp or
softplus), giving ``alpha_m = e_m + 1``
(evidential deep learning, Sensoy et al., NeurIPS 2018; per-view evidential heads as in TMC,
Han et al., ICLR 2021). Fusion is not part of the network: the learner fuses the stacked
opinions with the modality weights of the round (:mod:`rlmba_env.learner.evidential`), so the
same trained heads serve AMCB, EFDA and the Shapley contributions.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rlmba_env.checks import check_choice
from rlmba_env.learner.evidential import EVIDENCE_FUNCTIONS
from rlmba_env.learner.evidential import evidence as evidence_fn


class MultimodalEvidentialNet(nn.Module):
    """Per-modality MLP encoders with evidential heads.

    Args:
        feature_dims: modality name -> input dimension; its order is the modality order of
            every ``(M, ...)`` output.
        n_classes: number of classes ``K``.
        hidden: width of each modality's embedding.
        dropout: dropout after the encoder (also what MC-dropout strategies sample).
        evidence: the heads' evidence function, "exp" or "softplus"
            (:func:`~rlmba_env.learner.evidential.evidence`; ``LearnerConfig.evidence``).

    Input standardisation lives in the buffers ``input_mean_<i>`` / ``input_std_<i>`` (identity
    until :meth:`set_input_stats` is called) so that saved models carry it.
    """

    def __init__(self, feature_dims: dict[str, int], n_classes: int, hidden: int = 64, dropout: float = 0.1,
                 *, evidence: str):
        super().__init__()
        check_choice("evidence", evidence, EVIDENCE_FUNCTIONS)
        self.evidence = evidence
        if len(feature_dims) == 0:
            raise ValueError("feature_dims is empty; the network needs at least one modality")
        self.modalities: tuple[str, ...] = tuple(feature_dims)
        self.feature_dims = dict(feature_dims)
        self.n_classes = int(n_classes)
        # Lists indexed by modality position, not ModuleDict: modality names are free-form and
        # ModuleDict rejects names such as "rgb.v2".
        self.encoders = nn.ModuleList(
            nn.Sequential(nn.Linear(int(d), hidden), nn.ReLU(), nn.Dropout(dropout))
            for d in feature_dims.values()
        )
        self.heads = nn.ModuleList(nn.Linear(hidden, self.n_classes) for _ in feature_dims)
        for i, d in enumerate(feature_dims.values()):
            self.register_buffer(f"input_mean_{i}", torch.zeros(int(d)))
            self.register_buffer(f"input_std_{i}", torch.ones(int(d)))

    @torch.no_grad()
    def set_input_stats(self, features: dict[str, Tensor]) -> None:
        """Standardise inputs with the per-column mean and std of ``features`` (e.g. the whole pool).

        Cached features come from different encoders at very different scales (pixel counts,
        log-mel energies, CLIP embeddings); standardising lets one learning rate fit them all.
        """
        for i, m in enumerate(self.modalities):
            x = features[m].to(getattr(self, f"input_mean_{i}").device, torch.float32)
            mean = x.mean(0)
            std = x.std(0, unbiased=False)
            # constant columns (e.g. always-blank border pixels) would divide by zero
            std = torch.where(std > 1e-6, std, torch.ones_like(std))
            getattr(self, f"input_mean_{i}").copy_(mean)
            getattr(self, f"input_std_{i}").copy_(std)

    def _encode(self, i: int, x: Tensor) -> Tensor:
        mean = getattr(self, f"input_mean_{i}")
        std = getattr(self, f"input_std_{i}")
        return self.encoders[i]((x.to(mean.dtype) - mean) / std)

    def embed(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per-modality hidden embeddings ``(N, hidden)``, keyed by modality."""
        return {m: self._encode(i, features[m]) for i, m in enumerate(self.modalities)}

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """Dirichlet parameters ``alpha >= 1`` of every modality, stacked ``(M, N, K)``."""
        alphas = [
            evidence_fn(self.heads[i](self._encode(i, features[m])), self.evidence) + 1.0
            for i, m in enumerate(self.modalities)
        ]
        return torch.stack(alphas)
