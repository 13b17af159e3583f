import json

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import rlmba_env  # noqa: F401
from rlmba_env import MultimodalALEnv
from rlmba_env.data.dataset import DatasetError
from rlmba_env.observation import CANDIDATE_COLUMNS, STATE_ENTRIES
from rlmba_env.protocols import initial_rows


def _first_allowed(obs):
    return int(np.flatnonzero(obs["action_mask"])[0])


def _random_episode(env, seed, rng_seed=0):
    """Play one episode with random valid picks; return every (obs, reward, info) seen."""
    rng = np.random.default_rng(rng_seed)
    obs, info = env.reset(seed=seed)
    trace = [(obs, 0.0, info)]
    while True:
        obs, reward, terminated, truncated, info = env.step(int(rng.choice(np.flatnonzero(obs["action_mask"]))))
        trace.append((obs, reward, info))
        if terminated or truncated:
            return trace, terminated, truncated


@pytest.fixture
def env(small_dataset, small_env_kwargs):
    return MultimodalALEnv(small_dataset, **{
        "protocol": {k: small_env_kwargs[k] for k in ("initial_labels", "per_round", "rounds")},
        "learner": small_env_kwargs["learner"],
    })


def test_gymnasium_check_env_passes(env):
    gym_check_env(env, skip_render_check=True)


def test_sb3_check_env_passes(env):
    sb3_check_env(env, warn=True)


def test_observation_matches_space(env):
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert obs["candidates"].shape == (6 * 4, len(CANDIDATE_COLUMNS))  # one batch per proposer
    assert env.action_space.n == 6 * 4


def test_same_seed_same_episode(env):
    a, _, _ = _random_episode(env, seed=5)
    b, _, _ = _random_episode(env, seed=5)
    assert len(a) == len(b)
    for (obs_a, r_a, info_a), (obs_b, r_b, info_b) in zip(a, b):
        for key in obs_a:
            np.testing.assert_array_equal(obs_a[key], obs_b[key])
        assert r_a == r_b
        assert info_a.keys() == info_b.keys()
        for key in info_a:
            np.testing.assert_equal(info_a[key], info_b[key])


def test_different_seeds_different_initial_labels(env):
    env.reset(seed=1)
    first = set(env.labeled_rows.tolist())
    env.reset(seed=2)
    assert set(env.labeled_rows.tolist()) != first


def test_picked_candidate_is_masked(env):
    obs, _ = env.reset(seed=0)
    pick = _first_allowed(obs)
    obs, reward, _, _, info = env.step(pick)
    assert obs["action_mask"][pick] == 0
    assert info["action_mask"][pick] == 0
    assert not env.action_masks()[pick]
    assert obs["candidates"][pick, env.candidate_columns.index("picked")] == 1.0
    assert reward == 0.0


def test_masked_pick_raises(env):
    obs, _ = env.reset(seed=0)
    pick = _first_allowed(obs)
    env.step(pick)
    with pytest.raises(ValueError, match=f"candidate {pick} was already picked this round"):
        env.step(pick)


@pytest.mark.parametrize("action", [-1, 24, 1000])
def test_out_of_range_pick_raises(env, action):
    env.reset(seed=0)
    with pytest.raises(ValueError, match=f"action {action} is out of range"):
        env.step(action)


def test_step_before_reset_raises(env):
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_round_end_pays_gain_reward_with_terms(env):
    obs, _ = env.reset(seed=0)
    before = None
    for _ in range(env.budget):
        obs, reward, terminated, _, info = env.step(_first_allowed(obs))
    terms = info["reward_terms"]
    assert set(terms) == {"top1_gain", "balance", "balance_weight"}
    assert reward == pytest.approx(terms["top1_gain"] + terms["balance_weight"] * terms["balance"])
    assert info["labeled"] == 10 + 4
    assert info["round"] == 1 and not terminated
    assert before is None


def test_absolute_reward_is_val_top1(small_dataset):
    env = MultimodalALEnv(small_dataset, {"initial_labels": 10, "per_round": 2, "rounds": 1},
                          learner={"epochs": 20, "warm_epochs": 5, "hidden": 8}, reward="absolute")
    obs, _ = env.reset(seed=0)
    for _ in range(2):
        obs, reward, terminated, _, info = env.step(_first_allowed(obs))
    assert terminated
    assert reward == info["top1"]


def test_episode_ends_terminated_with_protocol_label_count(env):
    trace, terminated, truncated = _random_episode(env, seed=3)
    assert terminated and not truncated
    assert trace[-1][2]["labeled"] == 10 + 3 * 4
    assert len(trace) - 1 == 3 * 4
    with pytest.raises(RuntimeError, match="episode ended"):
        env.step(0)


def test_label_closes_a_round_with_external_rows(env):
    env.reset(seed=0)
    unlabeled = np.setdiff1d(env.dataset.splits["pool"], env.labeled_rows)
    rows = unlabeled[-4:]
    _, _, _, _, info = env.label(rows)
    assert info["round"] == 1
    assert set(rows.tolist()) <= set(env.labeled_rows.tolist())
    np.testing.assert_array_equal(info["labeled_rows"], rows)


