"""Benchmark agents across datasets: datasets x agents x seeds, on every core or a Ray cluster.

    rlmba benchmark                                             # the dev suite + AV-Digits, every strategy, 5 seeds
    rlmba benchmark --datasets webkb msrc --agents random margin badge --seeds 0 1 2
    rlmba benchmark --datasets mydata=/data/cache RLMBA-AVDigits-v0 --protocols protocols.yaml
    rlmba benchmark --ray local                                 # the same tasks as Ray remote functions
    rlmba benchmark --ray ray://head:10001                      # ... on a running Ray cluster

Every episode (dataset, agent, seed) is one task: played by ``agents.evaluate``'s agents on a
worker, either a local process pool (``--workers auto`` = the cores this process may use, one
torch thread each, started with ``spawn``) or Ray remote functions declaring ``num_cpus=1``
(``--ray ADDRESS``, or ``--ray local`` to start Ray on this machine; ``pip install -e .[ray]``).
Each episode is seeded by its seed alone, so both give the same ``results.csv`` bit for bit.

A dataset is, in this order of lookup (``NAME=SPEC`` names its folder, else the dataset's name):

- a folder ``SPEC`` under ``--datasets-dir`` holding a feature cache (the development-suite
  layout: one cache folder per dataset, and optionally ``index.json`` listing each dataset's
  ``protocol``, as ``rlmba_env/data/devsuite`` does);
- a development-suite name (``rlmba_env.data.suite.suite_names()``), with its protocol;
- a registered env id (``RLMBA-AVDigits-v0``), with its own protocol;
- a feature-cache path (``RLMBA-Features-v0``).

The protocol of a dataset is, by precedence, ``--initial-labels/--per-round/--rounds``, then its
entry in the ``--protocols`` YAML file (``NAME: {initial_labels: 20, per_round: 10, rounds: 10}``),
then the ``--datasets-dir`` ``index.json`` entry, then the dataset's own.

Outputs under ``--out-dir``: one folder per dataset named by the dataset, laid out as
``agents/evaluate.py`` lays out its folder (``config.json``, ``episodes/``, ``tb/<agent>__seed<seed>``,
``results.csv``, ``summary.md``, ``curves.png``), and, across datasets, ``leaderboard.md``,
``leaderboard.csv`` and ``curves.png`` (see ``agents.leaderboard``), and ``timings.csv``, one line
per episode played (dataset, agent, seed, worker seconds, appended as they finish). Workers return their rows
and this process writes every file, so a cluster's nodes need no shared disk for the outputs;
they do need the datasets at the same paths. Resumable: a finished (dataset, agent, seed) has an
episode file, written atomically, and is never recomputed or rewritten; a killed run loses only
the episodes in flight. A rerun with another configuration for a dataset folder is refused.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import gymnasium as gym
import tyro
import yaml
from tqdm.auto import tqdm

import agents
import rlmba_env  # noqa: F401  (registers the env ids)
from rlmba_env.data.cache import is_cache
from rlmba_env.data.suite import suite_names
from rlmba_env.registration import PROTOCOL_FIELDS
from agents.envs import set_torch_threads
from agents.evaluate import (DEFAULT_AGENTS, EvalAgent, check_distinct, episode_file, episode_rows, load_agent,
                             log_tensorboard, read_rows, record_config, run_config, write_rows_atomically)
from agents.leaderboard import write_leaderboard
from agents.summary import write_curves, write_summary
from agents.tracking import hyperparameter_table

DEFAULT_DATASETS = (*suite_names(), "RLMBA-AVDigits-v0")


@dataclass
class Args:
    datasets: tuple[str, ...] = DEFAULT_DATASETS
    """datasets as [NAME=]SPEC: a folder under --datasets-dir, a dev-suite name, a registered env id,
    or a feature-cache path (default: the nine dev-suite datasets and AV-Digits)"""
    datasets_dir: str = ""
    """a folder of feature caches, one per dataset (the dev-suite layout, optional index.json of protocols)"""
    protocols: str = ""
    """YAML file mapping dataset names to protocol fields (initial_labels, per_round, rounds)"""
    initial_labels: int | None = None
    """initial labels of every dataset (overrides the protocols)"""
    per_round: int | None = None
    """labels bought per round on every dataset (overrides the protocols)"""
    rounds: int | None = None
    """rounds of every dataset (overrides the protocols)"""
    env_kwargs: str = "{}"
    """keyword arguments for gym.make of every dataset, as JSON (e.g. '{"precision": "bfloat16"}')"""
    agents: tuple[str, ...] = DEFAULT_AGENTS
    """strategy names and/or trained policies as [NAME=]PATH[:online] (.zip SB3, .pt REINFORCE)"""
    seeds: tuple[int, ...] = (20000, 20001, 20002, 20003, 20004)
    """episode seeds; each agent plays one episode per seed on every dataset"""
    out_dir: str = "runs/benchmark"
    """output folder: one subfolder per dataset, and the leaderboard"""
    workers: str = "auto"
    """parallel episodes: a count, or auto = the CPU cores this process may use"""
    ray: str = ""
    """run the episodes on Ray instead: a cluster address (ray.init(address=...)), or local"""
    torch_threads: int = 1
    """torch threads of each worker and of this process (0: torch's default); one is fastest for
    the small classifier fits, and workers x threads should not exceed the cores"""
    device: str = "cpu"
    """torch device of the env's classifier (and of policies)"""
    compare_to: str = "margin"
    """the agent every other one is compared with (probability of improvement)"""
    baseline: str = "random"
    """the agent that scores 0 in the normalised AULC (the best agent of a dataset scores 1)"""
    bootstrap_reps: int = 2000
    """bootstrap resamples for the confidence intervals"""
    progress: bool = True
    """show a progress bar over all episodes"""


# -- datasets ---------------------------------------------------------------------------------
@dataclass
class Dataset:
    """One dataset of the benchmark: its folder name and how workers build its env."""

    name: str
    env_id: str
    env_kwargs: dict[str, Any]
    env: gym.Env = field(repr=False)
    """the env, built once here to check the configuration and record it"""

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.env.unwrapped.modalities)


