"""``rlmba prepare``: raw layouts on disk -> feature cache -> the registered env ids play on it."""

import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import rlmba_env  # noqa: F401
from raw_fixtures import make_audiovisual, make_food101, truncate
from agents.cli import main
from rlmba_env.data import prepare as prepare_module
from rlmba_env.data.cache import is_cache
from rlmba_env.data.dataset import load_dataset
from rlmba_env.data.kinetics_sound import list_kinetics_sound
from rlmba_env.data.prepare import PrepareConfig, carve_val, prepare, work_dir
from rlmba_env.data.raw import PrepareError

# Nothing is downloaded (random ResNet, TF-IDF), images are small, batches tiny.
FAST = {"weights": "none", "image_size": 64, "batch_size": 4, "val_per_class": 1, "frames": 2,
        "progress": False}
EPISODE = {"initial_labels": 3, "per_round": 2, "rounds": 2, "learner": {"epochs": 10, "hidden": 8},
           "render_mode": "ansi"}


def _prepare(dataset, raw, out, **kw):
    return prepare(PrepareConfig(dataset=dataset, raw=raw, out=out, **{**FAST, **kw}))


def _report(cache):
    return json.loads((cache / "prepare_report.json").read_text())


def _play_one_episode(env_id, data_root):
    env = gym.make(env_id, data_root=str(data_root), **EPISODE)
    rng = np.random.default_rng(0)
    obs, info = env.reset(seed=0)
    terminated = truncated = False
    while not (terminated or truncated):
        obs, reward, terminated, truncated, info = env.step(int(rng.choice(np.flatnonzero(obs["action_mask"]))))
    assert terminated and info["labeled"] == 3 + 2 * 2
    return env.unwrapped


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # Batches of a few 64 px images gain nothing from intra-op threads, and on two shared cores
    # OpenMP threads waiting on each other made a ResNet forward 20x slower than one thread.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def food_raw(tmp_path_factory):
    return make_food101(tmp_path_factory.mktemp("raw") / "UPMC_Food101", corrupt_image=True, missing_text=True)


@pytest.fixture(scope="module")
def food_root(tmp_path_factory, food_raw):
    root = tmp_path_factory.mktemp("data")
    _prepare("food101", food_raw, root / "food101")
    return root


@pytest.fixture(scope="module")
def ks_raw(tmp_path_factory):
    return make_audiovisual(tmp_path_factory.mktemp("raw") / "ks", "kinetics_sound",
                            truncated_wav=True, silent_wav=True, bad_frame=True)


@pytest.fixture(scope="module")
def ks_root(tmp_path_factory, ks_raw):
    root = tmp_path_factory.mktemp("data")
    _prepare("kinetics_sound", ks_raw, root / "kinetics_sound")
    return root


def test_food101_text_files_layout_gives_a_cache_the_env_plays(food_root):
    ds = load_dataset(food_root / "food101")
    assert ds.modalities == ("image", "text") and ds.classes == ["apple_pie", "caesar_salad", "ramen"]
    assert ds.feature_dims["image"] == 512
    assert {k: len(v) for k, v in ds.splits.items()} == {"pool": 19, "val": 3, "test": 6}
    assert set(ds.meta["encoders"]) == {"image", "text"}
    assert "random init" in ds.meta["encoders"]["image"] and "TF-IDF" in ds.meta["encoders"]["text"]
    env = _play_one_episode("RLMBA-Food101-v0", food_root)
    assert "TF-IDF" in env.render()  # the render names the encoders
    assert not work_dir(food_root / "food101").exists()


def test_food101_titles_csv_layout_reads_the_same_samples(tmp_path):
    raw = make_food101(tmp_path / "raw", layout="csv")
    cache = _prepare("food101", raw, tmp_path / "food101")
    ds = load_dataset(cache)
    assert ds.n_samples == 3 * (8 + 2) and _report(cache)["skipped_count"] == 0
    rows = (cache / "samples.csv").read_text().splitlines()
    assert rows[0] == "row,split,id,class" and rows[-1].startswith(f"{ds.n_samples - 1},test,test/ramen/")