def test_label_rejects_bad_rows(env):
    env.reset(seed=0)
    labeled = env.labeled_rows
    with pytest.raises(ValueError, match="already labeled"):
        env.label(np.concatenate([labeled[:1], np.setdiff1d(env.dataset.splits["pool"], labeled)[:3]]))
    with pytest.raises(ValueError, match="not in the dataset's pool split"):
        env.label(np.concatenate([env.dataset.splits["test"][:1],
                                  np.setdiff1d(env.dataset.splits["pool"], labeled)[:3]]))
    with pytest.raises(ValueError, match="exactly per_round=4"):
        env.label(np.setdiff1d(env.dataset.splits["pool"], labeled)[:3])


def test_budget_larger_than_pool_raises(small_dataset):
    pool = len(small_dataset.splits["pool"])
    with pytest.raises(ValueError, match=f"needs {pool + 1} labels .* pool holds {pool} rows"):
        MultimodalALEnv(small_dataset, {"initial_labels": 1, "per_round": pool, "rounds": 1})


def test_unknown_reward_raises(small_dataset):
    with pytest.raises(ValueError, match="reward must be one of"):
        MultimodalALEnv(small_dataset, {"initial_labels": 5, "per_round": 2, "rounds": 1}, reward="nope")


def test_render_ansi_describes_the_round(small_dataset):
    env = MultimodalALEnv(small_dataset, {"initial_labels": 10, "per_round": 2, "rounds": 1},
                          learner={"epochs": 10, "hidden": 8}, render_mode="ansi")
    env.reset(seed=0)
    text = env.render()
    assert "round 0/1" in text and "10 labeled" in text and "balance" in text


def test_registered_synthetic_env_makes_and_steps():
    env = gym.make("RLMBA-Synthetic-v0", dataset={"n_samples": 300, "n_classes": 3, "val_per_class": 5},
                   initial_labels=6, per_round=2, rounds=1, learner={"epochs": 10, "hidden": 8})
    obs, _ = env.reset(seed=0)
    obs, _, _, _, _ = env.step(_first_allowed(obs))
    obs, _, terminated, _, _ = env.step(_first_allowed(obs))
    assert terminated


def test_features_env_runs_any_saved_dataset_with_three_modalities(tmp_path):
    from rlmba_env.data.synthetic import make_synthetic

    make_synthetic(n_samples=300, n_classes=3, n_modalities=3, dims=(4, 5, 6),
                   val_per_class=5).save(tmp_path / "three")
    env = gym.make("RLMBA-Features-v0", path=str(tmp_path / "three"), initial_labels=6, per_round=2,
                   rounds=1, learner={"epochs": 10, "hidden": 8})
    obs, _ = env.reset(seed=0)
    assert obs["candidates"].shape[1] == len(CANDIDATE_COLUMNS)
    assert obs["state"].shape == (len(STATE_ENTRIES),)
    gym_check_env(env.unwrapped, skip_render_check=True)


def test_features_env_on_malformed_cache_names_the_problem(tmp_path):
    from rlmba_env.data.synthetic import make_synthetic

    make_synthetic(n_samples=300, n_classes=3, val_per_class=5).save(tmp_path / "c")
    feats = dict(np.load(tmp_path / "c" / "features.npz"))
    feats["m1"][42, 1] = np.inf
    np.savez(tmp_path / "c" / "features.npz", **feats)
    with pytest.raises(DatasetError, match=r"features\['m1'\] .* row 42"):
        gym.make("RLMBA-Features-v0", path=str(tmp_path / "c"))


@pytest.mark.parametrize("env_id,key", [("RLMBA-Food101-v0", "food101"),
                                         ("RLMBA-KineticsSound-v0", "kinetics_sound"),
                                         ("RLMBA-VGGSound-v0", "vggsound")])
def test_real_dataset_without_cache_says_where_and_how(tmp_path, env_id, key):
    with pytest.raises(FileNotFoundError, match=f"no {key} feature cache under {tmp_path / key}.*rlmba prepare {key} --raw"):
        gym.make(env_id, data_root=str(tmp_path))


def test_real_dataset_reads_cache_under_data_root_with_paper_protocol(tmp_path, monkeypatch):
    from rlmba_env.data.synthetic import make_synthetic

    make_synthetic(n_samples=3000, n_classes=3, val_per_class=5).save(tmp_path / "food101")
    monkeypatch.setenv("RLMBA_DATA", str(tmp_path))
    env = gym.make("RLMBA-Food101-v0", initial_labels=10, rounds=1, per_round=2,
                   learner={"epochs": 5, "hidden": 8})
    assert env.unwrapped.protocol.per_round == 2
    with pytest.raises(ValueError, match="needs 7000 labels"):
        gym.make("RLMBA-Food101-v0")


def test_action_space_sample_draws_only_allowed_candidates(env):
    obs, _ = env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(env.budget - 1):
        action = env.action_space.sample()
        assert obs["action_mask"][action] == 1
        obs, *_ = env.step(action)
    allowed = set(np.flatnonzero(obs["action_mask"]).tolist())
    assert {int(env.action_space.sample()) for _ in range(50)} <= allowed