def read_protocols(path: str | Path) -> dict[str, dict[str, int]]:
    """``--protocols`` YAML: ``{dataset name: {protocol field: value}}``, checked field by field."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of dataset names to protocols, got {type(data).__name__}")
    for name, entry in data.items():
        unknown = set(entry or {}) - set(PROTOCOL_FIELDS) if isinstance(entry, dict) else None
        if unknown is None or unknown:
            raise ValueError(f"{path}: dataset {name!r}: expected a mapping with keys among "
                             f"{', '.join(PROTOCOL_FIELDS)}, got {entry!r}")
    return {str(k): dict(v or {}) for k, v in data.items()}


def resolve_dataset(spec: str, datasets_dir: str) -> tuple[str | None, str, dict[str, Any], dict[str, int]]:
    """``[NAME=]SPEC`` -> (folder name or None for the dataset's own, env id, env kwargs, protocol)."""
    name, _, target = spec.partition("=") if "=" in spec else (None, "", spec)
    if datasets_dir:
        root = Path(datasets_dir).expanduser()
        if is_cache(root / target):
            index = root / "index.json"
            entries = {e["name"]: e for e in json.loads(index.read_text())} if index.is_file() else {}
            return name or target, "RLMBA-Features-v0", {"path": str((root / target).resolve())}, \
                dict(entries.get(target, {}).get("protocol", {}))
    if target in suite_names():
        return name or target, "RLMBA-DevSuite-v0", {"name": target}, {}
    if target in gym.registry:
        return name, target, {}, {}
    if is_cache(Path(target).expanduser()):
        path = Path(target).expanduser().resolve()
        return name or path.name, "RLMBA-Features-v0", {"path": str(path)}, {}
    where = f"a folder under --datasets-dir {datasets_dir}, " if datasets_dir else ""
    raise ValueError(f"dataset {spec!r} is not {where}a development-suite name ({', '.join(suite_names())}), "
                     f"a registered env id (e.g. RLMBA-AVDigits-v0) or a feature-cache folder")


def resolve_datasets(args: Args) -> list[Dataset]:
    """Every ``--datasets`` entry with its env kwargs and protocol; builds each env once to check it."""
    protocols = read_protocols(args.protocols) if args.protocols else {}
    cli_protocol = {k: getattr(args, k) for k in PROTOCOL_FIELDS if getattr(args, k) is not None}
    common = json.loads(args.env_kwargs)
    if not isinstance(common, dict):
        raise ValueError(f"--env-kwargs must be a JSON object, got {args.env_kwargs!r}")
    if set(common) & set(PROTOCOL_FIELDS):
        raise ValueError(f"--env-kwargs {args.env_kwargs}: give the protocol with --initial-labels, --per-round, "
                         f"--rounds or --protocols, not in --env-kwargs")
    common.setdefault("device", args.device)
    datasets = []
    for spec in args.datasets:
        name, env_id, kwargs, protocol = resolve_dataset(spec, args.datasets_dir)
        env = None
        if name is None:  # a registered env id: its dataset names the folder
            env = gym.make(env_id, **common, **kwargs, **cli_protocol)
            name = env.unwrapped.dataset.name
        protocol = {**protocol, **protocols.get(name, {}), **cli_protocol}
        if env is None or name in protocols:
            env = gym.make(env_id, **common, **kwargs, **protocol)
        datasets.append(Dataset(name, env_id, {**common, **kwargs, **protocol}, env))
    check_distinct("dataset names (name them NAME=SPEC)", [d.name for d in datasets])
    return datasets


# -- one episode, on a worker -------------------------------------------------------------------
@dataclass(frozen=True)
class Episode:
    """One task: everything a worker needs to play ``agent`` on ``dataset`` with ``seed``."""

    dataset: str
    env_id: str
    env_kwargs_json: str
    agent_spec: str
    agent_name: str
    seed: int
    device: str
    torch_threads: int


_ENVS: dict[tuple[str, str], gym.Env] = {}
_AGENTS: dict[tuple[str, str], EvalAgent] = {}


def run_episode(task: Episode) -> tuple[Episode, list[dict[str, Any]], float]:
    """Play one episode (the worker's env and agent are built once and reused: an episode is
    seeded by its seed alone); returns the task, its rows and its wall-clock seconds."""
    set_torch_threads(task.torch_threads)
    start = time.perf_counter()
    key = (task.env_id, task.env_kwargs_json)
    if key not in _ENVS:
        _ENVS[key] = gym.make(task.env_id, **json.loads(task.env_kwargs_json))
    if (task.agent_spec, task.device) not in _AGENTS:
        _AGENTS[task.agent_spec, task.device] = load_agent(task.agent_spec, task.device)
    agent = replace(_AGENTS[task.agent_spec, task.device], name=task.agent_name)
    rows = episode_rows(agent, _ENVS[key], task.seed)
    return task, rows, time.perf_counter() - start




# -- running the tasks ---------------------------------------------------------------------------
def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parse_workers(text: str) -> int:
    if text == "auto":
        return usable_cores()
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"--workers must be a positive count or auto, got {text!r}")
    return int(text)


