import contextlib
import json

import numpy as np
import pytest

from rlmba_env.data.dataset import load_dataset
from rlmba_env.data.dataset import DatasetError, MultimodalDataset
from rlmba_env.data.synthetic import make_synthetic


def _arrays(n=30, k=3):
    rng = np.random.default_rng(0)
    return dict(
        features={"a": rng.standard_normal((n, 4)).astype(np.float32),
                  "b": rng.standard_normal((n, 5)).astype(np.float16)},
        labels=np.arange(n) % k,
        splits={"pool": np.arange(0, 20), "val": np.arange(20, 25), "test": np.arange(25, n)},
        classes=[f"c{i}" for i in range(k)],
    )


@contextlib.contextmanager
def tampered(tmp_path, filename):
    """Save a valid cache to tmp_path/c and rewrite one of its .npz files as the block edits it."""
    MultimodalDataset(**_arrays()).save(tmp_path / "c")
    arrays = dict(np.load(tmp_path / "c" / filename))
    yield arrays
    np.savez(tmp_path / "c" / filename, **arrays)


def test_valid_arrays_build_a_dataset():
    ds = MultimodalDataset(**_arrays())
    assert ds.modalities == ("a", "b")
    assert ds.feature_dims == {"a": 4, "b": 5}
    assert ds.labels.dtype == np.int64


def test_mismatched_rows_name_the_modality():
    arrays = _arrays()
    arrays["features"]["b"] = arrays["features"]["b"][:-1]
    with pytest.raises(DatasetError, match=r"features\['b'\] has 29 rows but labels has 30"):
        MultimodalDataset(**arrays)


def test_nan_features_name_the_first_bad_row():
    arrays = _arrays()
    arrays["features"]["a"][7, 2] = np.nan
    with pytest.raises(DatasetError, match=r"features\['a'\] row 7 has a non-finite value"):
        MultimodalDataset(**arrays)


def test_label_out_of_range_names_the_index():
    arrays = _arrays()
    arrays["labels"] = arrays["labels"].copy()
    arrays["labels"][11] = 3
    with pytest.raises(DatasetError, match=r"labels\[11\] = 3 is out of range for 3 classes"):
        MultimodalDataset(**arrays)


def test_overlapping_splits_are_rejected():
    arrays = _arrays()
    arrays["splits"]["val"] = np.array([19, 20, 21])
    with pytest.raises(DatasetError, match="share row 19"):
        MultimodalDataset(**arrays)


def test_missing_split_is_rejected():
    arrays = _arrays()
    del arrays["splits"]["test"]
    with pytest.raises(DatasetError, match="missing \\['test'\\]"):
        MultimodalDataset(**arrays)


def test_single_modality_is_rejected():
    arrays = _arrays()
    del arrays["features"]["b"]
    with pytest.raises(DatasetError, match="at least 2 modalities"):
        MultimodalDataset(**arrays)


def test_save_load_round_trip_keeps_every_array(tmp_path):
    ds = MultimodalDataset(**_arrays(), name="toy", meta={"encoders": {"a": "none"}})
    ds.save(tmp_path / "toy")
    back = load_dataset(tmp_path / "toy")
    assert back.name == "toy" and back.classes == ds.classes and back.meta == ds.meta
    for m in ds.modalities:
        np.testing.assert_array_equal(back.features[m], ds.features[m])
        assert back.features[m].dtype == ds.features[m].dtype
    np.testing.assert_array_equal(back.labels, ds.labels)
    for s in ds.splits:
        np.testing.assert_array_equal(back.splits[s], ds.splits[s])


def test_save_refuses_to_overwrite_an_existing_cache(tmp_path):
    ds = MultimodalDataset(**_arrays())
    ds.save(tmp_path / "c")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        ds.save(tmp_path / "c")
    ds.save(tmp_path / "c", overwrite=True)
    assert load_dataset(tmp_path / "c").n_samples == 30


def test_cache_with_mismatched_rows_names_the_cache(tmp_path):
    with tampered(tmp_path, "features.npz") as feats:
        feats["a"] = feats["a"][:-2]
    with pytest.raises(DatasetError, match=r"features\['a'\] \(cache .*c\) has 28 rows"):
        load_dataset(tmp_path / "c")


def test_cache_with_nan_features_is_rejected(tmp_path):
    with tampered(tmp_path, "features.npz") as feats:
        feats["b"][3, 0] = np.nan
    with pytest.raises(DatasetError, match=r"features\['b'\] \(cache .*\) row 3"):
        load_dataset(tmp_path / "c")


def test_cache_with_out_of_range_labels_is_rejected(tmp_path):
    with tampered(tmp_path, "targets.npz") as targets:
        targets["labels"][0] = -2  # -1 is allowed: it marks an unlabeled row
    with pytest.raises(DatasetError, match=r"labels \(cache .*\)\[0\] = -2"):
        load_dataset(tmp_path / "c")


def test_cache_missing_a_modality_key_is_rejected(tmp_path):
    with tampered(tmp_path, "features.npz") as feats:
        del feats["b"]
    with pytest.raises(DatasetError, match="features.npz in cache .* has no array 'b'"):
        load_dataset(tmp_path / "c")


def test_cache_missing_a_meta_key_is_rejected(tmp_path):
    ds = MultimodalDataset(**_arrays())
    ds.save(tmp_path / "c")
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    del meta["classes"]
    (tmp_path / "c" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="meta.json in cache .* has no 'classes' key"):
        load_dataset(tmp_path / "c")


def test_cache_missing_a_file_is_rejected(tmp_path):
    ds = MultimodalDataset(**_arrays())
    ds.save(tmp_path / "c")
    (tmp_path / "c" / "targets.npz").unlink()
    with pytest.raises(DatasetError, match="missing targets.npz"):
        load_dataset(tmp_path / "c")


def test_synthetic_is_seeded():
    a = make_synthetic(n_samples=300, n_classes=3, val_per_class=5, seed=1)
    b = make_synthetic(n_samples=300, n_classes=3, val_per_class=5, seed=1)
    c = make_synthetic(n_samples=300, n_classes=3, val_per_class=5, seed=2)
    np.testing.assert_array_equal(a.features["m0"], b.features["m0"])
    assert not np.array_equal(a.features["m0"], c.features["m0"])


def test_synthetic_has_requested_modalities_and_dims():
    ds = make_synthetic(n_samples=300, n_classes=3, n_modalities=3, dims=(4, 5, 6),
                        informativeness=(1.0, 0.5, 0.0), val_per_class=5)
    assert ds.modalities == ("m0", "m1", "m2")
    assert ds.feature_dims == {"m0": 4, "m1": 5, "m2": 6}
    assert ds.n_classes == 3
