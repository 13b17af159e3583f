"""The reference learning curve behind the ``relative`` reward (RL-MBA, arXiv 2603.25107).

The relative reward of a round is the agent's validation top-1 minus a reference curve's at
the same round: the mean top-1 of chosen classic strategies replaying the same episode (same
initial labels, same training seeds). A curve costs one episode per reference strategy, so it
is computed once per dataset, protocol, configuration and episode seed and cached on disk as
JSON under ``<data root>/reference/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rlmba_env.data.cache import default_data_root

if TYPE_CHECKING:
    from rlmba_env.env import MultimodalALEnv


def reference_settings(env: "MultimodalALEnv", episode_seed: int) -> dict:
    """Everything the reference curve depends on; its hash names the cache file."""
    return {
        "dataset": env.dataset.name,
        "dataset_sha256": env.dataset.fingerprint(),
        "protocol": asdict(env.protocol),
        "learner": asdict(env.learner_config),
        "kappa": env.kappa, "beta": env.beta, "tau": env.tau, "epsilon": env.epsilon,
        "kmeans_iterations": env.kmeans_iterations,
        "strategies": list(env.reference_strategies),
        "episode_seed": int(episode_seed),
        # only when not the default, so that curves cached before the option existed stay valid
        **({"precision": env.precision} if env.precision != "float32" else {}),
    }


def read_reference_curve(path: Path, length: int) -> tuple[np.ndarray | None, str | None]:
    """The curve cached in ``path`` and None, or None and what is wrong with the file (not
    JSON, no ``curve``, not ``length`` top-1 values in [0, 1]): a damaged cache is recomputed,
    never turned into NaN rewards or an ``IndexError`` mid-episode."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"is unreadable ({type(e).__name__}: {e})"
    raw = data.get("curve") if isinstance(data, dict) else None
    try:
        curve = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        curve = None
    if curve is None or curve.shape != (length,):
        return None, f"holds no curve of {length} values (rounds + 1)"
    if not (np.isfinite(curve) & (curve >= 0) & (curve <= 1)).all():
        return None, "holds values outside [0, 1] (NaN or damaged)"
    return curve, None


def reference_curve(env: "MultimodalALEnv", episode_seed: int) -> np.ndarray:
    """Mean reference validation top-1 per round, shape (rounds + 1,), cached on disk."""
    from rlmba_env.env import MultimodalALEnv
    from rlmba_env.strategies import make_strategy, run_strategy_episode

    settings = reference_settings(env, episode_seed)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]
    cache_dir = Path(env.reference_cache) if env.reference_cache else default_data_root() / "reference"
    path = cache_dir / f"{key}.json"
    if path.is_file():
        curve, problem = read_reference_curve(path, env.protocol.rounds + 1)
        if problem is None:
            return curve
        warnings.warn(f"reference cache {path} {problem}; recomputing it", stacklevel=3)

    twin = MultimodalALEnv(env.dataset, env.protocol, learner=env.learner_config, reward="gain",
                           kappa=env.kappa, beta=env.beta, tau=env.tau, epsilon=env.epsilon,
                           kmeans_iterations=env.kmeans_iterations, device=env.device,
                           precision=env.precision)
    curves = [
        [r["val_top1"] for r in run_strategy_episode(twin, make_strategy(name), None, episode_seed,
                                                       options={"episode_seed": episode_seed})]
        for name in env.reference_strategies
    ]
    curve = np.mean(curves, axis=0)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"curve": curve.tolist(), "per_strategy": curves, "settings": settings}, indent=1))
    tmp.replace(path)
    return curve
