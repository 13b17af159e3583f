import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from rlmba_env.data.synthetic import make_synthetic
from rlmba_env.env import MultimodalALEnv
from rlmba_env.learner.trainer import predict_learners
from rlmba_env.vector import BatchedMultimodalALVectorEnv

PROTOCOL = {"initial_labels": 10, "per_round": 3, "rounds": 2}
LEARNER = {"epochs": 12, "warm_epochs": 4, "hidden": 16}
N_ENVS = 3


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic(n_samples=300, n_classes=3, dims=(6, 5), val_per_class=8, seed=4)


def make_vector(dataset, n=N_ENVS, **kwargs):
    return BatchedMultimodalALVectorEnv(dataset, PROTOCOL, n, **{"learner": LEARNER, **kwargs})


def make_singles(dataset, n=N_ENVS, **kwargs):
    return [MultimodalALEnv(dataset, PROTOCOL, **{"learner": LEARNER, **kwargs}) for _ in range(n)]


def random_actions(rng, masks):
    return np.array([rng.choice(np.flatnonzero(m)) for m in masks])


def test_spaces_are_the_single_env_spaces_batched(dataset, one_torch_thread):
    vec, single = make_vector(dataset), make_singles(dataset, 1)[0]
    assert vec.single_observation_space == single.observation_space
    assert vec.observation_space == batch_space(single.observation_space, N_ENVS)
    assert vec.action_space == spaces.MultiDiscrete([single.n_candidates] * N_ENVS)
    assert vec.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    obs, infos = vec.reset(seed=0)
    assert vec.observation_space.contains(obs)
    assert obs["candidates"].shape == (N_ENVS, single.n_candidates, len(single.candidate_columns))
    assert infos["top1"].shape == (N_ENVS,) and infos["_top1"].all()


@pytest.mark.parametrize("learner", [
    {},
    {"batch_size": 4, "warm_start": True},
    {"fusion": "ds"},
], ids=["default", "minibatch-warm", "ds"])
def test_sub_envs_replay_single_envs_with_the_same_seeds(dataset, learner, one_torch_thread):
    """Batched training gives each env the fit the single env would make: same labeled sets,
    same accuracies, same rewards, observations equal up to float rounding."""
    vec = make_vector(dataset, learner={**LEARNER, **learner})
    singles = make_singles(dataset, learner={**LEARNER, **learner})
    obs, infos = vec.reset(seed=11)
    single_out = [env.reset(seed=11 + i) for i, env in enumerate(singles)]
    for i, (o, info) in enumerate(single_out):
        np.testing.assert_allclose(obs["candidates"][i], o["candidates"], atol=1e-5)
        assert infos["top1"][i] == pytest.approx(info["top1"], abs=1e-6)
    rng = np.random.default_rng(0)
    terminated = np.zeros(N_ENVS, dtype=bool)
    while not terminated.any():
        actions = random_actions(rng, vec.action_masks())
        obs, rewards, terminated, truncated, infos = vec.step(actions)
        for i, env in enumerate(singles):
            o, r, term, trunc, info = env.step(int(actions[i]))
            np.testing.assert_allclose(obs["candidates"][i], o["candidates"], atol=1e-5)
            np.testing.assert_allclose(obs["state"][i], o["state"], atol=1e-4)
            assert rewards[i] == pytest.approx(r, abs=1e-6)
            assert (terminated[i], truncated[i]) == (term, trunc)
            if "labeled_rows" in info:
                np.testing.assert_array_equal(infos["labeled_rows"][i], info["labeled_rows"])
                assert infos["top1"][i] == pytest.approx(info["top1"], abs=1e-6)
                assert infos["test_top1"][i] == pytest.approx(info["test_top1"], abs=1e-6)
    assert terminated.all()
    for i, env in enumerate(singles):
        np.testing.assert_array_equal(vec.envs[i].labeled_rows, env.labeled_rows)


