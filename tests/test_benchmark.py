"""agents/benchmark.py and agents/leaderboard.py: two tiny datasets x two agents x two seeds."""

import csv
import json
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from agents.benchmark import Args, benchmark
from rlmba_env.data.synthetic import make_synthetic

TINY_LEARNER = json.dumps({"learner": {"epochs": 10, "hidden": 8}})
DATASETS = ("tiny_a", "tiny_b")


@pytest.fixture(scope="module")
def datasets_dir(tmp_path_factory):
    """Two feature caches in the development-suite layout, protocols in index.json."""
    root = tmp_path_factory.mktemp("datasets")
    for i, name in enumerate(DATASETS):
        make_synthetic(n_samples=240, n_classes=3, dims=(6, 4), val_per_class=5, seed=i).save(root / name)
    protocol = {"initial_labels": 6, "per_round": 3, "rounds": 2}
    (root / "index.json").write_text(json.dumps([{"name": n, "protocol": protocol} for n in DATASETS]))
    return root


def _args(datasets_dir, out_dir, **kw):
    base = dict(datasets=DATASETS, datasets_dir=str(datasets_dir), agents=("random", "margin"), seeds=(0, 1),
                env_kwargs=TINY_LEARNER, out_dir=str(out_dir), workers="2", compare_to="margin",
                bootstrap_reps=100, progress=False)
    return Args(**{**base, **kw})


@pytest.fixture(scope="module")
def grid(datasets_dir, tmp_path_factory):
    """The grid played once on a pool of 2 worker processes."""
    return benchmark(_args(datasets_dir, tmp_path_factory.mktemp("grid")))


def _results(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _metrics(path):
    """results.csv without the wall-clock column: what must not depend on where an episode ran."""
    return [{k: v for k, v in row.items() if k != "select_s"} for row in _results(path)]


def test_benchmark_writes_a_folder_per_dataset_and_the_leaderboard(grid):
    for name in DATASETS:
        folder = grid / name
        rows = _results(folder / "results.csv")
        assert len(rows) == 2 * 2 * 3  # agents x seeds x (round 0 + 2 rounds)
        assert {r["round"] for r in rows} == {"0", "1", "2"} and {r["seed"] for r in rows} == {"0", "1"}
        assert (folder / "summary.md").read_text().startswith(f"# {name}: ")
        assert (folder / "curves.png").stat().st_size > 10_000
        assert sorted(p.name for p in (folder / "tb").iterdir()) == [
            "margin__seed0", "margin__seed1", "random__seed0", "random__seed1"]
    assert (grid / "leaderboard.md").read_text().startswith("# Leaderboard: 2 datasets x 2 agents x 2 seeds")
    assert (grid / "curves.png").stat().st_size > 10_000


def test_leaderboard_matches_a_hand_computation_from_results_csv(grid):
    aulc = {}  # (dataset, agent) -> per-seed AULC
    final = {}
    for name in DATASETS:
        for agent in ("random", "margin"):
            for seed in ("0", "1"):
                rows = sorted((int(r["labeled"]), float(r["test_top1"])) for r in _results(grid / name / "results.csv")
                              if r["agent"] == agent and r["seed"] == seed)
                x, y = np.array(rows).T
                area = sum((x[i + 1] - x[i]) * (y[i] + y[i + 1]) / 2 for i in range(len(x) - 1)) / (x[-1] - x[0])
                aulc.setdefault((name, agent), []).append(area)
                final.setdefault((name, agent), []).append(y[-1])
    board = {r["agent"]: r for r in _results(grid / "leaderboard.csv")}
    ranks = {"random": [], "margin": []}
    for name in DATASETS:
        means = {a: np.mean(aulc[name, a]) for a in ranks}
        for a in ranks:
            assert float(board[a][f"{name}/aulc_mean"]) == pytest.approx(means[a], abs=1e-12)
            assert float(board[a][f"{name}/aulc_std"]) == pytest.approx(np.std(aulc[name, a]), abs=1e-12)
            assert float(board[a][f"{name}/final_top1_mean"]) == pytest.approx(np.mean(final[name, a]), abs=1e-12)
            better = sum(means[b] > means[a] for b in ranks)
            ties = sum(means[b] == means[a] for b in ranks)
            ranks[a].append(better + (ties + 1) / 2)
        span = max(means.values()) - means["random"]
        for a in ranks:
            expected = (means[a] - means["random"]) / span if span > 1e-6 else float("nan")
            assert float(board[a][f"{name}/norm_aulc_mean"]) == pytest.approx(expected, abs=1e-9, nan_ok=True)
    for a in ranks:
        assert float(board[a]["mean_rank"]) == pytest.approx(np.mean(ranks[a]))
    x, y = np.array([aulc[n, "random"] for n in DATASETS]).T, np.array([aulc[n, "margin"] for n in DATASETS]).T
    pairs = [np.mean([(xi > yj) + 0.5 * (xi == yj) for xi in x[:, t] for yj in y[:, t]]) for t in range(2)]
    assert float(board["random"]["p_improve_margin"]) == pytest.approx(np.mean(pairs))


def test_probability_of_improvement_equals_rliables():
    from rliable import metrics

    from agents.leaderboard import probability_of_improvement

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, size=(5, 3)) / 4, rng.integers(0, 4, size=(4, 3)) / 4  # with ties
    assert probability_of_improvement(x, y) == pytest.approx(metrics.probability_of_improvement(x, y))
    assert probability_of_improvement(x, x) == 0.5


