"""agents/train_ppo.py, train_pg.py and transfer.py run as a user runs them, with tiny settings;
hyperparameter files and command-line precedence; transfer between datasets."""

import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
import torch
import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import rlmba_env  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = {"initial_labels": 10, "per_round": 2, "rounds": 2, "learner": {"epochs": 10, "hidden": 8}}
SYNTHETIC = {**PROTOCOL, "dataset": {"n_samples": 300, "n_classes": 3, "val_per_class": 5}}
QUICK = ["--n-steps", "8", "--batch-size", "4", "--n-epochs", "1"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_script(script, *args, cwd):
    # One torch thread: on a busy two-core machine torch's default pool slows small fits 5x.
    cmd = [sys.executable, str(ROOT / "agents" / script), *map(str, args), "--torch-threads", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def scalars(run_dir):
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def only_run(folder, pattern):
    runs = list(Path(folder).glob(pattern))
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(scope="module")
def maskable_run(tmp_path_factory):
    """16 steps of MaskablePPO with the set policy on Synthetic, checkpoint every 8."""
    logs = tmp_path_factory.mktemp("maskable")
    run_script("train_ppo.py", "--env-id", "RLMBA-Synthetic-v0", "--env-kwargs", json.dumps(SYNTHETIC),
               "--total-timesteps", 16, *QUICK, "--checkpoint-freq", 8, "--eval-episodes", 1,
               "--log-dir", logs, "--no-progress-bar", cwd=logs)
    return only_run(logs, "RLMBA-Synthetic-v0__maskable_ppo__1__*")


@pytest.fixture(scope="module")
def pg_run(tmp_path_factory):
    """40 picks (10 episodes) of REINFORCE on Synthetic, checkpoint every 20."""
    logs = tmp_path_factory.mktemp("pg")
    out = run_script("train_pg.py", "--env-id", "RLMBA-Synthetic-v0", "--env-kwargs", json.dumps(SYNTHETIC),
                     "--total-timesteps", 40, "--checkpoint-freq", 20, "--eval-episodes", 1,
                     "--log-dir", logs, cwd=logs)
    run = only_run(logs, "RLMBA-Synthetic-v0__reinforce__1__*")
    assert f"TensorBoard logs: {run}" in out.stdout
    return run


def test_train_ppo_maskable_set_policy_logs_checkpoints_and_evaluates(maskable_run):
    from sb3_contrib import MaskablePPO

    from agents.policies import MaskableSetPolicy

    tags = scalars(maskable_run)
    assert {"eval/top1", "eval/balance", "eval/aulc", "test/top1", "charts/balance",
            "charts/episodic_return", "reward/top1_gain", "contribution/m0"} <= set(tags)
    assert len(tags["test/top1"]) == 4  # 16 picks = 4 episodes of 2 rounds x 2 picks
    assert sorted(p.name for p in (maskable_run / "checkpoints").iterdir()) == [
        "model_16_steps.zip", "model_8_steps.zip"]
    model = MaskablePPO.load(maskable_run / "model.zip")
    assert isinstance(model.policy, MaskableSetPolicy) and model.num_timesteps == 16


@pytest.fixture(scope="module")
def resumed_run(maskable_run, tmp_path_factory):
    """maskable_run's checkpoint at step 8 resumed for 8 more steps."""
    logs = tmp_path_factory.mktemp("resumed")
    out = run_script("train_ppo.py", "--env-id", "RLMBA-Synthetic-v0", "--env-kwargs", json.dumps(SYNTHETIC),
                     "--resume", maskable_run / "checkpoints" / "model_8_steps.zip", "--total-timesteps", 8,
                     "--eval-episodes", 0, "--checkpoint-freq", 0, "--log-dir", logs, "--no-progress-bar",
                     cwd=logs)
    assert "from step 8" in out.stdout
    return only_run(logs, "RLMBA-Synthetic-v0__maskable_ppo__1__*")


def test_train_ppo_resume_continues_the_step_count(resumed_run):
    from sb3_contrib import MaskablePPO

    assert MaskablePPO.load(resumed_run / "model.zip").num_timesteps == 16
    events = EventAccumulator(str(resumed_run))
    events.Reload()
    assert events.Scalars("test/top1")[0].step > 8  # the step axis continues from the checkpoint


def test_train_ppo_resume_continues_the_episode_sequence_instead_of_replaying_it(maskable_run, resumed_run):
    from sb3_contrib import MaskablePPO

    def position(path):
        return MaskablePPO.load(path).episode_positions

    # the resumed run played the uninterrupted run's episodes 3 and 4 and stops where it stopped
    assert position(resumed_run / "model.zip") == position(maskable_run / "model.zip")
    assert position(maskable_run / "checkpoints" / "model_8_steps.zip") != position(maskable_run / "model.zip")


def test_train_ppo_plain_ppo_with_set_policy_in_subprocess_envs(tmp_path):
    from stable_baselines3 import PPO

    from agents.policies import SetActorCriticPolicy

    run_script("train_ppo.py", "--algo", "ppo", "--env-id", "RLMBA-Synthetic-v0", "--env-kwargs",
               json.dumps(SYNTHETIC), "--total-timesteps", 16, *QUICK, "--n-envs", 2, "--eval-episodes", 0,
               "--log-dir", tmp_path, "--no-progress-bar", cwd=tmp_path)
    run = only_run(tmp_path, "RLMBA-Synthetic-v0__ppo__1__*")
    assert {"test/top1", "charts/episodic_return"} <= set(scalars(run))
    model = PPO.load(run / "model.zip")
    assert isinstance(model.policy, SetActorCriticPolicy)


def test_train_pg_logs_saves_and_resumes(pg_run, tmp_path):
    from agents.reinforce import ReinforceAgent

    tags = scalars(pg_run)
    assert {"charts/episodic_return", "test/top1", "test/aulc", "charts/balance", "reward/top1_gain",
            "contribution/m0", "losses/policy_loss", "losses/entropy", "charts/baseline",
            "eval/top1", "eval/balance"} <= set(tags)
    assert len(tags["test/top1"]) == 10
    assert (pg_run / "checkpoints" / "agent_20_steps.pt").is_file()
    assert ReinforceAgent.load(pg_run / "agent.pt").steps == 40

    run_script("train_pg.py", "--env-id", "RLMBA-Synthetic-v0", "--env-kwargs", json.dumps(SYNTHETIC),
               "--resume", pg_run / "checkpoints" / "agent_20_steps.pt", "--total-timesteps", 8,
               "--eval-episodes", 0, "--log-dir", tmp_path, cwd=tmp_path)
    resumed = only_run(tmp_path, "RLMBA-Synthetic-v0__reinforce__1__*")
    agent = ReinforceAgent.load(resumed / "agent.pt")
    assert agent.steps == 28 and agent.episodes == 7


def test_yaml_hyperparameters_apply_and_command_line_flags_win(tmp_path):
    from agents.hyperparams import resolve
    from agents.train_ppo import DEFAULTS, Args

    path = tmp_path / "hp.yml"
    path.write_text(
        "default: {n_steps: 64}\n"
        "RLMBA-Synthetic-v0:\n"
        "  n_steps: 32\n  learning_rate: 1.0e-3\n  policy: mlp\n"
        "  env_kwargs: {rounds: 3, per_round: 2}\n  policy_kwargs: {hidden: 16}\n"
    )
    args, origin = resolve(Args(env_id="RLMBA-Synthetic-v0", learning_rate=5e-4, env_kwargs='{"rounds": 4}'),
                           path, DEFAULTS)
    assert (args.n_steps, args.learning_rate, args.policy, args.batch_size) == (32, 5e-4, "mlp", 100)
    assert (origin["n_steps"], origin["learning_rate"], origin["batch_size"]) == ("yaml", "cli", "default")
    assert json.loads(args.env_kwargs) == {"rounds": 4, "per_round": 2}
    assert json.loads(args.policy_kwargs) == {"hidden": 16}
    args, _ = resolve(Args(env_id="RLMBA-AVDigits-v0"), path, DEFAULTS)
    assert args.n_steps == 64  # the default entry

    path.write_text("RLMBA-Synthetic-v0: {n_step: 32}\n")
    with pytest.raises(ValueError, match="unknown hyperparameter 'n_step'"):
        resolve(Args(env_id="RLMBA-Synthetic-v0"), path, DEFAULTS)


def test_packaged_hyperparameter_files_hold_only_what_differs_from_the_scripts_defaults():
    from agents import train_pg, train_ppo
    from agents.hyperparams import hyperparams_file, load_section, resolve

    for agent, defaults in (("maskable_ppo", train_ppo.DEFAULTS), ("ppo", train_ppo.DEFAULTS),
                            ("reinforce", train_pg.DEFAULTS)):
        for env_id in ("default", "RLMBA-AVDigits-v0", "RLMBA-Synthetic-v0"):
            section = load_section(hyperparams_file(agent), env_id)
            assert all(section[k] != defaults[k] for k in section if k in defaults), (agent, env_id, section)
    for algo in ("maskable_ppo", "ppo"):
        args, origin = resolve(train_ppo.Args(algo=algo), hyperparams_file(algo), train_ppo.DEFAULTS)
        assert args.total_timesteps == 10_000 and args.policy == "set" and origin["n_steps"] == "default"
    args, _ = resolve(train_pg.Args(), hyperparams_file("reinforce"), train_pg.DEFAULTS)
    assert args.learning_rate == train_pg.DEFAULTS["learning_rate"]


def test_set_policy_transfers_from_synthetic_to_avdigits_other_candidate_counts_and_modalities(maskable_run):
    from agents.transfer import load_policy, transfer

    agent = load_policy(maskable_run / "model.zip")
    avdigits = gym.make("RLMBA-AVDigits-v0", **PROTOCOL)
    (result,) = transfer(agent, avdigits, [10_000])
    assert result.labeled == [10, 12, 14] and 0.0 <= result.final_top1 <= 1.0
    bigger = gym.make("RLMBA-Synthetic-v0", **{**SYNTHETIC, "per_round": 3})  # K = 15 instead of 10
    (result,) = transfer(agent, bigger, [10_000])
    assert result.labeled == [10, 13, 16]
    three = gym.make("RLMBA-Synthetic-v0", **{**SYNTHETIC, "dataset": {**SYNTHETIC["dataset"], "n_modalities": 3}})
    (result,) = transfer(agent, three, [10_000])  # layout v2 does not depend on the modality count
    assert result.labeled == [10, 12, 14]


def test_reinforce_transfers_from_avdigits_to_synthetic(tmp_path):
    from agents.reinforce import ReinforceAgent
    from agents.transfer import load_policy, transfer

    avdigits = gym.make("RLMBA-AVDigits-v0", **PROTOCOL)
    agent = ReinforceAgent.from_env(avdigits, seed=0)
    agent.run_episode(avdigits, learn=True, seed=0)
    agent.save(tmp_path / "agent.pt")
    loaded = load_policy(tmp_path / "agent.pt")
    synthetic = gym.make("RLMBA-Synthetic-v0", **SYNTHETIC)
    frozen = transfer(loaded, synthetic, [10_000, 10_001])
    online = transfer(loaded, synthetic, [10_000])
    assert [r.labeled[-1] for r in frozen + online] == [14, 14, 14]
    assert loaded.updates == 2  # transfer plays copies; the loaded agent is unchanged


def test_transfer_script_compares_with_baselines(pg_run, tmp_path):
    out = run_script("transfer.py", pg_run / "agent.pt", "--env-id", "RLMBA-Synthetic-v0",
                     "--env-kwargs", json.dumps({**SYNTHETIC, "dataset": {**SYNTHETIC["dataset"], "seed": 5}}),
                     "--episodes", 1, "--online", "--baselines", cwd=tmp_path)
    assert "agent.pt" in out.stdout and "random" in out.stdout and "first (top-b by q)" in out.stdout


@pytest.mark.parametrize("flags, message", [
    (["--total-timesteps", "0"], "--total-timesteps 0 is not allowed: it must be an integer >= 1"),
    (["--total-timesteps", "-5"], "--total-timesteps -5 is not allowed"),
    (["--learning-rate", "nan"], "--learning-rate nan is not allowed: it must be a number > 0"),
    (["--gamma", "2"], r"--gamma 2.0 is not allowed: it must be a number in \[0, 1\]"),
    (["--n-steps", "7", "--batch-size", "3"], "leaves a minibatch of 1 sample"),
])
def test_train_ppo_refuses_bad_hyperparameters_naming_the_flag(tmp_path, flags, message):
    from agents.train_ppo import Args, main

    with pytest.raises(ValueError, match=message):
        main(tyro.cli(Args, args=[*flags, "--log-dir", str(tmp_path)]))
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("script", ["train_ppo", "train_pg"])
def test_resume_from_a_missing_checkpoint_names_the_file(tmp_path, script):
    from importlib import import_module

    module = import_module(f"agents.{script}")
    with pytest.raises(FileNotFoundError, match="--resume missing.zip: no such checkpoint file"):
        module.main(tyro.cli(module.Args, args=["--resume", "missing.zip", "--log-dir", str(tmp_path)]))


def test_train_ppo_says_when_it_rounds_the_step_count_up(tmp_path):
    out = run_script("train_ppo.py", "--env-id", "RLMBA-Synthetic-v0", "--env-kwargs", json.dumps(SYNTHETIC),
                     "--total-timesteps", 6, *QUICK, "--eval-episodes", 0, "--checkpoint-freq", 0,
                     "--log-dir", tmp_path, "--no-progress-bar", cwd=tmp_path)
    assert "for 8 steps (--total-timesteps 6 rounded up to whole rollouts of n_steps 8 x n_envs 1)" in out.stdout


@pytest.mark.parametrize("script", ["train_ppo.py", "train_pg.py"])
def test_help_shows_where_yaml_defaults_come_from_not_none(script):
    out = subprocess.run([sys.executable, str(ROOT / "agents" / script), "--help"], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0
    assert "(default: None)" not in out.stdout and "{None}" not in out.stdout
    assert "(default: the YAML entry, else" in out.stdout and "(default: a fresh run)" in out.stdout


def test_train_pg_trains_a_bilinear_scorer_when_asked(tmp_path):
    from agents.networks import BilinearScorer
    from agents.reinforce import ReinforceAgent

    run_script("train_pg.py", "--env-id", "RLMBA-Synthetic-v0", "--env-kwargs", json.dumps(SYNTHETIC),
               "--scorer", "bilinear", "--state-terms", 3, 16, "--total-timesteps", 8, "--eval-episodes", 0,
               "--checkpoint-freq", 0, "--log-dir", tmp_path, cwd=tmp_path)
    agent = ReinforceAgent.load(only_run(tmp_path, "RLMBA-Synthetic-v0__reinforce__1__*") / "agent.pt")
    assert isinstance(agent.scorer, BilinearScorer) and agent.scorer.state_terms == (3, 16)
    assert agent.scorer.weight.abs().sum() > 0
