"""Evaluate selection agents x seeds on an rlmba environment: TensorBoard, CSV, summary, plot.

    python agents/evaluate.py --agents random entropy badge rlmba-score --seeds 0 1 2 3 4
    python agents/evaluate.py --agents random runs/<ppo run>/model.zip --env-id RLMBA-Synthetic-v0
    tensorboard --logdir runs/eval

An agent is a strategy name (see ``rlmba_env.strategies.STRATEGIES``) or the path of a trained
policy: an SB3 ``.zip`` (MaskablePPO) or a REINFORCE checkpoint. For a given seed every agent
starts from the same initial labeled set and the same round-0 model (the env replays its
random draws from the seed whatever rows are picked).

Everything lands under ``--out-dir`` (default ``runs/eval/<env_id>``):

- ``tb/<agent>__seed<seed>/``: TensorBoard scalars keyed by labeled-set size (``test/top1``,
  ``test/top1_<modality>``, ``contribution/<modality>``, ``balance``, ``time/select_s``) and the
  evaluation settings as text;
- ``episodes/<agent>__seed<seed>.csv``: one finished (agent, seed) pair, written atomically;
- ``results.csv`` (one row per agent, seed and round), ``summary.md`` and ``curves.png``.

The command is resumable: a rerun skips the (agent, seed) pairs whose episode file exists and
never rewrites them; it only rebuilds the merged outputs.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import tyro
from tqdm.auto import tqdm

import rlmba_env  # noqa: F401  (registers the env ids)
from rlmba_env.strategies import make_strategy, run_strategy_episode
from rlmba_env.strategies.runner import round_record
from agents.tracking import hyperparameter_table
from agents.summary import write_curves, write_summary

DEFAULT_AGENTS = ("random", "entropy", "margin", "least-confidence", "bald", "coreset", "badge",
                  "bmmal", "deepfool", "gcnal", "rlmba-score")


@dataclass
class Args:
    env_id: str = "RLMBA-AVDigits-v0"
    """Gymnasium id of the environment"""
    env_kwargs: str = "{}"
    """keyword arguments for gym.make, as JSON (e.g. '{"image_noise": 1.0}')"""
    agents: tuple[str, ...] = DEFAULT_AGENTS
    """strategy names and/or paths of trained policies (.zip for SB3, .pt for REINFORCE)"""
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    """episode seeds; each agent plays one episode per seed"""
    out_dir: str = ""
    """output folder (default runs/eval/<env_id>)"""
    device: str = "cpu"
    """torch device of the env's classifier (and of policies)"""
    bootstrap_reps: int = 2000
    """bootstrap resamples for the IQM confidence intervals"""


# -- agents -----------------------------------------------------------------------------------
@dataclass
class EvalAgent:
    """A named agent that plays one episode and returns one record per round (round 0 first)."""

    name: str
    play: Callable[[gym.Env, int], list[dict[str, Any]]]
    description: dict[str, Any] = field(default_factory=dict)


def strategy_agent(name: str) -> EvalAgent:
    strategy = make_strategy(name)

    def play(env: gym.Env, seed: int) -> list[dict[str, Any]]:
        return run_strategy_episode(env, strategy, seed, rng_seed=seed)

    return EvalAgent(name, play, {"kind": "strategy", "strategy": name})


def policy_agent(path: Path, device: str) -> EvalAgent:
    """A trained MaskablePPO policy that picks candidates one step at a time (greedy)."""
    from sb3_contrib import MaskablePPO

    model = MaskablePPO.load(path, device=device)

    def play(env: gym.Env, seed: int) -> list[dict[str, Any]]:
        base = env.unwrapped
        obs, info = env.reset(seed=seed)
        records = [round_record(info, base.modalities, 0.0)]
        terminated, select_s = False, 0.0
        while not terminated:
            start = time.perf_counter()
            action, _ = model.predict(obs, action_masks=base.action_masks(), deterministic=True)
            select_s += time.perf_counter() - start
            obs, reward, terminated, _, info = env.step(int(action))
            if info["reward_terms"]:  # the round closed
                records.append(round_record(info, base.modalities, select_s))
                select_s = 0.0
        return records

    return EvalAgent(path.stem if path.stem != "model" else path.parent.name, play,
                     {"kind": "maskable_ppo", "path": str(path)})


