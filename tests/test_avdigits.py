import re
import shutil

import numpy as np
import pytest
from sklearn.datasets import load_digits

from rlmba_env.data import avdigits
from rlmba_env.data.avdigits import load_avdigits, load_avdigits_audio, pair_clips_with_images
from rlmba_env.data.dataset import DatasetError


@pytest.fixture(scope="module")
def ds():
    return load_avdigits()


@pytest.fixture(scope="module")
def audio():
    return load_avdigits_audio()


@pytest.fixture(scope="module")
def pairing(audio):
    # load_avdigits(seed=0) draws its pairing first from default_rng(0) with these defaults.
    return pair_clips_with_images(audio["labels"], audio["voice"], load_digits().target,
                                  np.random.default_rng(0))


def test_shipped_audio_file_is_small_and_loads_without_pickle(audio):
    assert avdigits.AUDIO_FILE.stat().st_size <= 5_000_000
    assert audio["features"].shape[0] == audio["labels"].shape[0] == audio["voice"].shape[0]
    assert audio["settings"]["sample_rate"] == 16_000


def test_modalities_shapes_and_dtypes(ds, audio):
    assert ds.name == "avdigits"
    assert ds.modalities == ("image", "audio")
    assert ds.classes == [str(d) for d in range(10)]
    assert ds.n_samples == audio["features"].shape[0]
    assert ds.feature_dims == {"image": 64, "audio": audio["features"].shape[1]}
    assert all(x.dtype == np.float32 for x in ds.features.values())
    assert ds.labels.dtype == np.int64


def test_splits_are_disjoint_and_cover_every_sample(ds):
    rows = np.concatenate([ds.splits[s] for s in ("pool", "val", "test")])
    assert np.array_equal(np.sort(rows), np.arange(ds.n_samples))


def test_load_uses_the_documented_pairing(ds, pairing):
    for s in ("pool", "val", "test"):
        assert np.array_equal(ds.splits[s], pairing.splits[s])


def test_test_split_uses_only_held_out_voices(ds, audio):
    voice_names = np.array(audio["voice_names"])
    test_voices = set(voice_names[audio["voice"][ds.splits["test"]]])
    train_voices = set(voice_names[audio["voice"][np.concatenate([ds.splits["pool"],
                                                                  ds.splits["val"]])]])
    assert test_voices == set(ds.meta["test_voices"])
    assert not test_voices & train_voices


def test_test_split_uses_only_held_out_images(ds, pairing):
    train = np.concatenate([ds.splits["pool"], ds.splits["val"]])
    assert np.isin(pairing.image_index[ds.splits["test"]], pairing.test_images).all()
    assert not np.isin(pairing.image_index[train], pairing.test_images).any()


def test_every_clip_is_paired_with_a_same_class_image(ds, pairing):
    assert np.array_equal(load_digits().target[pairing.image_index], ds.labels)


def test_val_is_stratified(ds):
    counts = np.bincount(ds.labels[ds.splits["val"]], minlength=ds.n_classes)
    assert (counts == 30).all()


def test_same_seed_gives_identical_features():
    a, b = load_avdigits(seed=3), load_avdigits(seed=3)
    for m in a.modalities:
        assert np.array_equal(a.features[m], b.features[m])
    for s in a.splits:
        assert np.array_equal(a.splits[s], b.splits[s])


def test_different_seed_gives_different_noise():
    a, b = load_avdigits(seed=0), load_avdigits(seed=1)
    assert not np.array_equal(a.features["image"], b.features["image"])


def test_zero_noise_gives_clean_images_in_unit_range(pairing):
    ds = load_avdigits(image_noise=0.0)
    image = ds.features["image"]
    assert image.min() >= 0.0 and image.max() <= 1.0
    clean = (load_digits().data / 16.0).astype(np.float32)
    assert np.array_equal(image, clean[pairing.image_index])


def test_noise_level_does_not_move_the_splits(ds):
    clean = load_avdigits(image_noise=0.0)
    for s in ds.splits:
        assert np.array_equal(ds.splits[s], clean.splits[s])


def test_negative_noise_raises():
    with pytest.raises(ValueError, match="image_noise"):
        load_avdigits(image_noise=-0.1)


def test_sha256_mismatch_raises_naming_the_file(monkeypatch):
    monkeypatch.setattr(avdigits, "AUDIO_SHA256", "0" * 64)
    with pytest.raises(DatasetError) as err:
        load_avdigits()
    msg = str(err.value)
    assert str(avdigits.AUDIO_FILE) in msg and "0" * 64 in msg
    assert "make_avdigits_audio.py" in msg


def test_tampered_copy_raises(tmp_path):
    copy = tmp_path / "avdigits_audio.npz"
    shutil.copy(avdigits.AUDIO_FILE, copy)
    with open(copy, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(DatasetError, match=re.escape(str(copy))):
        load_avdigits_audio(copy)


def test_missing_file_raises_with_regenerate_command(tmp_path):
    with pytest.raises(DatasetError, match="make_avdigits_audio.py"):
        load_avdigits_audio(tmp_path / "absent.npz")
