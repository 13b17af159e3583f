"""Evaluate selection agents x seeds on an rlmba environment: TensorBoard, CSV, summary, plot.

    python agents/evaluate.py --agents random entropy badge rlmba-score --seeds 0 1 2 3 4
    python agents/evaluate.py --agents random ppo=runs/<ppo run>/model.zip pg=runs/<pg run>/agent.pt:online
    tensorboard --logdir runs/eval

An agent is a strategy name (see ``rlmba_env.strategies.STRATEGIES``), ``rl-mba`` (the
pretrained policy shipped in the package, greedy and frozen; ``rl-mba:online`` keeps learning
during each campaign) or a trained policy,
``[NAME=]PATH[:online]``: an SB3 ``.zip`` (MaskablePPO or PPO, from train_ppo.py) or a
REINFORCE ``.pt`` (train_pg.py), played greedy; ``:online`` lets a REINFORCE agent keep
learning during each campaign, as in the paper. For a given seed every agent
starts from the same initial labeled set and the same round-0 model (the env replays its
random draws from the seed whatever rows are picked).

Everything lands under ``--out-dir`` (default ``runs/eval/<dataset name>``):

- ``tb/<agent>__seed<seed>/``: TensorBoard scalars keyed by labeled-set size (``test/top1``,
  ``test/top1_<modality>``, ``contribution/<modality>``, ``balance``, ``time/select_s``) and the
  evaluation settings as text;
- ``episodes/<agent>__seed<seed>.csv``: one finished (agent, seed) pair, written atomically;
- ``results.csv`` (one row per agent, seed and round), ``summary.md`` and ``curves.png``,
  titled by the dataset's name;
- ``config.json``: the env id, its keyword arguments, the env's full configuration and every
  agent's spec.

The command is resumable: a rerun skips the (agent, seed) pairs whose episode file exists and
never rewrites them; it only rebuilds the merged outputs. A rerun into the same folder with
another env configuration, or another spec under an agent name already there, is refused,
so episodes of different settings are never merged. ``agents/benchmark.py`` runs the same
episodes over many datasets in parallel.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import tyro
from tqdm.auto import tqdm

import rlmba_env  # noqa: F401  (registers the env ids)
from rlmba_env.strategies import make_strategy, run_strategy_episode
from agents.envs import set_torch_threads
from agents.tracking import hyperparameter_table
from agents.summary import write_curves, write_summary

PRETRAINED = "rl-mba"
"""agent name of the pretrained policy shipped in the package (:mod:`agents.pretrained`)"""
DEFAULT_AGENTS = ("random", "entropy", "margin", "least-confidence", "bald", "coreset", "badge",
                  "bmmal", "deepfool", "gcnal", "rlmba-score")


@dataclass
class Args:
    env_id: str = "RLMBA-AVDigits-v0"
    """Gymnasium id of the environment"""
    env_kwargs: str = "{}"
    """keyword arguments for gym.make, as JSON (e.g. '{"image_noise": 1.0}')"""
    agents: tuple[str, ...] = DEFAULT_AGENTS
    """strategy names and/or trained policies as [NAME=]PATH[:online] (.zip SB3, .pt REINFORCE)"""
    seeds: tuple[int, ...] = (20000, 20001, 20002, 20003, 20004)
    """episode seeds; each agent plays one episode per seed (the defaults are used by no training
    script: train_ppo.py/train_pg.py train from --seed 1 and evaluate during training on 10000+)"""
    out_dir: str = ""
    """output folder (default runs/eval/<dataset name>)"""
    device: str = "cpu"
    """torch device of the env's classifier (and of policies)"""
    torch_threads: int = 1
    """torch threads of this process (0: torch's default); the classifier fits are small, so one
    thread is fastest on a small busy machine (README, Speed)"""
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


def policy_agent(name: str, path: Path, device: str, online: bool) -> EvalAgent:
    """A trained policy (SB3 ``.zip`` or REINFORCE ``.pt``, or :data:`PRETRAINED`, the shipped
    policy, its hash checked), greedy; a REINFORCE agent marked ``:online`` instead keeps
    learning during each campaign, a fresh copy per seed (the paper's online setting)."""
    from agents.pretrained import POLICY_FILE, load_pretrained
    from agents.transfer import load_policy, transfer

    if str(path) == PRETRAINED:
        policy, path = load_pretrained(device), POLICY_FILE
    else:
        policy = load_policy(path, device)

    def play(env: gym.Env, seed: int) -> list[dict[str, Any]]:
        return transfer(policy, env, [seed], online=online)[0].rows

    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    return EvalAgent(name, play, {"kind": type(policy).__name__, "path": str(path), "sha256": sha256,
                                  "online": online})


def load_agent(spec: str, device: str) -> EvalAgent:
    """``NAME=PATH[:online]`` or ``PATH[:online]`` for a trained policy, ``rl-mba[:online]`` for
    the shipped one, else a strategy name."""
    name, _, target = spec.rpartition("=") if "=" in spec else ("", "", spec)
    target, online = (target[: -len(":online")], True) if target.endswith(":online") else (target, False)
    if target == PRETRAINED:
        return policy_agent(name or spec, Path(PRETRAINED), device, online)
    path = Path(target)
    if path.suffix in (".zip", ".pt"):
        if not path.is_file():
            raise FileNotFoundError(f"agent {spec!r}: no trained policy at {path}")
        default = path.parent.name if path.stem in ("model", "agent") else path.stem
        return policy_agent(name or default + (":online" if online else ""), path, device, online)
    if name:
        raise ValueError(f"agent {spec!r}: NAME=PATH needs a .zip or .pt policy file")
    return strategy_agent(target)


