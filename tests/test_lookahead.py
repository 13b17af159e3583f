"""The one-step look-ahead teacher and its linear candidate scorer (agents/lookahead.py)."""

import numpy as np
import pytest
import torch

from agents.lookahead import (IGNORED_COLUMNS, RoundSample, bilinear_agent, choose_ridge, collect, draw_batches,
                              fit_linear, linear_agent, load_samples, round_gains, save_samples, with_interactions)
from agents.reinforce import ReinforceAgent
from rlmba_env import MultimodalALEnv
from rlmba_env.data.synthetic import make_synthetic

PROTOCOL = {"initial_labels": 8, "per_round": 3, "rounds": 2}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_env():
    dataset = make_synthetic(n_samples=240, n_classes=3, dims=4, val_per_class=5, seed=1)
    return MultimodalALEnv(dataset, PROTOCOL, learner={"epochs": 8, "hidden": 8})


def kept(env):
    return [j for j, c in enumerate(env.candidate_columns) if c not in IGNORED_COLUMNS]


def test_linear_agent_logits_are_the_weighted_sum_of_the_columns_plus_a_constant():
    env = tiny_env()
    obs, _ = env.reset(seed=0)
    weights = np.random.default_rng(0).normal(size=len(kept(env)))
    logits = linear_agent(env, weights).logits(obs).numpy()
    allowed = obs["action_mask"].astype(bool)
    expected = obs["candidates"][:, kept(env)] @ weights
    diff = logits[allowed] - expected[allowed]
    assert np.allclose(diff, diff[0], atol=1e-4)


def test_draw_batches_gives_each_proposer_batch_and_uniform_subsets_of_allowed_candidates():
    env = tiny_env()
    obs, _ = env.reset(seed=0)
    batches = draw_batches(obs, env.candidate_columns, 3, n_random=4, rng=np.random.default_rng(0))
    allowed = np.flatnonzero(obs["action_mask"])
    proposers = sum(c.startswith("proposed_") for c in env.candidate_columns)
    assert len(batches) == proposers + 4
    assert all(b.size == 3 and np.unique(b).size == 3 and np.isin(b, allowed).all() for b in batches)


def test_round_gains_leave_the_episode_unchanged():
    env = tiny_env()
    obs, _ = env.reset(seed=0)
    state = {k: v.clone() for k, v in env.learner.state_dict().items()}
    gains = round_gains(env, [np.arange(3), np.arange(3, 6)], seed=5)
    assert gains.shape == (2,) and ((0 <= gains) & (gains <= 1)).all()
    assert all(torch.equal(v, env.learner.state_dict()[k]) for k, v in state.items())
    assert np.array_equal(env.observation()["candidates"], obs["candidates"])


def test_collect_records_one_sample_per_round_with_one_gain_per_batch():
    env = tiny_env()
    samples = collect(env, [0], n_random=2)
    assert len(samples) == PROTOCOL["rounds"]
    assert all(s.features.shape == (s.gains.size, len(kept(env))) for s in samples)


def test_fit_linear_recovers_the_direction_of_a_linear_gain():
    rng = np.random.default_rng(0)
    truth = np.array([1.0, -2.0, 0.5])
    samples = []
    for r in range(200):
        x = rng.uniform(size=(8, 3))
        samples.append(RoundSample(x, x @ truth + r + rng.normal(scale=0.01, size=8), "synthetic"))
    w = fit_linear(samples, ridge=1e-3)
    assert np.dot(w, truth) / np.linalg.norm(w) / np.linalg.norm(truth) > 0.99


def test_fit_linear_rejects_rounds_without_any_gain_difference():
    with pytest.raises(ValueError, match="same gain"):
        fit_linear([RoundSample(np.ones((3, 2)), np.zeros(3), "flat")])


def test_saved_samples_load_back_equal(tmp_path):
    samples = [RoundSample(np.arange(6.0).reshape(3, 2), np.arange(3.0), "a"),
               RoundSample(np.ones((2, 2)), np.zeros(2), "b")]
    save_samples(tmp_path / "s.npz", samples)
    back = load_samples(tmp_path / "s.npz")
    assert [s.dataset for s in back] == ["a", "b"]
    assert all(np.array_equal(x.features, y.features) and np.array_equal(x.gains, y.gains)
               for x, y in zip(samples, back))