def load_agent(spec: str, device: str) -> EvalAgent:
    path = Path(spec)
    if path.suffix == ".zip":
        if not path.is_file():
            raise FileNotFoundError(f"agent {spec!r}: no trained policy at {path}")
        return policy_agent(path, device)
    return strategy_agent(spec)


# -- files -----------------------------------------------------------------------------------
def episode_file(out_dir: Path, agent: str, seed: int) -> Path:
    return out_dir / "episodes" / f"{agent}__seed{seed}.csv"


def write_rows_atomically(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def read_rows(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as f:
        return [{k: (v if k == "agent" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


def log_tensorboard(tb_dir: Path, rows: list[dict[str, Any]], modalities: tuple[str, ...], text: str) -> None:
    from torch.utils.tensorboard import SummaryWriter

    if tb_dir.exists():  # left by an interrupted run of this pair: its episode never finished
        shutil.rmtree(tb_dir)
    with SummaryWriter(str(tb_dir)) as writer:
        writer.add_text("hyperparameters", text)
        for row in rows:
            step = int(row["labeled"])
            writer.add_scalar("test/top1", row["test_top1"], step)
            writer.add_scalar("balance", row["balance"], step)
            writer.add_scalar("time/select_s", row["select_s"], step)
            for m in modalities:
                writer.add_scalar(f"test/top1_{m}", row[f"test_top1_{m}"], step)
                writer.add_scalar(f"contribution/{m}", row[f"contribution_{m}"], step)


# -- main -------------------------------------------------------------------------------------
def evaluate(args: Args) -> Path:
    env_kwargs = json.loads(args.env_kwargs)
    if not isinstance(env_kwargs, dict):
        raise ValueError(f"--env-kwargs must be a JSON object, got {args.env_kwargs!r}")
    env_kwargs.setdefault("device", args.device)
    out_dir = Path(args.out_dir or Path("runs") / "eval" / args.env_id)
    agents = [load_agent(spec, args.device) for spec in args.agents]
    names = [a.name for a in agents]
    if len(set(names)) != len(names):
        raise ValueError(f"agent names must be distinct, got {names}")

    env = gym.make(args.env_id, **env_kwargs)
    modalities = env.unwrapped.modalities
    todo = [(a, s) for a in agents for s in args.seeds if not episode_file(out_dir, a.name, s).is_file()]
    done = len(agents) * len(args.seeds) - len(todo)
    print(f"evaluating {len(agents)} agents x {len(args.seeds)} seeds on {args.env_id} -> {out_dir}"
          + (f" ({done} finished pairs skipped)" if done else ""))
    for agent, seed in tqdm(todo, desc="agent x seed", unit="episode"):
        rows = agent.play(env, seed)
        rows = [{"agent": agent.name, "seed": seed, **row} for row in rows]
        text = hyperparameter_table(args) + "\n\n" + json.dumps(
            {"agent": agent.description, "env": env.unwrapped.describe()}, default=str)
        log_tensorboard(out_dir / "tb" / f"{agent.name}__seed{seed}", rows, modalities, text)
        write_rows_atomically(episode_file(out_dir, agent.name, seed), rows)

    all_rows = []
    for agent in agents:
        for seed in args.seeds:
            all_rows += read_rows(episode_file(out_dir, agent.name, seed))
    write_rows_atomically(out_dir / "results.csv", all_rows)
    write_summary(out_dir / "summary.md", all_rows, names, modalities, args.env_id,
                  reps=args.bootstrap_reps)
    write_curves(out_dir / "curves.png", all_rows, names, modalities, args.env_id)
    print(f"wrote {out_dir / 'results.csv'}, {out_dir / 'summary.md'}, {out_dir / 'curves.png'}")
    print(f"TensorBoard: tensorboard --logdir {out_dir / 'tb'}")
    return out_dir


if __name__ == "__main__":
    evaluate(tyro.cli(Args))