def run_local(tasks: list[Episode], workers: int, torch_threads: int):
    """Yield ``run_episode`` results as they finish: in this process for one worker, else on a
    spawn-started process pool (fork would copy this process's torch thread pool state)."""
    if workers == 1:
        yield from map(run_episode, tasks)
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=set_torch_threads,
                             initargs=(torch_threads,)) as pool:
        pending = {pool.submit(run_episode, t) for t in tasks}
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield future.result()
        finally:  # a failed episode or an interrupt: do not wait for the queued ones
            for future in pending:
                future.cancel()


def run_ray(tasks: list[Episode], address: str, workers: int, torch_threads: int):
    """Yield ``run_episode`` results from Ray remote functions that declare one CPU each."""
    try:
        import ray
    except ImportError:
        raise ImportError("--ray needs Ray: pip install -e .[ray]  (or pip install 'ray[default]')") from None
    started = not ray.is_initialized()
    if started:
        env_vars = {"OMP_NUM_THREADS": str(torch_threads)} if torch_threads > 0 else {}
        if address == "local":
            # Ray's workers do not inherit this process's sys.path: give them the packages it imported.
            roots = {str(Path(m.__file__).resolve().parents[1]) for m in (rlmba_env, agents)}
            env_vars["PYTHONPATH"] = os.pathsep.join(filter(None, [*sorted(roots), os.environ.get("PYTHONPATH")]))
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": env_vars})
        else:
            ray.init(address=address, runtime_env={"env_vars": env_vars})
    try:
        remote = ray.remote(num_cpus=1)(run_episode)
        pending = [remote.remote(t) for t in tasks]
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            yield ray.get(finished[0])
    finally:
        if started:
            ray.shutdown()


def log_timing(path: Path, task: Episode, seconds: float) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["dataset", "agent", "seed", "seconds"])
        writer.writerow([task.dataset, task.agent_name, task.seed, f"{seconds:.3f}"])


