"""Pieces shared by the selection strategies: budget checks, ranking, seeding, embeddings.

Every strategy returns dataset rows (not pool positions) as a numpy int64 array, draws all its
randomness from the ``np.random.Generator`` it is given (torch draws come from a seed taken from
it, inside a forked RNG so the caller's global torch RNG is untouched), and does its heavy work
on the pool state's device in row chunks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from rlmba_env.chunked import CHUNK_ROWS
from rlmba_env.learner.model import MultimodalEvidentialNet
from rlmba_env.round import PoolState



def check_budget(state: PoolState, budget: int) -> int:
    """``budget`` as an int, or ValueError if it is below 1 or above the unlabeled rows left."""
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"budget must be an integer, got {budget!r}")
    n = int(state.unlabeled.shape[0])
    if budget < 1:
        raise ValueError(f"budget must be at least 1, got {budget}")
    if budget > n:
        raise ValueError(f"budget {budget} is larger than the {n} unlabeled rows left in the pool")
    return int(budget)


def to_rows(state: PoolState, positions: Tensor | np.ndarray) -> np.ndarray:
    """Dataset rows of pool ``positions`` (indices into ``state.unlabeled``), as numpy int64."""
    positions = torch.as_tensor(positions, dtype=torch.long, device=state.unlabeled.device)
    return state.unlabeled[positions].cpu().numpy().astype(np.int64)


def draw_seed(rng: np.random.Generator) -> int:
    """A torch seed drawn from ``rng`` (one draw, so the caller's stream advances predictably)."""
    return int(rng.integers(0, 2**63 - 1))


def torch_generator(rng: np.random.Generator, device: torch.device | str) -> torch.Generator:
    """A torch generator on ``device`` seeded from ``rng``."""
    return torch.Generator(device=device).manual_seed(draw_seed(rng))


@contextlib.contextmanager
def module_mode(net: torch.nn.Module, training: bool) -> Iterator[torch.nn.Module]:
    """Put ``net`` in train (``True``) or eval mode for the block, then restore its mode."""
    was_training = net.training
    net.train(training)
    try:
        yield net
    finally:
        net.train(was_training)


def gather_features(state: PoolState, rows: Tensor) -> dict[str, Tensor]:
    """Float features of dataset ``rows`` for every modality."""
    return {m: state.features[m][rows].float() for m in state.modalities}


@torch.no_grad()
def embeddings(net: MultimodalEvidentialNet, state: PoolState, rows: Tensor,
               chunk: int = CHUNK_ROWS) -> list[Tensor]:
    """Per-modality hidden embeddings ``[(n, hidden)] * M`` of dataset ``rows``, dropout off."""
    blocks: list[list[Tensor]] = [[] for _ in net.modalities]
    with module_mode(net, False):
        for lo in range(0, rows.shape[0], chunk):
            out = net.embed(gather_features(state, rows[lo : lo + chunk]))
            for i, m in enumerate(net.modalities):
                blocks[i].append(out[m])
    if rows.shape[0] == 0:
        hidden = net.heads[0].in_features
        return [torch.empty(0, hidden, device=rows.device) for _ in net.modalities]
    return [torch.cat(b) for b in blocks]


def entropy(p: Tensor) -> Tensor:
    """Shannon entropy (nats) over the last axis; ``0 log 0 = 0``."""
    return -(p * torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))).sum(-1)