def check_distinct(what: str, values: list) -> None:
    """One clear error when a list of agent names or seeds repeats a value."""
    repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
    if repeated:
        raise ValueError(f"{what} must be distinct, got {list(values)} ({', '.join(map(str, repeated))} repeated)")


def episode_rows(agent: EvalAgent, env: gym.Env, seed: int) -> list[dict[str, Any]]:
    """One episode's rows, each tagged with the agent's name and the seed."""
    return [{"agent": agent.name, "seed": seed, **row} for row in agent.play(env, seed)]


# -- files -----------------------------------------------------------------------------------
CONFIG_FILE = "config.json"
INT_COLUMNS = ("seed", "round", "labeled")
"""Columns read back as integers; ``agent`` stays text and every other column is a float."""


def run_config(env_id: str, env_kwargs: dict[str, Any], env: gym.Env, agents: list[EvalAgent]) -> dict[str, Any]:
    """What the episodes of one results folder depend on, as JSON-compatible values."""
    config = {"env_id": env_id, "env_kwargs": env_kwargs, "env": env.unwrapped.describe(),
              "agents": {a.name: a.description for a in agents}}
    return json.loads(json.dumps(config, default=str))


def record_config(out_dir: Path, config: dict[str, Any]) -> None:
    """Write ``config.json``, or check a rerun against the one there and add its new agents.

    Raises ``ValueError`` naming every difference when the env configuration differs or an
    agent name already in the folder now stands for another spec: the folder's episodes would
    otherwise mix two settings.
    """
    path = out_dir / CONFIG_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        diffs = [f"{key}: {json.dumps(old.get(key))} -> {json.dumps(config[key])}"
                 for key in ("env_id", "env_kwargs", "env") if old.get(key) != config[key]]
        diffs += [f"agent {name!r}: {json.dumps(old['agents'][name])} -> {json.dumps(spec)}"
                  for name, spec in config["agents"].items()
                  if name in old.get("agents", {}) and old["agents"][name] != spec]
        if diffs:
            raise ValueError(f"{out_dir} holds episodes of another configuration ({path}); use another "
                             f"output folder, or rerun with the recorded settings. Differences (recorded -> "
                             f"now): " + "; ".join(diffs))
        config = dict(config, agents={**old["agents"], **config["agents"]})
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(config, indent=1) + "\n")
    tmp.replace(path)


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
        return [{k: v if k == "agent" else int(v) if k in INT_COLUMNS else float(v) for k, v in row.items()}
                for row in csv.DictReader(f)]


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
                if f"fused_{m}" in row:  # 1 while m is in the fused opinion's subset
                    writer.add_scalar(f"fusion/{m}", row[f"fused_{m}"], step)


# -- main -------------------------------------------------------------------------------------
def evaluate(args: Args) -> Path:
    set_torch_threads(args.torch_threads)
    check_distinct("--seeds", list(args.seeds))
    env_kwargs = json.loads(args.env_kwargs)
    if not isinstance(env_kwargs, dict):
        raise ValueError(f"--env-kwargs must be a JSON object, got {args.env_kwargs!r}")
    env_kwargs.setdefault("device", args.device)
    agents = [load_agent(spec, args.device) for spec in args.agents]
    names = [a.name for a in agents]
    check_distinct("agent names", names)

    env = gym.make(args.env_id, **env_kwargs)
    modalities = env.unwrapped.modalities
    dataset = env.unwrapped.dataset.name
    out_dir = Path(args.out_dir or Path("runs") / "eval" / dataset)
    record_config(out_dir, run_config(args.env_id, env_kwargs, env, agents))
    todo = [(a, s) for a in agents for s in args.seeds if not episode_file(out_dir, a.name, s).is_file()]
    done = len(agents) * len(args.seeds) - len(todo)
    print(f"evaluating {len(agents)} agents x {len(args.seeds)} seeds on {dataset} ({args.env_id}) -> {out_dir}"
          + (f" ({done} finished pairs skipped)" if done else ""))
    rounds = env.unwrapped.protocol.rounds
    for agent, seed in tqdm(todo, desc="agent x seed", unit="episode", disable=not todo):
        with tqdm(total=rounds, desc=f"{agent.name} seed {seed}", unit="round", leave=False) as bar:
            env.unwrapped.round_callbacks.append(lambda info: bar.update())
            try:
                rows = episode_rows(agent, env, seed)
            finally:
                env.unwrapped.round_callbacks.pop()
        text = hyperparameter_table(args) + "\n\n" + json.dumps(
            {"agent": agent.description, "env": env.unwrapped.describe()}, default=str)
        log_tensorboard(out_dir / "tb" / f"{agent.name}__seed{seed}", rows, modalities, text)
        write_rows_atomically(episode_file(out_dir, agent.name, seed), rows)

    all_rows = []
    for agent in agents:
        for seed in args.seeds:
            all_rows += read_rows(episode_file(out_dir, agent.name, seed))
    write_rows_atomically(out_dir / "results.csv", all_rows)
    write_summary(out_dir / "summary.md", all_rows, names, modalities, dataset, reps=args.bootstrap_reps)
    write_curves(out_dir / "curves.png", all_rows, names, modalities, dataset)
    print(f"wrote {out_dir / 'results.csv'}, {out_dir / 'summary.md'}, {out_dir / 'curves.png'}")
    print(f"TensorBoard: tensorboard --logdir {out_dir / 'tb'}")
    return out_dir


if __name__ == "__main__":
    evaluate(tyro.cli(Args))
