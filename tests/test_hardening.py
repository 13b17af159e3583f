"""Hardening (issue 15): nothing lost, nothing silently wrong, one clear error per bad input."""

import json
import os
import stat
import zipfile

import gymnasium as gym
import numpy as np
import pytest

from rlmba_env.data.cache import FEATURES_FILE
from rlmba_env.data.dataset import DatasetError, MultimodalDataset, load_dataset
from rlmba_env.env import MultimodalALEnv

TINY_LEARNER = {"epochs": 4, "warm_epochs": 2, "hidden": 8}


def tiny_dataset(n=60, scale=1.0, modalities=("a", "b"), seed=0):
    rng = np.random.default_rng(seed)
    idx = rng.permutation(n)
    return MultimodalDataset(
        features={m: (rng.standard_normal((n, 3 + i)) * (scale if i == 0 else 1)).astype(np.float32)
                  for i, m in enumerate(modalities)},
        labels=np.arange(n) % 3,
        splits={"pool": idx[:30], "val": idx[30:45], "test": idx[45:]},
        classes=["x", "y", "z"],
    )


def play_to_the_end(env, seed=0):
    obs, _ = env.reset(seed=seed)
    rewards, terminated = [], False
    while not terminated:
        obs, reward, terminated, _, info = env.step(int(np.flatnonzero(obs["action_mask"])[0]))
        assert env.observation_space.contains(obs)
        rewards.append(reward)
    return obs, rewards, info


# -- 1 and 11: saving a cache -------------------------------------------------------------------
def test_overwrite_never_replaces_a_folder_that_is_not_a_cache(tmp_path):
    (tmp_path / "keep.txt").write_text("my notes")
    with pytest.raises(FileExistsError, match="not a feature cache"):
        tiny_dataset().save(tmp_path, overwrite=True)
    assert (tmp_path / "keep.txt").read_text() == "my notes"


def test_overwrite_replaces_an_earlier_cache(tmp_path):
    tiny_dataset(seed=0).save(tmp_path / "c")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        tiny_dataset(seed=1).save(tmp_path / "c")
    tiny_dataset(seed=1).save(tmp_path / "c", overwrite=True)
    assert load_dataset(tmp_path / "c").fingerprint() == tiny_dataset(seed=1).fingerprint()
    assert [p.name for p in tmp_path.iterdir()] == ["c"]  # no temporary or old folder left


def test_cache_folder_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        tiny_dataset().save(tmp_path / "c")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "c" / FEATURES_FILE).stat().st_mode) == 0o644


# -- 10: loading a damaged or odd cache ---------------------------------------------------------
def test_a_modality_named_like_a_numpy_argument_round_trips(tmp_path):
    ds = tiny_dataset(modalities=("file", "allow_pickle"))
    ds.save(tmp_path / "c")
    assert load_dataset(tmp_path / "c").fingerprint() == ds.fingerprint()


@pytest.mark.parametrize("name", ["", "a/b"])
def test_a_modality_name_that_cannot_name_a_file_is_refused(name):
    with pytest.raises(DatasetError, match="modality name"):
        tiny_dataset(modalities=(name, "b"))