def test_action_masks_are_per_env_and_follow_picks(dataset, one_torch_thread):
    vec = make_vector(dataset)
    obs, _ = vec.reset(seed=3)
    masks = vec.action_masks()
    assert masks.shape == (N_ENVS, vec.envs[0].n_candidates) and masks.dtype == bool
    np.testing.assert_array_equal(masks, obs["action_mask"].astype(bool))
    before = masks.copy()
    actions = np.array([0, 1, 2])
    obs, *_ = vec.step(actions)
    masks = vec.action_masks()
    for i, a in enumerate(actions):
        assert not masks[i, a] and masks[i].sum() == before[i].sum() - 1
    np.testing.assert_array_equal(masks, obs["action_mask"].astype(bool))


def test_masked_pick_raises(dataset, one_torch_thread):
    vec = make_vector(dataset)
    vec.reset(seed=3)
    vec.step(np.array([0, 0, 0]))
    with pytest.raises(ValueError, match="already picked"):
        vec.step(np.array([1, 0, 1]))


def test_a_bad_action_for_one_sub_env_records_no_pick_in_any(dataset, one_torch_thread):
    vec = make_vector(dataset)
    vec.reset(seed=3)
    vec.step(np.array([0, 0, 0]))
    before = vec.action_masks().copy()
    with pytest.raises(ValueError, match="sub-env 1: candidate 0 was already picked"):
        vec.step(np.array([1, 0, 1]))
    np.testing.assert_array_equal(vec.action_masks(), before)
    vec.step(np.array([1, 1, 1]))  # the same round goes on with valid picks


def test_termination_and_next_step_autoreset_match_sync_vector_env(dataset, one_torch_thread):
    """gymnasium's SyncVectorEnv over single envs is the reference for the vector semantics:
    termination, next-step autoreset (action ignored, reward 0) and the reset observation."""
    vec = make_vector(dataset)
    sync = gym.vector.SyncVectorEnv([lambda: make_singles(dataset, 1)[0] for _ in range(N_ENVS)])
    obs_v, _ = vec.reset(seed=21)
    obs_s, _ = sync.reset(seed=21)
    rng = np.random.default_rng(1)
    steps = PROTOCOL["rounds"] * PROTOCOL["per_round"]
    for t in range(steps + 2):
        actions = random_actions(rng, obs_s["action_mask"])
        obs_v, r_v, term_v, trunc_v, info_v = vec.step(actions)
        obs_s, r_s, term_s, trunc_s, info_s = sync.step(actions)
        np.testing.assert_array_equal(term_v, term_s)
        np.testing.assert_array_equal(trunc_v, trunc_s)
        np.testing.assert_allclose(r_v, r_s, atol=1e-6)
        np.testing.assert_allclose(obs_v["candidates"], obs_s["candidates"], atol=1e-5)
        np.testing.assert_array_equal(obs_v["action_mask"], obs_s["action_mask"])
        assert set(info_v) == set(info_s)
        if t == steps - 1:
            assert term_v.all()
        if t == steps:  # the autoreset step: back to round 0
            assert not term_v.any() and (r_v == 0).all()
            assert (info_v["round"] == 0).all() and (info_v["labeled"] == PROTOCOL["initial_labels"]).all()


def test_reset_mask_resets_only_the_masked_envs(dataset, one_torch_thread):
    vec = make_vector(dataset)
    vec.reset(seed=5)
    vec.step(np.array([0, 0, 0]))
    before = [env.episode_seed for env in vec.envs]
    obs, infos = vec.reset(seed=50, options={"reset_mask": np.array([False, True, False])})
    assert [env.episode_seed for env in vec.envs][0::2] == before[0::2]
    assert vec.envs[1].episode_seed != before[1]
    np.testing.assert_array_equal(infos["_top1"], [False, True, False])
    assert obs["action_mask"][1][0] == 1 and obs["action_mask"][0][0] == 0  # only env 0 keeps its pick


def test_seeds_per_env_and_reproducible(dataset, one_torch_thread):
    a, b = make_vector(dataset, n=2), make_vector(dataset, n=2)
    obs_a, _ = a.reset(seed=[7, 8])
    obs_b, _ = b.reset(seed=7)
    np.testing.assert_array_equal(obs_a["candidates"], obs_b["candidates"])
    assert a.envs[0].episode_seed != a.envs[1].episode_seed