def test_choose_ridge_prefers_the_penalty_that_ranks_held_out_batches_best():
    rng = np.random.default_rng(1)
    samples = []
    for d in ("a", "b", "c"):
        for r in range(40):
            # two strongly correlated columns whose difference is the gain: only a weak penalty
            # separates them, a heavy one shrinks towards their marginal covariances
            first = rng.uniform(size=6)
            x = np.stack([first, first + 0.3 * rng.uniform(size=6)], axis=1)
            samples.append(RoundSample(x, x[:, 0] - x[:, 1], d))
    best, scores = choose_ridge(samples, (1e-3, 1e6))
    assert best == 1e-3 and scores[1e-3] > scores[1e6]


def test_fit_linear_with_a_large_penalty_plays_the_prior_column():
    rng = np.random.default_rng(2)
    samples = []
    for r in range(50):
        x = rng.uniform(size=(6, 3))
        samples.append(RoundSample(x, x[:, 1] + x[:, 2] + rng.normal(scale=0.1, size=6), "a"))
    w = fit_linear(samples, ridge=1e8, prior=1)
    assert w[1] > 0 and np.allclose(w[[0, 2]], 0.0, atol=1e-6 * w[1])


def test_lodo_rejects_an_unknown_method_naming_the_allowed_ones(tmp_path):
    from benchmarks.lodo import Args, main

    with pytest.raises(ValueError, match="choose clone, lookahead or search"):
        main(Args(stage="train", method="oracle", out_dir=str(tmp_path)))


def test_lodo_rejects_a_prior_that_is_not_a_scored_column(tmp_path):
    from benchmarks.lodo import Args, main

    with pytest.raises(ValueError, match="'picked' is not a scored candidate column"):
        main(Args(stage="train", method="lookahead", prior="picked", out_dir=str(tmp_path)))


def test_bilinear_agent_logits_are_the_columns_weighted_by_coefficients_linear_in_the_state():
    env = tiny_env()
    obs, _ = env.reset(seed=0)
    terms = [3, 16]
    weights = np.random.default_rng(0).normal(size=len(kept(env)) * 3)
    logits = bilinear_agent(env, weights, terms).logits(obs).numpy()
    coef = weights.reshape(-1, 3) @ np.concatenate([[1.0], obs["state"][terms]])
    allowed = obs["action_mask"].astype(bool)
    assert np.allclose(logits[allowed], (obs["candidates"][:, kept(env)] @ coef)[allowed], atol=1e-4)


def test_bilinear_agent_ranks_batches_as_the_interaction_fit_scores_their_means():
    env = tiny_env()
    obs, _ = env.reset(seed=0)
    terms = [3, 16]
    batches = [np.arange(3), np.arange(3, 6)]
    sample = RoundSample(np.stack([obs["candidates"][b][:, kept(env)].mean(0) for b in batches]), np.zeros(2),
                         "a", obs["state"])
    weights = np.random.default_rng(1).normal(size=len(kept(env)) * 3)
    predicted = with_interactions([sample], terms)[0].features @ weights
    logits = bilinear_agent(env, weights, terms).logits(obs).numpy()
    assert np.allclose([logits[b].mean() for b in batches], predicted, atol=1e-4)


def test_bilinear_agent_checkpoint_loads_back_with_the_same_logits(tmp_path):
    env = tiny_env()
    obs, _ = env.reset(seed=0)
    agent = bilinear_agent(env, np.random.default_rng(2).normal(size=len(kept(env)) * 2), [3])
    back = ReinforceAgent.load(agent.save(tmp_path / "a.pt"))
    assert torch.equal(agent.logits(obs), back.logits(obs))


def test_collect_records_the_round_state_and_saved_samples_keep_it(tmp_path):
    env = tiny_env()
    samples = collect(env, [0], n_random=1)
    save_samples(tmp_path / "s.npz", samples)
    back = load_samples(tmp_path / "s.npz")
    assert all(s.state.shape == env.observation_space["state"].shape for s in samples)
    assert all(np.array_equal(x.state, y.state) for x, y in zip(samples, back))


def test_with_interactions_rejects_samples_without_a_state():
    with pytest.raises(ValueError, match="needs the round state"):
        with_interactions([RoundSample(np.ones((2, 2)), np.arange(2.0), "old")], [0])


def test_lodo_rejects_interactions_that_are_not_state_entries(tmp_path):
    from benchmarks.lodo import Args, main

    with pytest.raises(ValueError, match=r"\['labels'\] are not state entries"):
        main(Args(stage="train", method="lookahead", interactions=("labels",), out_dir=str(tmp_path)))
