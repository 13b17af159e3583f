"""Diversity over the pool, RL-MBA (arXiv 2603.25107), method step 3.

The pool's features are fused with the AMCB weights, clustered by k-means (k = b,
k-means++ seeding, at most a few Lloyd iterations), and d(x) is each row's distance to its
nearest centroid: rows far from every centroid are unlike the bulk of the pool. All distance
work is done as matrix products in row chunks of at most
:data:`~rlmba_env.chunked.CHUNK_ELEMENTS` distances on
the features' device, so memory stays bounded at any pool size.

Two ways to cluster, chosen once per environment by the pool size (:class:`DiversitySpace`):

- **exact** (at most :data:`EXACT_MAX_ROWS` pool rows and :data:`EXACT_MAX_WORK` rows x
  clusters, e.g. AV-Digits' 2,820 x 10): standardised features, exact k-means++ seeding
  (Arthur & Vassilvitskii, SODA 2007) over every row, then Lloyd iterations over every row.
  Seeding is k sequential passes over the pool: fine for small pools, far too slow for
  k = 1000 and a million rows (about 6 minutes per round at 100,000 rows on one core).
- **scalable** (larger pools): two standard reductions, each with a guarantee on the k-means cost.
  1. *Dimension*: the standardised features of each modality are multiplied once, when the env
     is built, by a Gaussian random matrix to :data:`PROJECTION_DIMS` columns (Johnson-
     Lindenstrauss; for k-means, Makarychev, Makarychev & Razenshteyn, STOC 2019: O(log(k/eps)
     / eps^2) dimensions keep the cost of every k-clustering within 1 +- eps). Projection is
     linear, so the AMCB-weighted fused projection of a round is sum_m sqrt(w_m) P_m: no pass
     over the raw features per round. The price: one row's squared distance is kept only in
     expectation, with a relative spread of about sqrt(2 / PROJECTION_DIMS) = 18%.
  2. *Rows*: k-means++ seeding and the Lloyd iterations run on a lightweight coreset (Bachem,
     Lucic & Krause, KDD 2018) of :func:`coreset_size` rows drawn i.i.d. with probability
     q(x) = 1/(2n) + d(x, mean)^2 / (2 sum d^2) and weighted 1 / (m q(x)): a weighted k-means
     solution on it is a good one on the whole pool. The seeding draws its centres in
     :data:`SEEDING_ROUNDS` batches instead of one at a time (:func:`weighted_kmeans_plus_plus`).
     Only the final assignment, which gives d(x) and the clusters, touches every row (one
     chunked pass, n x k x PROJECTION_DIMS).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rlmba_env.chunked import CHUNK_ELEMENTS, CHUNK_ROWS, column_stats, float_chunks, nearest_sq

ASSIGN_BLOCK_ELEMENTS = 1 << 22
"""(rows x centroids) block of the scalable variant's assignment: small enough to stay in a
CPU's cache between the matrix product and the minimum (about 2x faster than 64 MiB blocks)"""
EXACT_MAX_ROWS = 20_000
"""pools of up to this many rows are clustered exactly, if also within :data:`EXACT_MAX_WORK`"""
EXACT_MAX_WORK = 500_000
"""largest pool rows x clusters clustered exactly (AV-Digits: 2,820 x 10)"""
PROJECTION_DIMS = 64
"""columns of the random projection used by the scalable variant"""
PROJECTION_SEED = 0
"""seed of the projection matrix: fixed, so an env's diversity features are a function of its data"""
CORESET_MIN_ROWS = 10_000
"""fewest coreset draws of the scalable variant (or every row of a smaller pool)"""
CORESET_ROWS_PER_CLUSTER = 10
"""coreset draws per cluster above :data:`CORESET_MIN_ROWS`"""
SEEDING_ROUNDS = 32
"""batches of the scalable variant's k-means++ seeding (see :func:`weighted_kmeans_plus_plus`)"""
FOLD_MAX_OFFSET = 1e3
"""largest |mean| / std of a column for which the centring is folded into the projection"""


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


