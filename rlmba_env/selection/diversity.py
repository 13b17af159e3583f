"""Diversity over the pool, RL-MBA (arXiv 2603.25107), method step 3.

The pool's features are fused with the AMCB weights, clustered by k-means (k = b,
k-means++ seeding, at most a few Lloyd iterations), and d(x) is each row's distance to its
nearest centroid: rows far from every centroid are unlike the bulk of the pool. All distance
work is done as matrix products in row chunks on the features' device, so memory stays
bounded at any pool size.
"""

from __future__ import annotations

import torch

CHUNK_ROWS = 65536


def fuse_features(
    features: dict[str, torch.Tensor], weights: torch.Tensor, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """Concatenate standardised modality features scaled by sqrt(w_m).

    Each block is expected standardised per column and divided by sqrt(d_m) (see
    :func:`standardise`), so squared distances in the result are the AMCB-weighted sum of
    per-modality squared distances, independent of each modality's dimension.
    """
    blocks = []
    for w, x in zip(weights, features.values()):
        x = x if rows is None else x[rows]
        blocks.append(x * w.sqrt())
    return torch.cat(blocks, dim=1)


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per column, then scaled by 1/sqrt(d) (unit expected norm)."""
    x = x.float()
    std = x.std(dim=0, unbiased=False).clamp_min(1e-6)
    return (x - x.mean(dim=0)) / std / (x.shape[1] ** 0.5)


def nearest_centroid(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance to and index of the nearest centroid for every row, in chunks."""
    c_sq = (centroids * centroids).sum(1)
    dists, assign = [], []
    for start in range(0, x.shape[0], CHUNK_ROWS):
        chunk = x[start : start + CHUNK_ROWS]
        sq = (chunk * chunk).sum(1, keepdim=True) - 2.0 * chunk @ centroids.T + c_sq
        d, a = sq.clamp_min(0).min(dim=1)
        dists.append(d)
        assign.append(a)
    return torch.cat(dists).sqrt(), torch.cat(assign)


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007): indices of k distinct rows."""
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means++ needs 1 <= k <= rows, got k={k} for {n} rows")
    first = torch.randint(n, (1,), generator=generator, device=generator.device).to(x.device)
    chosen = [first]
    # A chosen row can never be drawn again; the tiny floor keeps the draw defined when
    # every remaining row coincides with a centre (no host sync to test for that case).
    available = torch.ones(n, dtype=x.dtype, device=x.device)
    available[first] = 0
    d2 = nearest_centroid(x, x[first])[0].square()
    for _ in range(1, k):
        probs = (d2 + 1e-12) * available
        nxt = torch.multinomial(probs.to(generator.device), 1, generator=generator).to(x.device)
        chosen.append(nxt)
        available[nxt] = 0
        d2 = torch.minimum(d2, nearest_centroid(x, x[nxt])[0].square())
    return torch.cat(chosen)


def kmeans(
    x: torch.Tensor, k: int, generator: torch.Generator, iterations: int = 5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lloyd's k-means from k-means++ seeds.

    Returns:
        centroids (k, D), distance of every row to its nearest centroid (N,), assignment (N,).
    """
    centroids = x[kmeans_plus_plus(x, k, generator)].clone()
    for _ in range(iterations):
        _, assign = nearest_centroid(x, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        # An emptied cluster keeps its previous centre instead of collapsing to the origin.
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centroids)
    distance, assign = nearest_centroid(x, centroids)
    return centroids, distance, assign