def test_corrupt_image_and_missing_text_are_reported_and_skipped(food_root):
    report = _report(food_root / "food101")
    assert report["skipped_by_reason"] == {"image: unreadable": 1, "text: missing": 1}
    ids = {p["id"] for p in report["skipped"]}
    assert ids == {"train/apple_pie/apple_pie_train2.jpg", "train/caesar_salad/caesar_salad_train3.jpg"}
    assert load_dataset(food_root / "food101").n_samples == 3 * (8 + 2) - 2


def test_kinetics_sound_split_lists_give_a_cache_the_env_plays(ks_root):
    ds = load_dataset(ks_root / "kinetics_sound")
    assert ds.modalities == ("visual", "audio")
    assert ds.classes == ["playing bagpipes", "playing drums, loudly", "tapping pen"]
    assert ds.feature_dims == {"visual": 512, "audio": 384}
    assert "log-mel" in ds.meta["encoders"]["audio"] and ds.meta["preprocessing"]["audio"]["mel"]["n_mels"] == 64
    _play_one_episode("RLMBA-KineticsSound-v0", ks_root)


def test_truncated_and_silent_wavs_are_reported_and_skipped(ks_root):
    report = _report(ks_root / "kinetics_sound")
    assert report["skipped_by_reason"] == {"audio: silent": 1, "audio: truncated": 1}
    assert report["kept"] == {"train": 3 * 8 - 2, "test": 3 * 2}
    # One unreadable frame of several is replaced by another frame, kept, and noted.
    assert len(report["notes"]) == 1 and "unreadable frame" in report["notes"][0]["note"]


def test_vggsound_single_csv_with_split_subfolders_gives_a_cache_the_env_plays(tmp_path):
    raw = make_audiovisual(tmp_path / "raw", "vggsound", list_format="csv")
    _prepare("vggsound", raw, tmp_path / "root" / "vggsound", workers=2)  # decoded in loader processes
    assert load_dataset(tmp_path / "root" / "vggsound").n_samples == 3 * (8 + 2)
    _play_one_episode("RLMBA-VGGSound-v0", tmp_path / "root")


def test_clips_with_frames_and_wav_in_one_folder_per_split_are_found(tmp_path):
    raw = make_audiovisual(tmp_path / "raw", "kinetics_sound", clip_folders=True)
    listing = list_kinetics_sound(raw)
    assert [len(listing.splits[s]) for s in ("train", "test")] == [24, 6] and not listing.problems
    clip = listing.splits["test"][0]
    assert clip.inputs["visual"] == raw / "test" / clip.id and clip.inputs["audio"].parent == raw / "test" / clip.id


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("dataset", ["food101", "kinetics_sound"])
def test_interrupted_prepare_resumes_to_the_same_arrays(tmp_path, monkeypatch, dataset, food_raw, ks_raw):
    raw = food_raw if dataset == "food101" else ks_raw
    reference = load_dataset(_prepare(dataset, raw, tmp_path / "reference"))

    real_write, calls = prepare_module._write_shard, []

    def write_then_die(*args):
        if len(calls) == 5:  # the 6th shard: mid-way through the first modality's train split
            raise _Interrupt
        calls.append(1)
        real_write(*args)

    out = tmp_path / "root" / dataset
    monkeypatch.setattr(prepare_module, "_write_shard", write_then_die)
    with pytest.raises(_Interrupt):
        _prepare(dataset, raw, out)
    assert not is_cache(out) and work_dir(out).is_dir()
    with pytest.raises(FileNotFoundError, match="rlmba prepare"):
        gym.make({"food101": "RLMBA-Food101-v0", "kinetics_sound": "RLMBA-KineticsSound-v0"}[dataset],
                 data_root=str(tmp_path / "root"))
    monkeypatch.setattr(prepare_module, "_write_shard", real_write)
    resumed = load_dataset(_prepare(dataset, raw, out))
    encoded = _report(out)["timing"]["samples_encoded_this_run"]
    assert encoded < _report(tmp_path / "reference")["timing"]["samples_encoded_this_run"]  # shards were reused
    for m in reference.modalities:
        assert resumed.features[m].dtype == reference.features[m].dtype
        assert resumed.features[m].tobytes() == reference.features[m].tobytes()
    assert resumed.labels.tobytes() == reference.labels.tobytes()
    for s in reference.splits:
        np.testing.assert_array_equal(resumed.splits[s], reference.splits[s])
    assert not work_dir(out).exists()