def random_projection(x: torch.Tensor, dims: int, generator: torch.Generator,
                      chunk: int = CHUNK_ROWS) -> torch.Tensor:
    """``standardise(x) @ R`` with ``R ~ N(0, 1/dims)`` of shape (d, dims), in row chunks.

    ``E ||standardise(x_i - x_j) @ R||^2 = ||standardise(x_i - x_j)||^2``: squared distances are
    kept in expectation (Johnson-Lindenstrauss). ``R`` is drawn on the CPU from ``generator``
    so the projection is the same on every device.
    """
    d = x.shape[1]
    mean, std = column_stats(x, chunk)
    std = std.clamp_min(1e-6)
    r = torch.randn(d, dims, generator=generator, dtype=torch.float32) / dims ** 0.5
    # fold the standardisation into the projection: (x - mean) / s @ R = x @ (R / s) - mean @ (R / s),
    # unless a column's mean dwarfs its spread (float32 would cancel): then centre each chunk
    r = (r.to(x.device) / (std[:, None] * d ** 0.5)).contiguous()
    centre = bool((mean.abs() / std).max() > FOLD_MAX_OFFSET)
    offset = mean @ r
    out = torch.empty(x.shape[0], dims, device=x.device, dtype=torch.float32)
    for lo, block in float_chunks(x, chunk):
        if centre:
            torch.mm(block.sub_(mean), r, out=out[lo : lo + chunk])
        else:
            torch.sub(block @ r, offset, out=out[lo : lo + chunk])
    return out