def test_damaged_npy_header_is_a_dataset_error_naming_the_file(tmp_path):
    tiny_dataset().save(tmp_path / "c")
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': ((60, 3), }"  # unbalanced
    header += b" " * (117 - len(header)) + b"\n"
    with zipfile.ZipFile(tmp_path / "c" / FEATURES_FILE, "w") as zf:
        zf.writestr("a.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header)
    with pytest.raises(DatasetError, match=r"features.npz in cache .* is unreadable \(TokenError"):
        load_dataset(tmp_path / "c")


def test_format_version_as_a_string_says_so(tmp_path):
    tiny_dataset().save(tmp_path / "c")
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    (tmp_path / "c" / "meta.json").write_text(json.dumps({**meta, "format_version": "1"}))
    with pytest.raises(DatasetError, match=r"format_version '1' \(str\); this rlmba reads the integer 1"):
        load_dataset(tmp_path / "c")


# -- 7: a protocol that labels the whole pool ---------------------------------------------------
def test_protocol_labelling_the_whole_pool_runs_to_the_end():
    env = MultimodalALEnv(tiny_dataset(), {"initial_labels": 10, "per_round": 5, "rounds": 4},
                          learner=TINY_LEARNER)
    obs, rewards, info = play_to_the_end(env)
    # candidate_rows is padded with -1 to K entries: no candidate is left
    assert info["labeled"] == 30 and (info["candidate_rows"] == -1).all()
    assert not obs["action_mask"].any() and np.isfinite(rewards).all()


def test_protocol_labelling_the_whole_pool_runs_to_the_end_in_the_batched_vector_env():
    from rlmba_env.vector import BatchedMultimodalALVectorEnv

    envs = BatchedMultimodalALVectorEnv(tiny_dataset(), {"initial_labels": 20, "per_round": 5, "rounds": 2},
                                        n_envs=2, learner=TINY_LEARNER)
    envs.reset(seed=0)
    for _ in range(10):
        actions = [int(np.flatnonzero(mask)[0]) for mask in envs.action_masks()]
        obs, rewards, terminated, _, _ = envs.step(np.array(actions))
        assert np.isfinite(rewards).all() and np.isfinite(obs["state"]).all()
    assert terminated.all()


# -- 8: huge but finite features ----------------------------------------------------------------
def test_features_beyond_the_float32_statistics_range_are_refused_naming_the_modality():
    with pytest.raises(DatasetError, match=r"features\['a'\] row \d+ holds .*must lie within"):
        tiny_dataset(scale=3e38 / 4)


def test_large_features_within_the_limit_play_a_finite_episode():
    env = MultimodalALEnv(tiny_dataset(scale=2e14), {"initial_labels": 10, "per_round": 5, "rounds": 2},
                          learner=TINY_LEARNER)
    _, rewards, info = play_to_the_end(env)
    assert np.isfinite(rewards).all() and np.isfinite(info["top1"])


# -- 6: a damaged reference cache ---------------------------------------------------------------
@pytest.mark.parametrize("damage", [
    lambda text: text[: len(text) // 2],                                      # truncated JSON
    lambda text: json.dumps({**json.loads(text), "curve": [float("nan")] * 3}),  # NaN
    lambda text: json.dumps({**json.loads(text), "curve": [0.5]}),             # too short
])
def test_damaged_reference_cache_is_recomputed_with_a_warning(tmp_path, damage):
    kwargs = dict(protocol={"initial_labels": 10, "per_round": 3, "rounds": 2}, learner=TINY_LEARNER,
                  reward="relative", reference_cache=str(tmp_path))
    MultimodalALEnv(tiny_dataset(), **kwargs).reset(seed=4)
    (path,) = tmp_path.glob("*.json")
    good = json.loads(path.read_text())["curve"]
    path.write_text(damage(path.read_text()))
    env = MultimodalALEnv(tiny_dataset(), **kwargs)
    with pytest.warns(UserWarning, match=f"reference cache {path}.*recomputing"):
        env.reset(seed=4)
    assert json.loads(path.read_text())["curve"] == good
    _, rewards, _ = play_to_the_end(env, seed=4)
    assert np.isfinite(rewards).all()


# -- 10: dataset generator arguments ------------------------------------------------------------
@pytest.mark.parametrize("kwargs, name", [
    ({"n_classes": 1}, "n_classes"), ({"seed": -1}, "seed"), ({"noise": float("nan")}, "noise"),
    ({"dims": 0}, "dims"), ({"test_fraction": 1.5}, "test_fraction"), ({"n_samples": 2.5}, "n_samples"),
    ({"n_samples": 100, "n_classes": 3, "val_per_class": 5, "test_fraction": 0.01}, "test_fraction"),
])
def test_bad_synthetic_arguments_name_the_argument(kwargs, name):
    from rlmba_env.data.synthetic import make_synthetic

    with pytest.raises(ValueError, match=rf"^{name}=.* is not allowed; {name} must be"):
        make_synthetic(**kwargs)


def test_negative_avdigits_seed_names_the_argument():
    from rlmba_env.data.avdigits import load_avdigits

    with pytest.raises(ValueError, match="seed=-1 is not allowed; seed must be an integer >= 0"):
        load_avdigits(seed=-1)


# -- 5 and 10: env arguments, checked once at gym.make -----------------------------------------
SMALL = {"dataset": {"n_samples": 60, "n_classes": 3, "val_per_class": 3}, "initial_labels": 4,
         "per_round": 2, "rounds": 1, "learner": {"epochs": 2, "hidden": 4}}


@pytest.mark.parametrize("kwargs, name", [
    ({"beta": float("nan")}, "beta"), ({"balance_weight": float("nan")}, "balance_weight"),
    ({"learner": {"epochs": 0}}, "epochs"), ({"learner": {"epochs": -5}}, "epochs"),
    ({"learner": {"hidden": 0}}, "hidden"), ({"learner": {"lr": -1}}, "lr"),
    ({"learner": {"epochs": 2, "typo": 1}}, "learner"), ({"learner": "ds"}, "learner"),
    ({"kmeans_iterations": -3}, "kmeans_iterations"), ({"kappa": True}, "kappa"), ({"tau": 0}, "tau"),
    ({"epsilon": 2}, "epsilon"), ({"device": "gpu"}, "device"), ({"device": "cuda:99"}, "device"),
    ({"reference_strategies": "random"}, "reference_strategies"),
    ({"reference_strategies": ("nope",)}, "reference_strategies"),
    ({"precision": "float16"}, "precision"), ({"reward": "score"}, "reward"),
    ({"initial_labels": 0}, "initial_labels"), ({"rounds": 1.5}, "rounds"),
    ({"dataset": {"n_classes": 1}}, "n_classes"),
])
def test_bad_env_argument_fails_at_make_naming_it(kwargs, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b.*is not allowed|{name}.*must be"):
        gym.make("RLMBA-Synthetic-v0", **{**SMALL, **kwargs})


@pytest.mark.parametrize("kwargs, name", [({"dataset_seed": -1}, "dataset_seed"),
                                          ({"image_noise": float("nan")}, "image_noise")])
def test_bad_avdigits_argument_fails_at_make_naming_it(kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name}=.* is not allowed"):
        gym.make("RLMBA-AVDigits-v0", **kwargs)


def test_cuda_without_a_gpu_is_refused_naming_the_device(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device='cuda' is not allowed.*no CUDA device"):
        gym.make("RLMBA-Synthetic-v0", **SMALL, device="cuda")


@pytest.fixture
def small_env():
    return gym.make("RLMBA-Synthetic-v0", **SMALL).unwrapped


@pytest.mark.parametrize("action", [float("nan"), float("inf"), -float("inf"), 1.5, "0", None, [0, 1]])
def test_a_non_integer_action_is_refused_naming_it(small_env, action):
    small_env.reset(seed=0)
    with pytest.raises(ValueError, match="action must be one integer candidate position"):
        small_env.step(action)


def test_action_masks_before_reset_says_to_reset(small_env):
    with pytest.raises(RuntimeError, match=r"call reset\(\) before action_masks\(\)"):
        small_env.action_masks()


@pytest.mark.parametrize("options, name", [("x", "options"), ({"episode-seed": 3}, "options"),
                                           ({"episode_seed": 1.7}, "episode_seed"),
                                           ({"episode_seed": -1}, "episode_seed"),
                                           ({"episode_seed": None}, "episode_seed")])
def test_bad_reset_options_are_refused_naming_them(small_env, options, name):
    with pytest.raises(ValueError, match=rf"^{name}"):
        small_env.reset(seed=0, options=options)
