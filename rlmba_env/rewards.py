"""The round rewards of :class:`~rlmba_env.env.MultimodalALEnv` and the reference learning curve
behind the ``relative`` one (RL-MBA, arXiv 2603.25107).

``gain``: ``top1_t - top1_{t-1} + balance_weight * balance_t``; ``absolute``: ``top1_t``;
``relative``: ``top1_t`` minus a reference curve's top-1 at the same round, the mean of chosen
classic strategies replaying the same episode (same initial labels, same training seeds). A
curve costs one episode per reference strategy, so it is computed once per dataset,
protocol, configuration and episode seed and cached on disk as JSON under
``<data root>/reference/``. All rewards read the fused model on the ``val`` split.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rlmba_env.checks import fail
from rlmba_env.config import EnvConfig
from rlmba_env.data.cache import default_data_root

if TYPE_CHECKING:
    from rlmba_env.env import MultimodalALEnv
    from rlmba_env.round import RoundResult


def round_reward(config: EnvConfig, result: RoundResult, top1_before: float,
                 reference_top1: float | None) -> tuple[float, dict[str, float]]:
    """The reward of a closed round and its terms (``info["reward_terms"]``)."""
    if config.reward == "gain":
        terms = {"top1_gain": result.val.top1 - top1_before, "balance": result.balance,
                 "balance_weight": config.balance_weight}
        return terms["top1_gain"] + config.balance_weight * result.balance, terms
    if config.reward == "relative":
        terms = {"top1": result.val.top1, "reference_top1": reference_top1}
        return result.val.top1 - reference_top1, terms
    return result.val.top1, {"top1": result.val.top1}


def check_reference_strategies(names: tuple[str, ...]) -> None:
    """Every name of ``EnvConfig.reference_strategies`` is a registered strategy, checked when
    the env is built (not at the first reset of a ``relative`` episode)."""
    from rlmba_env.strategies import STRATEGIES

    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        fail("reference_strategies", names, f"strategy names from {sorted(STRATEGIES)} (unknown: {unknown})")


def reference_settings(env: MultimodalALEnv, episode_seed: int) -> dict:
    """Everything the reference curve depends on; its hash names the cache file."""
    cfg = env.config
    return {
        "dataset": env.dataset.name,
        "dataset_sha256": env.dataset.fingerprint(),
        "protocol": asdict(env.protocol),
        "learner": asdict(cfg.learner),
        "kappa": cfg.kappa, "beta": cfg.beta, "tau": cfg.tau, "epsilon": cfg.epsilon,
        "kmeans_iterations": cfg.kmeans_iterations,
        "strategies": list(cfg.reference_strategies),
        "episode_seed": int(episode_seed),
        # only when not the default, so that curves cached before the option existed stay valid
        **({"precision": cfg.precision} if cfg.precision != "float32" else {}),
        # q ranks the reference strategy rlmba-score (the candidate set does not matter to
        # strategies, which label from the whole pool)
        "score": cfg.score,
        "initial": cfg.initial,
        "fusion_select": cfg.fusion_select,
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


def reference_curve(env: MultimodalALEnv, episode_seed: int) -> np.ndarray:
    """Mean reference validation top-1 per round, shape (rounds + 1,), cached on disk."""
    from rlmba_env.strategies import make_strategy, run_strategy_episode

    settings = reference_settings(env, episode_seed)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]
    cache = env.config.reference_cache
    cache_dir = Path(cache) if cache else default_data_root() / "reference"
    path = cache_dir / f"{key}.json"
    if path.is_file():
        curve, problem = read_reference_curve(path, env.protocol.rounds + 1)
        if problem is None:
            return curve
        warnings.warn(f"reference cache {path} {problem}; recomputing it", stacklevel=3)

    # the same env with the gain reward (a relative reward would need this very curve)
    twin = type(env)(env.dataset, env.protocol, replace(env.config, reward="gain", render_mode=None))
    curves = [
        [r["val_top1"] for r in run_strategy_episode(twin, make_strategy(name), None, episode_seed,
                                                       options={"episode_seed": episode_seed})]
        for name in env.config.reference_strategies
    ]
    curve = np.mean(curves, axis=0)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"curve": curve.tolist(), "per_strategy": curves, "settings": settings}, indent=1))
    tmp.replace(path)
    return curve
