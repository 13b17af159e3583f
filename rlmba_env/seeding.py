"""Seeded torch randomness that leaves the caller's global RNG untouched.

Everything random in an episode derives from the env's episode seed. Draws that take a
``torch.Generator`` get one; draws that cannot (``nn.Module`` initialisation, dropout) run
inside :func:`forked_torch_rng`, where they depend on the given seed only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def forked_torch_rng(device: torch.device | str, seed: int) -> Iterator[None]:
    """Seed torch's global RNG (CPU and ``device``) inside a fork, restored on exit."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        fork = torch.random.fork_rng(devices=[index], device_type="cuda")
    else:
        fork = torch.random.fork_rng(devices=[])
    with fork:
        torch.manual_seed(int(seed))
        yield
