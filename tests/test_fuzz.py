"""Property-based hardening tests (hypothesis): random env arguments, datasets, protocols up to
the whole pool, reset arguments and action sequences (``fuzz_cases.py``; thousands more in
``benchmarks/fuzz.py``). Derandomized, so a run is the same every time."""

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_cases import cases, run_case

FUZZ = settings(derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@settings(FUZZ, max_examples=200)
@given(cases())
def test_every_case_plays_to_the_end_or_is_refused_naming_an_invalid_argument(case):
    outcome = run_case(case)
    assert outcome.kind in ("ok", "refused"), f"{outcome.kind}: {outcome.detail}\n{case.describe()}"


SYNTHETIC_ARGS = {
    "n_samples": (st.integers(40, 80), [0, -5, 2.5]),
    "n_classes": (st.integers(2, 3), [1, 0, True]),
    "dims": (st.integers(1, 4), [0, -1]),
    "noise": (st.floats(0, 2), [float("nan"), -1.0]),
    "val_per_class": (st.integers(1, 3), [0]),
    "test_fraction": (st.floats(0.1, 0.4), [0.0, 1.0, 1.5]),
    "seed": (st.integers(0, 2**40), [-1, 1.5]),
}


@st.composite
def synthetic_kwargs(draw):
    kwargs, bad = {}, set()
    for name, (valid, invalid) in SYNTHETIC_ARGS.items():
        if draw(st.integers(0, 9)) == 0:
            kwargs[name] = draw(st.sampled_from(invalid))
            bad.add(name)
        else:
            kwargs[name] = draw(valid)
    return kwargs, bad


@settings(FUZZ, max_examples=60)
@given(synthetic_kwargs())
def test_synthetic_dataset_arguments_build_a_playable_env_or_are_refused_by_name(drawn):
    kwargs, bad = drawn
    try:
        env = gym.make("RLMBA-Synthetic-v0", dataset=kwargs, initial_labels=2, per_round=2, rounds=1,
                       learner={"epochs": 2, "hidden": 4})
    except ValueError as e:
        assert bad and any(f"{name}=" in str(e) for name in bad), f"{e} (drawn invalid: {bad})"
        return
    assert not bad, f"accepted invalid {bad}"
    obs, _ = env.reset(seed=0)
    _, reward, terminated, _, _ = env.step(int(np.flatnonzero(obs["action_mask"])[0]))
    _, reward, terminated, _, _ = env.step(int(np.flatnonzero(env.unwrapped.action_masks())[0]))
    assert terminated and np.isfinite(reward)


@settings(FUZZ, max_examples=150)
@given(st.sampled_from(["meta.json", "features.npz", "targets.npz"]), st.integers(0, 10**6), st.integers(1, 255),
       st.booleans())
def test_a_damaged_cache_loads_unchanged_or_fails_naming_the_file(tmp_path_factory, filename, where, flip, truncate):
    from fuzz_cases import build_dataset

    from rlmba_env.data.dataset import load_dataset
    from rlmba_env.data.dataset import DatasetError

    spec = {"n": 12, "dims": [2, 3], "k": 2, "sizes": (6, 3, 3), "dtype": "float32", "scale": 1.0,
            "constant_columns": False, "duplicate_rows": False, "seed": 0, "bad_values": None}
    dataset = build_dataset(spec)
    folder = tmp_path_factory.mktemp("cache") / "c"
    dataset.save(folder)
    data = bytearray((folder / filename).read_bytes())
    where %= len(data)
    data = data[:where] if truncate else data[:where] + bytes([data[where] ^ flip]) + data[where + 1:]
    (folder / filename).write_bytes(bytes(data))
    try:
        loaded = load_dataset(folder)
    except DatasetError as e:
        assert str(folder) in str(e), str(e)  # names the cache (and the file, when one file is to blame)
        return
    assert loaded.fingerprint() == dataset.fingerprint() or filename == "meta.json"
