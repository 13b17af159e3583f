"""agents/evaluate.py: the evaluation harness on a tiny configuration."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import agents.evaluate as evaluate_module
from agents.evaluate import Args, evaluate

ROOT = Path(__file__).resolve().parents[1]
TINY_ENV = {"dataset": {"n_samples": 300, "n_classes": 3, "val_per_class": 5},
            "initial_labels": 6, "per_round": 3, "rounds": 2, "learner": {"epochs": 10, "hidden": 8}}


def _args(out_dir, agents=("random", "entropy", "rlmba-score"), seeds=(0, 1)):
    return Args(env_id="RLMBA-Synthetic-v0", env_kwargs=json.dumps(TINY_ENV), agents=agents,
                seeds=seeds, out_dir=str(out_dir), bootstrap_reps=200)


def test_evaluate_writes_tensorboard_csv_summary_and_plot(tmp_path):
    out = evaluate(_args(tmp_path))
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 2 * (2 + 1)  # agents x seeds x (rounds + round 0)
    assert {r["agent"] for r in rows} == {"random", "entropy", "rlmba-score"}
    assert {"test_top1", "test_top1_m0", "test_top1_m1", "contribution_m0", "balance", "select_s"} <= set(rows[0])
    summary = (out / "summary.md").read_text()
    assert "IQM AULC" in summary and "| rlmba-score |" in summary
    assert (out / "curves.png").stat().st_size > 10_000
    tb = out / "tb" / "entropy__seed1"
    events = EventAccumulator(str(tb))
    events.Reload()
    assert {"test/top1", "test/top1_m0", "contribution/m1", "balance", "time/select_s"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("test/top1")] == [6, 9, 12]  # keyed by labeled-set size


def test_every_agent_starts_from_the_same_round_zero(tmp_path):
    out = evaluate(_args(tmp_path, seeds=(3,)))
    with open(out / "results.csv") as f:
        round0 = [r for r in csv.DictReader(f) if r["round"] == "0.0" or r["round"] == "0"]
    assert len(round0) == 3
    assert len({(r["test_top1"], r["val_top1"], r["balance"]) for r in round0}) == 1


def test_second_run_of_the_same_command_does_no_new_work(tmp_path, monkeypatch):
    evaluate(_args(tmp_path))
    episodes = sorted((tmp_path / "episodes").iterdir())
    before = {p: p.stat().st_mtime_ns for p in episodes}

    played = []
    real = evaluate_module.strategy_agent

    def counting(name):
        agent = real(name)
        inner = agent.play
        agent.play = lambda env, seed: played.append((name, seed)) or inner(env, seed)
        return agent

    monkeypatch.setattr(evaluate_module, "strategy_agent", counting)
    evaluate(_args(tmp_path))
    assert played == []
    assert {p: p.stat().st_mtime_ns for p in episodes} == before


def test_unknown_agent_is_rejected_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="nope"):
        evaluate(_args(tmp_path, agents=("random", "nope")))
    assert not (tmp_path / "episodes").exists()


def test_evaluate_script_runs_as_a_user_runs_it(tmp_path):
    cmd = [sys.executable, str(ROOT / "agents" / "evaluate.py"), "--env-id", "RLMBA-Synthetic-v0",
           "--env-kwargs", json.dumps(TINY_ENV), "--agents", "random", "margin", "--seeds", "0",
           "--out-dir", str(tmp_path), "--bootstrap-reps", "100"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "summary.md").is_file() and "tensorboard --logdir" in out.stdout


def test_rlmba_evaluate_command_runs_the_same_harness(tmp_path):
    rlmba = Path(sys.executable).parent / "rlmba"
    cmd = [str(rlmba), "evaluate", "--env-id", "RLMBA-Synthetic-v0", "--env-kwargs", json.dumps(TINY_ENV),
           "--agents", "random", "--seeds", "0", "--out-dir", str(tmp_path), "--bootstrap-reps", "100"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "episodes" / "random__seed0.csv").is_file()


def test_repeated_seeds_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match=r"--seeds must be distinct.*1 repeated"):
        evaluate(_args(tmp_path, seeds=(1, 1)))
    assert not any(tmp_path.iterdir())


def test_rerun_into_the_same_folder_with_other_env_kwargs_is_refused(tmp_path):
    evaluate(_args(tmp_path, agents=("random",), seeds=(0,)))
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    other = Args(env_id="RLMBA-Synthetic-v0", env_kwargs=json.dumps({**TINY_ENV, "rounds": 3}), agents=("random",),
                 seeds=(0,), out_dir=str(tmp_path), bootstrap_reps=200)
    with pytest.raises(ValueError, match=r"another configuration.*env_kwargs.*\"rounds\": 3"):
        evaluate(other)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == before


def test_summary_is_titled_by_dataset_and_csv_columns_are_integers(tmp_path):
    out = evaluate(_args(tmp_path, agents=("random",), seeds=(0,)))
    assert (out / "summary.md").read_text().startswith("# synthetic: ")
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["seed"], r["round"], r["labeled"]) for r in rows] == [("0", "0", "6"), ("0", "1", "9"), ("0", "2", "12")]


def test_summary_intervals_are_the_same_on_every_rebuild():
    from agents.summary import iqm_intervals

    scores = {"a": np.array([0.1, 0.2, 0.3, 0.5, 0.4]), "b": np.array([0.3, 0.2, 0.6, 0.5, 0.4])}
    assert iqm_intervals(scores, reps=300) == iqm_intervals(scores, reps=300)
