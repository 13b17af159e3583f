"""One policy for every dataset: observation layout v2, portfolio candidates, env suites,
cross-dataset training and the shipped pretrained policy."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import rlmba_env  # noqa: F401
from agents.reinforce import ReinforceAgent
from agents.suite import make_suite_training_env, parse_spec
from rlmba_env import MultimodalALEnv
from rlmba_env.data.synthetic import make_synthetic
from rlmba_env.selection.portfolio import PROPOSERS
from rlmba_env.strategies import make_strategy

ROOT = Path(__file__).resolve().parents[1]
TINY = {"initial_labels": 8, "per_round": 2, "rounds": 2, "learner": {"epochs": 8, "hidden": 8}}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_env(n_modalities, **kwargs):
    dataset = make_synthetic(n_samples=240, n_classes=3, n_modalities=n_modalities, dims=4, val_per_class=5)
    return MultimodalALEnv(dataset, {k: TINY[k] for k in ("initial_labels", "per_round", "rounds")},
                           learner=TINY["learner"], **kwargs)


def test_one_policy_runs_unchanged_on_2_3_and_12_modalities():
    agent = ReinforceAgent.from_env(tiny_env(2), seed=0)
    for m in (2, 3, 12):
        env = tiny_env(m)
        result, _ = agent.run_episode(env, learn=False, seed=1, deterministic=True)
        assert len(env.labeled_rows) == TINY["initial_labels"] + TINY["rounds"] * TINY["per_round"]
        assert len(result.test_top1) == TINY["rounds"] + 1 and 0.0 <= result.final_top1 <= 1.0


def test_portfolio_candidates_are_distinct_unlabeled_and_flagged_by_their_proposers():
    env = tiny_env(2)
    obs, info = env.reset(seed=3)
    rows = info["candidate_rows"][info["candidate_rows"] >= 0]
    assert np.unique(rows).size == rows.size
    assert not np.isin(rows, env.labeled_rows).any()
    cols = env.candidate_columns
    flags = obs["candidates"][: rows.size, [cols.index(f"proposed_{p}") for p in PROPOSERS]]
    assert (flags.sum(1) >= 1).all()
    margin = make_strategy("margin").select(env.pool_state(), env.budget, np.random.default_rng(0))
    assert set(rows[flags[:, PROPOSERS.index("margin")] == 1]) == set(margin)


def test_suite_env_draws_envs_by_seed_and_keeps_one_observation_space():
    env = make_suite_training_env(["RLMBA-Synthetic-v0", "RLMBA-AVDigits-v0"], **TINY)
    drawn = []
    for seed in range(6):
        obs, info = env.reset(seed=seed)
        assert env.observation_space.contains(obs)
        drawn.append(info["env_spec"])
    assert set(drawn) == {"RLMBA-Synthetic-v0", "RLMBA-AVDigits-v0"}
    assert [env.reset(seed=s)[1]["env_spec"] for s in range(6)] == drawn


def test_env_spec_without_a_devsuite_name_is_refused():
    with pytest.raises(ValueError, match="RLMBA-DevSuite-v0:webkb"):
        parse_spec("RLMBA-DevSuite-v0")


def run_pg(*args, cwd):
    cmd = [sys.executable, str(ROOT / "agents" / "train_pg.py"), "--suite", "RLMBA-Synthetic-v0",
           "RLMBA-AVDigits-v0", "--env-kwargs", json.dumps(TINY), "--eval-episodes", "0",
           "--torch-threads", "1", "--log-dir", str(cwd), *map(str, args)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=cwd,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_training_over_a_two_dataset_suite_runs_and_resumes(tmp_path):
    run_pg("--bc-teacher", "margin_rank", "--bc-epochs", 2, "--total-timesteps", 8, cwd=tmp_path)
    first = next(tmp_path.glob("*__reinforce__*")) / "agent.pt"
    assert ReinforceAgent.load(first).steps == 8
    shutil.move(first.parent, tmp_path / "first")
    run_pg("--resume", tmp_path / "first" / "agent.pt", "--total-timesteps", 8, cwd=tmp_path)
    resumed = ReinforceAgent.load(next(tmp_path.glob("*__reinforce__*")) / "agent.pt")
    assert resumed.steps == 16 and resumed.episodes == 4


def test_shipped_policy_loads_and_its_hash_matches():
    from agents.pretrained import POLICY_FILE, POLICY_SHA256, load_pretrained
    from rlmba_env.data.cache import file_sha256

    assert file_sha256(POLICY_FILE) == POLICY_SHA256
    agent = load_pretrained()
    env = tiny_env(3)
    obs, _ = env.reset(seed=0)
    assert obs["action_mask"][agent.act(obs, deterministic=True)] == 1


def test_shipped_policy_picks_the_top_of_its_documented_rule_margin_rank_plus_0_1_score_rank():
    from agents.policy_search import candidate_weights, weight_vector
    from agents.pretrained import load_pretrained

    agent, env = load_pretrained(), tiny_env(3)
    columns = list(env.candidate_columns)
    rule = weight_vector(candidate_weights("m+score.1"), columns)
    assert candidate_weights("m+score.1") == {"margin_rank": 1.0, "score_rank": 0.1}
    obs, _ = env.reset(seed=0)
    for _ in range(env.budget):
        scores = np.where(obs["action_mask"] == 1, obs["candidates"] @ rule, -np.inf)
        pick = agent.act(obs, deterministic=True)
        assert scores[pick] == pytest.approx(scores.max(), abs=1e-6)
        obs, *_ = env.step(pick)


def test_a_tampered_shipped_policy_is_refused(tmp_path):
    from agents.pretrained import POLICY_FILE, load_pretrained

    copy = tmp_path / "rl_mba.pt"
    copy.write_bytes(POLICY_FILE.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="sha256"):
        load_pretrained(path=copy)
