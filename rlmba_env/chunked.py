"""Low-level tensor operations over many rows, in bounded chunks: column statistics, nearest
centres and top-k positions.

The learner (input standardisation), the selection step (k-means, candidate set) and the
classic strategies (coreset, ranking) all call these; the chunk sizes are set here once. Each
function holds at most one chunk's temporaries at a time, so a million-row pool fits in
memory on any device.
"""

from __future__ import annotations

import weakref

import torch

CHUNK_ROWS = 65536
"""rows per chunk when a pass over the features is made (statistics, projections, forwards)"""
CHUNK_ELEMENTS = 1 << 24
"""largest (rows x centres) block of distances held at once (64 MiB of float32)"""


def float_chunks(x: torch.Tensor, chunk: int = CHUNK_ROWS):
    """``(lo, block)`` for every row chunk ``x[lo : lo + chunk]``, converted to float32 in one
    buffer that every chunk reuses: the caller may change ``block`` in place, and must be done
    with it before the next. A fresh float32 chunk per pass costs its page faults on the CPU
    (four times the conversion itself for a 65,536 x 512 float16 chunk)."""
    buffer = torch.empty(min(chunk, x.shape[0]), *x.shape[1:], dtype=torch.float32, device=x.device)
    for lo in range(0, x.shape[0], chunk):
        part = x[lo : lo + chunk]
        yield lo, buffer[: part.shape[0]].copy_(part)


def column_mean(x: torch.Tensor, chunk: int = CHUNK_ROWS) -> torch.Tensor:
    """Per-column mean of ``x`` as float32: float32 chunk sums accumulated in float64."""
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for _, block in float_chunks(x, chunk):
        total += block.sum(0)
    return (total / x.shape[0]).float()


_COLUMN_STATS: dict[int, tuple[weakref.ref, int, int, tuple[torch.Tensor, torch.Tensor]]] = {}


def column_stats(x: torch.Tensor, chunk: int = CHUNK_ROWS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean and (biased) std of ``x`` as float32, in row chunks of any input dtype.

    Two passes (mean, then squared deviations); each chunk is summed in float32 and the chunk
    sums are accumulated in float64, so a million rows lose nothing; never holds more than one
    float32 chunk of ``x``. Remembered while ``x`` lives unmodified: the env's diversity
    projection and the learner's input standardisation both need the statistics of the same
    stored features (two passes of float16 conversion over a 1e5-row pool, about 0.8 s).
    """
    for key in [k for k, (ref, *_) in _COLUMN_STATS.items() if ref() is None]:
        del _COLUMN_STATS[key]
    known = _COLUMN_STATS.get(id(x))
    if known is not None and known[0]() is x and known[1:3] == (x._version, chunk):
        return tuple(t.clone() for t in known[3])
    stats = _column_stats(x, chunk)
    _COLUMN_STATS[id(x)] = (weakref.ref(x), x._version, chunk, stats)
    return tuple(t.clone() for t in stats)


def _column_stats(x: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = x.shape[0]
    mean32 = column_mean(x, chunk)
    sq = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for _, block in float_chunks(x, chunk):
        sq += block.sub_(mean32).square_().sum(0)
    return mean32, (sq / n).sqrt().float()


def nearest_sq(x: torch.Tensor, centres: torch.Tensor,
               chunk_elements: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared Euclidean distance to, and index of, the nearest row of ``centres`` for every
    row of ``x``: ``(n,)`` and ``(n,)`` (``inf`` and -1 where there are no centres).

    Computed as ``x^2 - 2 x.c + c^2`` per block, rows and centres both chunked so that no block
    exceeds ``chunk_elements`` (default :data:`CHUNK_ELEMENTS`) distances; the outputs are
    allocated once (appending per-chunk results between large temporary blocks fragments the
    CPU heap: a million rows grew the resident set by gigabytes).
    """
    chunk_elements = CHUNK_ELEMENTS if chunk_elements is None else chunk_elements
    n, c = x.shape[0], centres.shape[0]
    dist = torch.full((n,), float("inf"), device=x.device, dtype=x.dtype)
    index = torch.full((n,), -1, device=x.device, dtype=torch.long)
    if c == 0 or n == 0:
        return dist, index
    c_sq = (centres * centres).sum(1)
    c_chunk = max(1, min(c, chunk_elements))
    x_chunk = max(1, min(CHUNK_ROWS * 16, chunk_elements // c_chunk))
    # one (rows, centres) buffer for every block: a fresh 64 MiB block each costs its page faults
    buffer = torch.empty(min(x_chunk, n) * c_chunk, dtype=x.dtype, device=x.device)
    for lo in range(0, n, x_chunk):
        xb = x[lo : lo + x_chunk]
        xb_sq = (xb * xb).sum(1, keepdim=True)
        for clo in range(0, c, c_chunk):
            cb = centres[clo : clo + c_chunk]
            block = torch.mm(xb, cb.T, out=buffer[: xb.shape[0] * cb.shape[0]].view(xb.shape[0], cb.shape[0]))
            block.mul_(-2.0)
            block.add_(xb_sq).add_(c_sq[clo : clo + c_chunk]).clamp_min_(0)
            d, i = block.min(1)
            if clo == 0:
                dist[lo : lo + x_chunk], index[lo : lo + x_chunk] = d, i
            else:
                closer = d < dist[lo : lo + x_chunk]
                dist[lo : lo + x_chunk] = torch.where(closer, d, dist[lo : lo + x_chunk])
                index[lo : lo + x_chunk] = torch.where(closer, i + clo, index[lo : lo + x_chunk])
    return dist, index


def top_positions(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the ``k`` highest scores, best first (all of them when fewer); ties go to the
    lower position and NaN ranks last.

    A stable sort (not ``topk``) makes the tie-break the same on every device.
    """
    scores = torch.nan_to_num(scores.float(), nan=float("-inf"))
    return torch.sort(scores, descending=True, stable=True).indices[:k]