def test_sb3_check_env_passes_repeatedly_despite_masked_random_steps(env):
    for _ in range(3):
        sb3_check_env(env, warn=False)


def test_relative_reward_subtracts_the_cached_reference_curve(small_dataset, tmp_path):
    kwargs = dict(protocol={"initial_labels": 10, "per_round": 3, "rounds": 2},
                  learner={"epochs": 10, "hidden": 8}, reward="relative",
                  reference_strategies=("random", "entropy"), reference_cache=str(tmp_path))
    env = MultimodalALEnv(small_dataset, **kwargs)
    obs, _ = env.reset(seed=4)
    cached = list(tmp_path.glob("*.json"))
    assert len(cached) == 1
    reference = json.loads(cached[0].read_text())
    assert len(reference["per_strategy"]) == 2 and len(reference["curve"]) == 3
    for _ in range(3):
        obs, reward, _, _, info = env.step(env.action_space.sample())
    terms = info["reward_terms"]
    assert terms["reference_top1"] == pytest.approx(reference["curve"][1])
    assert reward == pytest.approx(terms["top1"] - terms["reference_top1"])

    # a second env with the same settings and seed reads the curve instead of replaying it
    again = MultimodalALEnv(small_dataset, **kwargs)
    mtime = cached[0].stat().st_mtime_ns
    again.reset(seed=4)
    assert cached[0].stat().st_mtime_ns == mtime and len(list(tmp_path.glob("*.json"))) == 1


def test_relative_reference_replays_the_agents_episode(small_dataset, tmp_path):
    """The reference strategy starts from the agent's labeled set: round 0 top-1 matches."""
    env = MultimodalALEnv(small_dataset, {"initial_labels": 10, "per_round": 3, "rounds": 1},
                          learner={"epochs": 10, "hidden": 8}, reward="relative",
                          reference_cache=str(tmp_path))
    _, info = env.reset(seed=9)
    reference = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert reference["curve"][0] == pytest.approx(info["top1"])


def test_round_callbacks_see_every_closed_round_from_step_and_label(env):
    seen = []
    env.round_callbacks.append(lambda info: seen.append(info["round"]))
    obs, _ = env.reset(seed=0)
    for _ in range(env.budget):
        obs, *_ = env.step(env.action_space.sample())
    env.label(np.setdiff1d(env.dataset.splits["pool"], env.labeled_rows)[:env.budget])
    assert seen == [1, 2]


def test_stratified_initial_set_holds_every_class(small_dataset):
    env = MultimodalALEnv(small_dataset, {"initial_labels": 6, "per_round": 4, "rounds": 1},
                          learner={"epochs": 2, "hidden": 4}, initial="stratified")
    for seed in range(5):
        env.reset(seed=seed)
        assert len(env.labeled_rows) == 6
        assert set(small_dataset.labels[env.labeled_rows].tolist()) == set(range(small_dataset.n_classes))
    assert env.describe()["initial"] == "stratified"


def test_stratified_initial_set_same_seed_same_rows(small_dataset):
    env = MultimodalALEnv(small_dataset, {"initial_labels": 3, "per_round": 4, "rounds": 1},
                          learner={"epochs": 2, "hidden": 4}, initial="stratified")
    env.reset(seed=4)
    first = env.labeled_rows.copy()
    # fewer labels than classes: one row of each of 3 different classes
    assert len(set(small_dataset.labels[first].tolist())) == 3
    env.reset(seed=4)
    np.testing.assert_array_equal(env.labeled_rows, first)


def test_stratified_initial_set_does_not_treat_unknown_labels_as_a_class():
    pool = np.arange(40)
    labels = np.where(pool < 30, -1, pool % 3)  # 30 unlabeled rows, 10 of classes 0-2
    for seed in range(10):
        rows = initial_rows(np.random.default_rng(seed), pool, labels, 3, "stratified")
        assert sorted(labels[rows].tolist()) == [0, 1, 2]


def test_unknown_setting_names_itself_and_the_settings_there_are(small_dataset):
    with pytest.raises(TypeError, match=r"unknown env setting\(s\) \['kapa'\]; the settings are \[.*'kappa'"):
        MultimodalALEnv(small_dataset, {"initial_labels": 6, "per_round": 4, "rounds": 1}, kapa=3)


def test_unknown_initial_set_raises(small_dataset):
    with pytest.raises(ValueError, match="initial must be one of"):
        MultimodalALEnv(small_dataset, {"initial_labels": 6, "per_round": 4, "rounds": 1}, initial="balanced")


def test_info_names_the_fused_subset(env):
    _, info = env.reset(seed=0)
    assert set(info["fusion_subset"]) <= set(env.modalities) and info["fusion_subset"]
    for m in env.modalities:
        assert info[f"fused_{m}"] == float(m in info["fusion_subset"])
        assert (info[f"weight_{m}"] > 0) == (m in info["fusion_subset"])