def test_leaderboard_intervals_are_the_same_on_every_rebuild(grid):
    from agents.evaluate import read_rows
    from agents.leaderboard import leaderboard

    rows = {n: read_rows(grid / n / "results.csv") for n in DATASETS}
    first = leaderboard(rows, ["random", "margin"], reps=100)
    second = leaderboard(rows, ["random", "margin"], reps=100)
    assert first["iqm"] == second["iqm"] and first["poi"] == second["poi"]


def test_rerun_recomputes_and_rewrites_nothing(grid, datasets_dir):
    episodes = sorted(grid.glob("*/episodes/*.csv"))
    before = {p: p.stat().st_mtime_ns for p in episodes}
    benchmark(_args(datasets_dir, grid, workers="1"))
    assert {p: p.stat().st_mtime_ns for p in grid.glob("*/episodes/*.csv")} == before


def test_rerun_with_another_configuration_is_refused(grid, datasets_dir):
    with pytest.raises(ValueError, match="another configuration.*rounds"):
        benchmark(_args(datasets_dir, grid, rounds=3))


def test_protocol_comes_from_yaml_then_the_command_line(datasets_dir, tmp_path):
    from agents.benchmark import resolve_datasets

    protocols = tmp_path / "protocols.yaml"
    protocols.write_text(yaml.safe_dump({"tiny_b": {"rounds": 4}}))
    got = {d.name: d.env.unwrapped.protocol for d in resolve_datasets(_args(datasets_dir, tmp_path,
                                                                            protocols=str(protocols)))}
    assert (got["tiny_a"].rounds, got["tiny_b"].rounds, got["tiny_b"].per_round) == (2, 4, 3)
    got = resolve_datasets(_args(datasets_dir, tmp_path, protocols=str(protocols), rounds=1, per_round=2))
    assert {(d.env.unwrapped.protocol.rounds, d.env.unwrapped.protocol.per_round) for d in got} == {(1, 2)}


def test_unknown_dataset_is_refused_with_what_is_allowed(datasets_dir, tmp_path):
    with pytest.raises(ValueError, match="'nope' is not a folder under --datasets-dir.*webkb"):
        benchmark(_args(datasets_dir, tmp_path, datasets=("tiny_a", "nope")))
    assert not any(tmp_path.iterdir())


def _worker_pids(pid):
    """Process-pool workers among ``pid``'s children (not multiprocessing's resource tracker)."""
    children = [c for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]
    cmdlines = {c: Path(f"/proc/{c}/cmdline").read_bytes() for c in children if Path(f"/proc/{c}").exists()}
    return [int(c) for c, cmd in cmdlines.items() if b"spawn_main" in cmd and b"resource_tracker" not in cmd]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the workers through /proc (Linux)")
def test_rerun_after_a_killed_worker_completes_without_duplicate_or_lost_rows(datasets_dir, tmp_path):
    seeds = (0, 1, 2, 3, 4, 5)
    args = _args(datasets_dir, tmp_path, seeds=seeds, bootstrap_reps=20)
    failure = []
    run = threading.Thread(target=lambda: _catch(failure, benchmark, args))
    run.start()
    deadline = time.time() + 240
    while not list(tmp_path.glob("*/episodes/*.csv")) and time.time() < deadline and run.is_alive():
        time.sleep(0.05)
    victims = _worker_pids(os.getpid())
    assert victims, "the run ended before a worker could be killed"
    os.kill(victims[0], signal.SIGKILL)
    run.join(240)
    assert len(failure) == 1 and "rerun the same command" in str(failure[0])
    saved = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/episodes/*.csv")}
    assert 0 < len(saved) < 2 * 2 * len(seeds)

    benchmark(replace(args, workers="1"))
    assert {p: p.stat().st_mtime_ns for p in saved} == saved  # finished episodes were not rewritten
    for name in DATASETS:
        keys = [(r["agent"], r["seed"], r["round"]) for r in _results(tmp_path / name / "results.csv")]
        assert len(keys) == len(set(keys)) == 2 * len(seeds) * 3


def _catch(failures, func, *args):
    try:
        func(*args)
    except RuntimeError as e:
        failures.append(e)


@pytest.mark.slow
def test_ray_local_gives_bit_identical_metrics(grid, datasets_dir, tmp_path):
    # The smallest grid that still runs episodes on two Ray workers: Ray's start-up is the cost.
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e .[ray]")
    out = benchmark(_args(datasets_dir, tmp_path, datasets=DATASETS[:1], agents=("random",), compare_to="random",
                          bootstrap_reps=10, ray="local"))
    pool = [row for row in _metrics(grid / DATASETS[0] / "results.csv") if row["agent"] == "random"]
    assert _metrics(out / DATASETS[0] / "results.csv") == pool


def test_rlmba_benchmark_command_resumes_the_same_grid(grid, datasets_dir):
    from agents.cli import main

    argv = ["benchmark", "--datasets-dir", str(datasets_dir), "--datasets", *DATASETS, "--agents", "random", "margin",
            "--seeds", "0", "1", "--env-kwargs", TINY_LEARNER, "--out-dir", str(grid), "--workers", "1",
            "--bootstrap-reps", "100", "--no-progress"]
    assert main(argv) == 0
    assert main([*argv, "--rounds", "3"]) == 1  # another configuration: refused with one error line
