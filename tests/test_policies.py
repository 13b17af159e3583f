"""The candidate-set policy: equivariance, masking, invariance of the value, SB3 integration."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

import rlmba_env  # noqa: F401
from agents.envs import TopBPickWrapper, best_allowed
from agents.policies import MaskableSetPolicy, SetActorCriticPolicy, SetScorer

K, F, G = 10, 11, 16
TINY = {"initial_labels": 10, "per_round": 2, "rounds": 2, "learner": {"epochs": 10, "hidden": 8},
        "dataset": {"n_samples": 300, "n_classes": 3, "val_per_class": 5}}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_obs(batch=3, k=K, seed=0):
    g = torch.Generator().manual_seed(seed)
    candidates = torch.rand(batch, k, F, generator=g)
    candidates[..., -1] = 0.0
    mask = torch.ones(batch, k)
    mask[:, [1, 4]] = 0.0
    candidates[:, 1, -1] = 1.0  # picked this round
    return {"candidates": candidates, "state": torch.randn(batch, G, generator=g), "action_mask": mask}


def permuted(obs, perm):
    return {"candidates": obs["candidates"][:, perm], "state": obs["state"], "action_mask": obs["action_mask"][:, perm]}


def obs_space(k=K):
    return spaces.Dict({"candidates": spaces.Box(0, 1, (k, F), np.float32),
                        "state": spaces.Box(-10, 10, (G,), np.float32),
                        "action_mask": spaces.MultiBinary(k)})


@pytest.mark.parametrize("attention", [False, True])
def test_scorer_is_permutation_equivariant(attention):
    torch.manual_seed(0)
    scorer = SetScorer(F, G, hidden=16, attention=attention)
    obs = random_obs()
    perm = torch.randperm(K)
    logits, pooled = scorer(obs["candidates"], obs["state"], obs["action_mask"])
    p = permuted(obs, perm)
    logits_p, pooled_p = scorer(p["candidates"], p["state"], p["action_mask"])
    torch.testing.assert_close(logits_p, logits[:, perm])
    torch.testing.assert_close(pooled_p, pooled, rtol=1e-5, atol=1e-6)


def test_masked_candidates_get_zero_probability():
    scorer = SetScorer(F, G, hidden=16)
    obs = random_obs()
    probs = torch.softmax(scorer.logits(obs), dim=-1)
    assert torch.all(probs[:, [1, 4]] == 0.0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3))


def test_maskable_policy_value_is_permutation_invariant_and_logits_equivariant():
    policy = MaskableSetPolicy(obs_space(), spaces.Discrete(K), lambda _: 1e-3, attention=True)
    obs = random_obs()
    perm = torch.randperm(K)
    with torch.no_grad():
        v, v_p = policy.predict_values(obs), policy.predict_values(permuted(obs, perm))
        p = policy.get_distribution(obs).distribution.probs
        p_p = policy.get_distribution(permuted(obs, perm)).distribution.probs
    torch.testing.assert_close(v_p, v, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(p_p, p[:, perm])
    assert torch.all(p[:, [1, 4]] == 0.0)  # masked by the network itself, without action_masks


def test_set_policy_scores_a_candidate_set_of_another_size():
    policy = MaskableSetPolicy(obs_space(K), spaces.Discrete(K), lambda _: 1e-3)
    with torch.no_grad():
        scores = policy.candidate_scores(random_obs(k=2 * K))
    assert scores.shape == (3, 2 * K)
    assert torch.all(scores[:, [1, 4]] < -1e7)


def test_ppo_set_policy_mean_is_zero_on_masked_candidates():
    policy = SetActorCriticPolicy(obs_space(), spaces.Box(-1e6, 1e6, (K,), np.float32), lambda _: 1e-3)
    with torch.no_grad():
        mean = policy.get_distribution(random_obs()).distribution.mean
    assert mean.shape == (3, K)
    assert torch.all(mean[:, [1, 4]] == 0.0)
    assert policy.log_std.shape == (1,)  # one std shared by all candidates


def test_maskable_ppo_with_set_policy_learns_a_few_steps():
    from sb3_contrib import MaskablePPO

    env = gym.make("RLMBA-Synthetic-v0", **TINY)
    model = MaskablePPO(MaskableSetPolicy, env, n_steps=8, batch_size=4, n_epochs=2, seed=0)
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(8)
    after = list(model.policy.parameters())
    assert model.num_timesteps == 8
    assert any(not torch.equal(a, b) for a, b in zip(after, before))


def test_best_allowed_never_picks_a_masked_candidate():
    scores = np.array([5.0, 1.0, -np.inf, 3.0])
    mask = np.array([0, 1, 1, 1], dtype=bool)
    assert best_allowed(scores, mask) == 3
    assert best_allowed(np.full(4, -np.inf), mask) == 1


def test_top_b_pick_wrapper_picks_best_allowed_and_closes_rounds():
    env = TopBPickWrapper(gym.make("RLMBA-Synthetic-v0", candidates="score", **TINY), picks_per_step=2)
    obs, info = env.reset(seed=0)
    scores = np.arange(K, dtype=np.float32)  # the last candidates score highest
    obs, reward, terminated, truncated, info = env.step(scores)
    assert info["picks"] == [K - 1, K - 2]
    assert info["round"] == 1 and info["reward_terms"]  # both picks of the round in one step
    obs, reward, terminated, truncated, info = env.step(scores)
    assert terminated