def test_sub_env_learners_are_trained_and_usable_by_strategies(dataset, one_torch_thread):
    from rlmba_env.strategies import make_strategy

    vec, single = make_vector(dataset, n=2), make_singles(dataset, 1)[0]
    vec.reset(seed=9)
    single.reset(seed=9)
    for (name, p), q in zip(vec.envs[0].learner.net.named_parameters(), single.learner.net.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), atol=1e-6, err_msg=name)
    rows = make_strategy("badge").select(vec.envs[1].pool_state(), 3, np.random.default_rng(0))
    assert len(set(rows.tolist())) == 3


def test_from_env_id_builds_the_registered_env(one_torch_thread):
    vec = BatchedMultimodalALVectorEnv.from_env_id(
        "RLMBA-Synthetic-v0", 2, dataset={"n_samples": 240, "n_classes": 3, "dims": 4, "val_per_class": 5},
        learner=LEARNER, **PROTOCOL)
    obs, _ = vec.reset(seed=0)
    assert obs["candidates"].shape[:2] == (2, vec.envs[0].config.candidate_count(PROTOCOL["per_round"]))
    assert vec.envs[0].dataset is vec.envs[1].dataset
    assert vec.envs[0].data.features is vec.envs[1].data.features  # one copy of the data on the device


def test_bfloat16_envs_infer_in_one_batch_like_each_learner(dataset, one_torch_thread):
    vec = make_vector(dataset, precision="bfloat16")
    obs, _ = vec.reset(seed=0)
    features = vec.envs[0].data.features
    assert all(x.dtype == torch.bfloat16 for x in features.values())
    batched = predict_learners([env.learner for env in vec.envs], features)
    for i, env in enumerate(vec.envs):
        torch.testing.assert_close(batched[i], env.learner.predict(features), rtol=1e-2, atol=1e-2)
    rng = np.random.default_rng(0)
    terminated = np.zeros(N_ENVS, dtype=bool)
    while not terminated.any():
        obs, _, terminated, _, infos = vec.step(random_actions(rng, vec.action_masks()))
        assert vec.observation_space.contains(obs)
    assert terminated.all()


def test_from_env_id_keeps_every_setting_including_precision(one_torch_thread):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # emulated bfloat16 on this CPU
        vec = BatchedMultimodalALVectorEnv.from_env_id(
            "RLMBA-Synthetic-v0", 2, dataset={"n_samples": 240, "n_classes": 3, "dims": 4, "val_per_class": 5},
            learner=LEARNER, precision="bfloat16", kmeans_iterations=2, **PROTOCOL)
    for env in vec.envs:
        assert env.config.precision == "bfloat16" and env.config.kmeans_iterations == 2
        assert all(x.dtype == torch.bfloat16 for x in env.data.features.values())


def test_make_vec_with_the_vector_entry_point_steps_as_sub_envs_made_one_by_one(one_torch_thread):
    kwargs = {"dataset": {"n_samples": 240, "n_classes": 3, "dims": 4, "val_per_class": 5},
              "learner": LEARNER, **PROTOCOL}
    vec = gym.make_vec("RLMBA-Synthetic-v0", num_envs=N_ENVS, vectorization_mode="vector_entry_point", **kwargs)
    assert isinstance(vec, BatchedMultimodalALVectorEnv) and vec.num_envs == N_ENVS
    singles = [gym.make("RLMBA-Synthetic-v0", **kwargs) for _ in range(N_ENVS)]
    obs, _ = vec.reset(seed=5)
    for i, env in enumerate(singles):
        o, _ = env.reset(seed=5 + i)
        np.testing.assert_allclose(obs["candidates"][i], o["candidates"], atol=1e-5)
    rng = np.random.default_rng(2)
    for _ in range(PROTOCOL["per_round"] * PROTOCOL["rounds"]):
        actions = random_actions(rng, vec.action_masks())
        obs, rewards, terminated, _, infos = vec.step(actions)
        for i, env in enumerate(singles):
            o, r, term, _, info = env.step(int(actions[i]))
            np.testing.assert_allclose(obs["state"][i], o["state"], atol=1e-4)
            assert rewards[i] == pytest.approx(r, abs=1e-6) and terminated[i] == term
    assert terminated.all()
    for i, env in enumerate(singles):
        np.testing.assert_array_equal(vec.envs[i].labeled_rows, env.unwrapped.labeled_rows)