# -- main -------------------------------------------------------------------------------------
def benchmark(args: Args) -> Path:
    """Run (or resume) the benchmark and write every dataset's outputs and the leaderboard."""
    set_torch_threads(args.torch_threads)
    workers = parse_workers(args.workers)
    check_distinct("--seeds", list(args.seeds))
    agents = [load_agent(spec, args.device) for spec in args.agents]
    names = [a.name for a in agents]
    check_distinct("agent names", names)
    for option, agent in (("--baseline", args.baseline), ("--compare-to", args.compare_to)):
        if agent not in names:
            raise ValueError(f"{option} {agent!r} is not among the agents {names}; add it to --agents")
    datasets = resolve_datasets(args)
    out = Path(args.out_dir)
    for d in datasets:
        record_config(out / d.name, run_config(d.env_id, d.env_kwargs, d.env, agents))

    tasks = [Episode(d.name, d.env_id, json.dumps(d.env_kwargs, sort_keys=True), spec, agent.name, seed,
                     args.device, args.torch_threads)
             for d in datasets for spec, agent in zip(args.agents, agents) for seed in args.seeds
             if not episode_file(out / d.name, agent.name, seed).is_file()]
    total = len(datasets) * len(agents) * len(args.seeds)
    pool = min(workers, max(len(tasks), 1))
    backend = f"Ray ({args.ray})" if args.ray else "this process" if pool == 1 else f"{pool} worker processes"
    print(f"benchmark: {len(datasets)} datasets x {len(agents)} agents x {len(args.seeds)} seeds = {total} "
          f"episodes -> {out}; {total - len(tasks)} finished, {len(tasks)} to run in {backend}")
    by_name = {d.name: d for d in datasets}
    text = hyperparameter_table(args)
    results = run_ray(tasks, args.ray, workers, args.torch_threads) if args.ray else \
        run_local(tasks, pool, args.torch_threads)
    start = time.perf_counter()
    with tqdm(total=total, initial=total - len(tasks), desc="episodes", unit="episode",
              disable=not args.progress) as bar:
        try:
            for task, rows, seconds in results:
                d = by_name[task.dataset]
                description = json.dumps({"dataset": d.name, "env_id": d.env_id, "env_kwargs": d.env_kwargs,
                                          "agent": task.agent_spec, "seed": task.seed, "seconds": seconds})
                log_tensorboard(out / d.name / "tb" / f"{task.agent_name}__seed{task.seed}", rows, d.modalities,
                                text + "\n\n" + description)
                write_rows_atomically(episode_file(out / d.name, task.agent_name, task.seed), rows)
                log_timing(out / "timings.csv", task, seconds)
                bar.update()
        except BrokenProcessPool as e:
            left = sum(not episode_file(out / t.dataset, t.agent_name, t.seed).is_file() for t in tasks)
            raise RuntimeError(f"a worker process died ({e}); {total - left} of {total} episodes are saved "
                               f"in {out}; rerun the same command to play the other {left}") from None
    if tasks:
        seconds = time.perf_counter() - start
        print(f"played {len(tasks)} episodes in {seconds:.0f} s ({3600 * len(tasks) / seconds:.0f} episodes/hour)")

    all_rows = {}
    for d in datasets:
        rows = [r for name in names for seed in args.seeds for r in read_rows(episode_file(out / d.name, name, seed))]
        write_rows_atomically(out / d.name / "results.csv", rows)
        write_summary(out / d.name / "summary.md", rows, names, d.modalities, d.name, reps=args.bootstrap_reps)
        write_curves(out / d.name / "curves.png", rows, names, d.modalities, d.name)
        all_rows[d.name] = rows
    write_leaderboard(out, all_rows, names, baseline=args.baseline, compare_to=args.compare_to,
                      reps=args.bootstrap_reps)
    print(f"wrote {out / 'leaderboard.md'}, {out / 'leaderboard.csv'}, {out / 'curves.png'} and, per dataset, "
          f"results.csv, summary.md, curves.png")
    print(f"TensorBoard: tensorboard --logdir {out}")
    return out


def main(argv: list[str] | None = None, prog: str = "benchmark.py") -> int:
    """Command-line entry: parse ``Args``, run, and turn a refused input or a dead worker into one
    error line and exit status 1."""
    args = tyro.cli(Args, args=argv, prog=prog)
    try:
        benchmark(args)
    except (ValueError, RuntimeError, FileNotFoundError, ImportError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
