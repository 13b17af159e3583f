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
        "initial": env.initial,
        "fusion_subset": env.fusion_subset,
    }


def reference_curve(env: "MultimodalALEnv", episode_seed: int) -> np.ndarray:
    """Mean reference validation top-1 per round, shape (rounds + 1,), cached on disk."""
    from rlmba_env.env import MultimodalALEnv
    from rlmba_env.strategies import make_strategy, run_strategy_episode

    settings = reference_settings(env, episode_seed)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]
    cache_dir = Path(env.reference_cache) if env.reference_cache else default_data_root() / "reference"
    path = cache_dir / f"{key}.json"
    if path.is_file():
        return np.asarray(json.loads(path.read_text())["curve"], dtype=np.float64)

    twin = MultimodalALEnv(env.dataset, env.protocol, learner=env.learner_config, reward="gain",
                           kappa=env.kappa, beta=env.beta, tau=env.tau, epsilon=env.epsilon,
                           kmeans_iterations=env.kmeans_iterations, device=env.device,
                           precision=env.precision, initial=env.initial, fusion_subset=env.fusion_subset)
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