@dataclass
class DiversitySpace:
    """The env's features for step 3, built once per env (:meth:`build`).

    ``blocks`` holds, per modality, the standardised features (``scalable`` False) or their
    random projections to :data:`PROJECTION_DIMS` columns (``scalable`` True), for every
    dataset row.
    """

    blocks: dict[str, torch.Tensor]
    scalable: bool
    gemm_dtype: torch.dtype = torch.float32
    """dtype of the scalable variant's distance products (see :func:`assign_to_centroids`);
    with bfloat16 the projected blocks are also stored in bfloat16"""

    @staticmethod
    def is_exact(pool_rows: int, clusters: int) -> bool:
        """Whether a pool of ``pool_rows`` rows clustered into ``clusters`` is done exactly."""
        return pool_rows <= EXACT_MAX_ROWS and pool_rows * clusters <= EXACT_MAX_WORK

    @classmethod
    def build(cls, features: dict[str, torch.Tensor], pool_rows: int, clusters: int,
              dims: int | None = None, gemm_dtype: torch.dtype = torch.float32) -> "DiversitySpace":
        """The exact space when :meth:`is_exact` (always float32), else the projected one."""
        dims = PROJECTION_DIMS if dims is None else dims
        if cls.is_exact(pool_rows, clusters):
            return cls({m: standardise(x) for m, x in features.items()}, scalable=False)
        generator = torch.Generator().manual_seed(PROJECTION_SEED)
        blocks = {m: random_projection(x, dims, generator).to(gemm_dtype) for m, x in features.items()}
        return cls(blocks, scalable=True, gemm_dtype=gemm_dtype)

    def fused(self, weights: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """AMCB-weighted fused diversity features of ``rows`` (all rows if None)."""
        if not self.scalable:
            return fuse_features(self.blocks, weights, rows)
        blocks = list(self.blocks.values())
        n = blocks[0].shape[0] if rows is None else rows.shape[0]
        scale = weights.to(torch.float32).sqrt()
        out = torch.empty(n, blocks[0].shape[1], dtype=torch.float32, device=blocks[0].device)
        # in row chunks: whole-pool temporaries would be fresh allocations every round, and
        # on the CPU each costs its page faults (3x slower at a million rows)
        for lo in range(0, n, CHUNK_ROWS):
            chunk = out[lo : lo + CHUNK_ROWS]
            part = slice(lo, lo + CHUNK_ROWS) if rows is None else rows[lo : lo + CHUNK_ROWS]
            for i, p in enumerate(blocks):
                block = p[part] if rows is None else p.index_select(0, part)
                if i == 0:
                    chunk.copy_(block).mul_(scale[i])
                else:
                    chunk.add_(block.float() * scale[i])  # not in place: block may be a view of p
        return out

    def nearest(self, x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distance to and index of the nearest of ``centroids`` for every row of ``x``."""
        return assign_to_centroids(x, centroids, self.gemm_dtype) if self.scalable else nearest_centroid(x, centroids)

    def kmeans(self, x: torch.Tensor, k: int, generator: torch.Generator,
               iterations: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """k-means of fused rows ``x``: exact or coreset-based (see the module docstring)."""
        if self.scalable:
            return coreset_kmeans(x, k, generator, iterations, gemm_dtype=self.gemm_dtype)
        return kmeans(x, k, generator, iterations)


def nearest_centroid(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance (not squared) to and index of the nearest centroid for every row, in chunks
    (:func:`~rlmba_env.chunked.nearest_sq`)."""
    d2, index = nearest_sq(x, centroids)
    return d2.sqrt_(), index


def assign_to_centroids(x: torch.Tensor, centroids: torch.Tensor,
                        gemm_dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`nearest_centroid` with one pass over each (rows, k) block: the row norm is
    constant along a row, so the block is ``||c||^2 - 2 x.c`` (one GEMM) and ``||x||^2`` is
    added after the minimum. Equal up to float rounding; used by the scalable variant, where the
    blocks are large (the exact variant keeps :func:`nearest_centroid`'s arithmetic).

    With ``gemm_dtype`` bfloat16 the blocks are computed in bfloat16 (several times faster
    where the hardware has it) and only choose the centroid; the returned distance to it is
    then computed exactly in float32. Centroids nearly tied with the nearest one may be
    chosen instead (about 1% of rows on random data), at a distance within rounding of it.
    """
    c_sq = (centroids * centroids).sum(1)
    dists = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    assign = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    step = max(256, ASSIGN_BLOCK_ELEMENTS // max(centroids.shape[0], 1))
    if gemm_dtype != torch.float32:
        c_low, c_sq_low = centroids.to(gemm_dtype), c_sq.to(gemm_dtype)
        for start in range(0, x.shape[0], step):
            chunk = x[start : start + step]
            # min, not argmin: on the CPU argmin is several times slower for the same indices
            block = torch.addmm(c_sq_low, chunk.to(gemm_dtype), c_low.T, alpha=-2.0)
            assign[start : start + step] = torch.min(block, dim=1).indices
            nearest = centroids.index_select(0, assign[start : start + step])
            torch.sum((chunk.float() - nearest).square_(), 1, out=dists[start : start + step])
        return dists.sqrt_(), assign
    for start in range(0, x.shape[0], step):
        chunk = x[start : start + step]
        d, a = dists[start : start + step], assign[start : start + step]
        torch.min(torch.addmm(c_sq, chunk, centroids.T, alpha=-2.0), dim=1, out=(d, a))
        d.add_((chunk * chunk).sum(1))
    return dists.clamp_min_(0).sqrt_(), assign


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


def coreset_size(n: int, k: int) -> int:
    """Rows of the lightweight coreset for ``n`` rows and ``k`` clusters."""
    return min(n, max(CORESET_MIN_ROWS, CORESET_ROWS_PER_CLUSTER * k))


def lightweight_coreset(x: torch.Tensor, m: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Bachem, Lucic & Krause (KDD 2018), Algorithm 1: ``m`` i.i.d. draws with
    ``q(x) = 1/(2n) + d(x, mean)^2 / (2 sum d^2)``, weight ``1 / (m q)``.

    Returns the distinct drawn rows (ascending) and their weights, a row drawn j times
    carrying j times the weight; the weights sum to about n.
    """
    n = x.shape[0]
    mean = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for lo in range(0, n, CHUNK_ROWS):
        mean += x[lo : lo + CHUNK_ROWS].sum(0, dtype=torch.float64)
    mean = (mean / n).to(x.dtype)
    d2 = torch.empty(n, dtype=x.dtype, device=x.device)
    for lo in range(0, n, CHUNK_ROWS):
        torch.sum((x[lo : lo + CHUNK_ROWS] - mean).square_(), 1, out=d2[lo : lo + CHUNK_ROWS])
    total = d2.sum().clamp_min(torch.finfo(d2.dtype).tiny)
    q = 0.5 / n + 0.5 * d2 / total
    # m i.i.d. draws by inverse CDF (one cumulative sum and a binary search, on the device)
    cdf = torch.cumsum(q, 0, dtype=torch.float64)
    u = torch.rand(m, generator=generator, device=generator.device, dtype=torch.float64).to(x.device)
    draws = torch.searchsorted(cdf, u * cdf[-1], right=True).clamp_max_(n - 1)
    rows, counts = torch.unique(draws, return_counts=True)
    return rows, counts.to(x.dtype) / (m * q[rows])


def weighted_kmeans_plus_plus(x: torch.Tensor, weight: torch.Tensor, k: int,
                              generator: torch.Generator, rounds: int = SEEDING_ROUNDS) -> torch.Tensor:
    """k-means++ seeding of weighted rows, drawn in batches: indices of ``k`` distinct rows.

    The first centre is drawn by weight alone. Then each round draws a batch of up to
    ``ceil((k - 1) / rounds)`` rows at once, without replacement, with probability proportional
    to ``weight * d^2`` (d: distance to the nearest centre so far), and keeps each with
    probability ``d'^2 / d^2``, d' counting the centres kept earlier in the same batch: a
    rejection step that makes every kept row a draw from the k-means++ distribution of the
    moment, so two rows of one tight cluster are not both kept. One matrix product against
    the batch then updates d^2. Sequential k-means++ (``rounds = k - 1``) costs k dependent
    passes, each too small to keep the device busy; batches need about ``rounds`` passes, each
    with one transfer of a (batch x batch) block to the host for the rejection step.

    The draw without replacement is Efraimidis-Spirakis sampling (the top keys ``log(u) / p``);
    the batch is examined in the order of its keys, the order sequential draws would take.
    """
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means++ needs 1 <= k <= rows, got k={k} for {n} rows")
    if rounds < 1:
        raise ValueError(f"seeding needs at least one round, got rounds={rounds}")
    batch = -(-(k - 1) // rounds) if k > 1 else 1
    x_sq = (x * x).sum(1)
    available = weight.to(x.dtype).clone()
    d2 = torch.ones_like(x_sq)  # the first centre is drawn by weight alone
    chosen = torch.empty(k, dtype=torch.long, device=x.device)
    done = 0
    while done < k:
        b = 1 if done == 0 else min(batch, k - done)
        u = torch.rand(n + b, generator=generator, device=generator.device, dtype=torch.float64).to(x.device)
        # rows already chosen (available 0) get key -inf; at least k - done rows remain
        keys = torch.log(u[:n]).div_((d2 + 1e-12).double() * available.double())
        drawn = torch.topk(keys, b).indices
        centres = x.index_select(0, drawn)
        if b > 1:
            # rejection: keep drawn row j with probability d'^2 / d^2 (see above), on the host
            pair = torch.cdist(centres.float(), centres.float()).square_()
            host = torch.cat([pair.flatten(), d2.index_select(0, drawn).float(), u[n:].float()]).cpu().numpy()
            pair_h, old, accept_u = host[: b * b].reshape(b, b), host[b * b : b * b + b], host[b * b + b :]
            current, keep = old.copy(), []
            for j in range(b):
                if accept_u[j] * old[j] <= current[j]:
                    keep.append(j)
                    np.minimum(current, pair_h[j], out=current)
            keep_t = torch.as_tensor(keep, device=x.device)
            drawn, centres = drawn[keep_t], centres[keep_t]
        kept = drawn.shape[0]
        chosen[done : done + kept] = drawn
        available[drawn] = 0
        dist = torch.addmm(x_sq[:, None], x, centres.T, alpha=-2.0).add_(x_sq.index_select(0, drawn))
        dist = dist.amin(1).clamp_min_(0)
        d2 = dist if done == 0 else torch.minimum(d2, dist, out=d2)
        done += kept
    return chosen


def sequential_weighted_kmeans_plus_plus(x: torch.Tensor, weight: torch.Tensor, k: int,
                                         generator: torch.Generator) -> torch.Tensor:
    """Classic one-centre-at-a-time weighted k-means++ (the reference the batched seeding is
    measured against in ``benchmarks/speed.py``)."""
    return weighted_kmeans_plus_plus(x, weight, k, generator, rounds=max(1, k - 1))


def coreset_kmeans(
    x: torch.Tensor, k: int, generator: torch.Generator, iterations: int = 5,
    coreset_rows: int | None = None, gemm_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scalable k-means: weighted k-means++ and Lloyd on a lightweight coreset, then one
    chunked assignment of every row (distance products in ``gemm_dtype``, see
    :func:`assign_to_centroids`). Same returns as :func:`kmeans`."""
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= rows, got k={k} for {n} rows")
    m = coreset_size(n, k) if coreset_rows is None else min(n, coreset_rows)
    rows, weight = lightweight_coreset(x, m, generator)
    if rows.shape[0] < k:  # fewer distinct draws than clusters (tiny pools): use every row
        rows, weight = torch.arange(n, device=x.device), torch.ones(n, dtype=x.dtype, device=x.device)
    xs = x[rows]
    centroids = weighted_lloyd(xs, weight, xs[weighted_kmeans_plus_plus(xs, weight, k, generator)],
                               iterations, gemm_dtype)
    distance, assign = assign_to_centroids(x, centroids, gemm_dtype)
    return centroids, distance, assign


def weighted_lloyd(x: torch.Tensor, weight: torch.Tensor, centroids: torch.Tensor, iterations: int,
                   gemm_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``iterations`` Lloyd steps on weighted rows from ``centroids`` (not modified); an emptied
    cluster keeps its previous centre."""
    k = centroids.shape[0]
    for _ in range(iterations):
        _, assign = assign_to_centroids(x, centroids, gemm_dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x * weight[:, None])
        mass = torch.zeros(k, dtype=x.dtype, device=x.device).index_add_(0, assign, weight)
        centroids = torch.where(mass[:, None] > 0, sums / mass.clamp_min(1e-12)[:, None], centroids)
    return centroids


def k_center_greedy(pool: torch.Tensor, labeled: torch.Tensor, budget: int,
                    rng: np.random.Generator, chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """k-center greedy (Sener & Savarese, ICLR 2018, Algorithm 1): positions of ``budget`` rows of ``pool`` chosen by k-center greedy from the ``labeled`` centres.

    Distances to the labeled set are computed in chunks; each greedy step then costs one pass
    over the pool. With no labeled rows the first centre is drawn uniformly with ``rng``.
    """
    n = pool.shape[0]
    d2 = nearest_sq(pool, labeled, chunk_elements)[0]
    chosen = []
    if labeled.shape[0] == 0:
        first = torch.tensor([int(rng.integers(n))], device=pool.device)
        chosen.append(first)
        d2 = nearest_sq(pool, pool[first], chunk_elements)[0]
        d2[first] = float("-inf")
    # one (rows, dims) buffer for every step: a fresh temporary per step costs its page
    # faults on the CPU (the steps took 2 s over 1e4 rows, 1.4 s of them in the square)
    diff = torch.empty_like(pool)
    for _ in range(budget - len(chosen)):
        # argmax returns the first maximum, on every device
        nxt = d2.argmax().view(1)
        chosen.append(nxt)
        torch.sub(pool, pool[nxt], out=diff)
        d2 = torch.minimum(d2, diff.mul_(diff).sum(1))  # x * x is how torch computes x ** 2
        # a chosen row must never come back, even when the remaining rows coincide with centres
        d2[nxt] = float("-inf")
    return torch.cat(chosen)
