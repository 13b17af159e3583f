"""The registered env ids that have data, made as a user would with gym.make."""

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env as gym_check_env
from sb3_contrib.common.maskable.utils import get_action_masks
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.env_util import make_vec_env

import rlmba_env  # noqa: F401


def test_avdigits_passes_gymnasium_and_sb3_checks():
    env = gym.make("RLMBA-AVDigits-v0", initial_labels=10, per_round=3, rounds=2,
                   learner={"epochs": 20, "hidden": 16})
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)


def test_synthetic_passes_gymnasium_and_sb3_checks():
    env = gym.make("RLMBA-Synthetic-v0", dataset={"n_samples": 400, "n_classes": 4, "val_per_class": 10},
                   initial_labels=8, per_round=3, rounds=2, learner={"epochs": 20, "hidden": 16})
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)


def test_full_default_avdigits_episode_with_random_picks_ends_terminated():
    env = gym.make("RLMBA-AVDigits-v0")
    protocol = env.unwrapped.protocol
    assert (protocol.initial_labels, protocol.per_round, protocol.rounds) == (20, 10, 10)
    rng = np.random.default_rng(0)
    obs, info = env.reset(seed=0)
    assert info["labeled"] == 20
    steps, rewards = 0, []
    while True:
        obs, reward, terminated, truncated, info = env.step(int(rng.choice(np.flatnonzero(obs["action_mask"]))))
        steps += 1
        rewards.append(reward)
        if terminated or truncated:
            break
    assert terminated and not truncated
    assert steps == 10 * 10
    assert info["labeled"] == 20 + 10 * 10 == len(env.unwrapped.labeled_rows)
    assert sum(r != 0 for r in rewards) <= 10
    assert 0.0 <= info["balance"] <= 1.0


def test_action_masks_reach_maskable_ppo_through_gym_make_wrappers():
    vec = make_vec_env("RLMBA-Synthetic-v0", n_envs=1, seed=0, env_kwargs={
        "dataset": {"n_samples": 300, "n_classes": 3, "val_per_class": 5}, "render_mode": None,
        "initial_labels": 6, "per_round": 2, "rounds": 1, "learner": {"epochs": 5, "hidden": 8}})
    obs = vec.reset()
    masks = get_action_masks(vec)
    np.testing.assert_array_equal(masks[0], obs["action_mask"][0].astype(bool))