def test_resume_with_other_settings_is_refused(tmp_path, monkeypatch, food_raw):
    monkeypatch.setattr(prepare_module, "_write_shard", lambda *a: (_ for _ in ()).throw(_Interrupt()))
    with pytest.raises(_Interrupt):
        _prepare("food101", food_raw, tmp_path / "food101")
    with pytest.raises(PrepareError, match="batch_size differ.*--fresh"):
        _prepare("food101", food_raw, tmp_path / "food101", batch_size=5)


def test_empty_test_split_fails_naming_the_split(tmp_path):
    raw = make_food101(tmp_path / "raw", empty_test=True)
    with pytest.raises(PrepareError, match="the test split would be empty"):
        _prepare("food101", raw, tmp_path / "food101")
    assert not (tmp_path / "food101").exists()


def test_split_where_no_sample_decodes_fails_and_leaves_the_report(tmp_path):
    raw = make_food101(tmp_path / "raw", test_per_class=1)
    for image in (raw / "images" / "test").rglob("*.*"):
        truncate(image)
    with pytest.raises(PrepareError, match=r"the test split would be empty.*'image: unreadable': 3"):
        _prepare("food101", raw, tmp_path / "food101")
    assert not (tmp_path / "food101").exists()
    report = json.loads((work_dir(tmp_path / "food101") / "prepare_report.json").read_text())
    assert report["kept"]["test"] == 0 and len(report["skipped"]) == 3


def test_existing_cache_is_not_overwritten_without_the_flag(tmp_path, capsys, food_raw, food_root):
    argv = ["prepare", "food101", "--raw", str(food_raw), "--out", str(food_root / "food101"),
            "--weights", "none", "--image-size", "64", "--val-per-class", "2", "--workers", "0", "--no-progress"]
    before = (food_root / "food101" / "features.npz").read_bytes()
    assert main(argv) == 1
    assert "already holds a feature cache; pass --overwrite" in capsys.readouterr().err
    assert (food_root / "food101" / "features.npz").read_bytes() == before
    out = tmp_path / "copy"
    assert main([*argv[:5], str(out), *argv[6:]]) == 0
    assert main([*argv[:5], str(out), *argv[6:], "--overwrite", "--val-per-class", "1"]) == 0
    assert len(load_dataset(out).splits["val"]) == 3


def test_text_model_without_transformers_says_how_to_install(tmp_path, monkeypatch, food_raw):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(PrepareError, match="needs the `transformers` package.*pip install transformers"):
        _prepare("food101", food_raw, tmp_path / "food101", text_model=str(tmp_path))


def test_val_is_stratified_and_leaves_each_class_in_the_pool():
    labels = np.array([0] * 10 + [1] * 4 + [2] * 1)
    pool, val = carve_val(labels, 3, seed=0)
    assert np.bincount(labels[val], minlength=3).tolist() == [3, 3, 0]
    assert np.intersect1d(pool, val).size == 0 and len(pool) + len(val) == len(labels)
    pool, val = carve_val(labels, 0.5, seed=0)
    assert np.bincount(labels[val], minlength=3).tolist() == [5, 2, 0]


def test_prepare_help_runs_as_a_command():
    out = subprocess.run([sys.executable, "-m", "agents.cli", "prepare", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "--raw DIR" in out.stdout and "kinetics_sound" in out.stdout and "--overwrite" in out.stdout


def test_val_per_class_that_would_leave_a_tiny_pool_is_refused(tmp_path, food_raw):
    with pytest.raises(PrepareError, match=r"--val-per-class 100 would leave 3 pool rows against \d+ val rows"):
        _prepare("food101", food_raw, tmp_path / "food101", val_per_class=100)
    assert not (tmp_path / "food101").exists()


def test_damaged_shard_names_the_file_and_the_ways_out(tmp_path, food_raw):
    out = tmp_path / "food101"
    _prepare("food101", food_raw, out, keep_work=True)
    (shard,) = [p for p in (work_dir(out) / "train" / "image").glob("*.npz")][:1]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(PrepareError, match=rf"{shard}.*is damaged.*delete that file.*--fresh"):
        _prepare("food101", food_raw, out, overwrite=True)
    shard.unlink()
    assert is_cache(_prepare("food101", food_raw, out, overwrite=True))
