"""Factories behind the registered env ids: each builds a dataset and a protocol, then the env.

Protocol fields (``initial_labels``, ``per_round``, ``rounds``) are accepted as keyword
arguments by every id and override the dataset's default protocol; every other keyword goes
to :class:`~rlmba_env.env.MultimodalALEnv`.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

from rlmba_env.checks import check_seed
from rlmba_env.data.cache import default_data_root, is_cache
from rlmba_env.data.dataset import load_dataset
from rlmba_env.data.synthetic import make_synthetic
from rlmba_env.env import MultimodalALEnv
from rlmba_env.protocols import PROTOCOLS

PROTOCOL_FIELDS = ("initial_labels", "per_round", "rounds")

# Real datasets: env id -> (cache folder under the data root, name of the prepare argument).
REAL_DATASETS = {
    "RLMBA-Food101-v0": "food101",
    "RLMBA-KineticsSound-v0": "kinetics_sound",
    "RLMBA-VGGSound-v0": "vggsound",
}
# What --raw points at, in the missing-cache message.
RAW_EXAMPLES = {
    "food101": "/path/to/UPMC_Food101",
    "kinetics_sound": "/path/to/kinetics_sound",
    "vggsound": "/path/to/vggsound",
}


def _split_protocol(key: str, kwargs: dict) -> tuple[dict, dict]:
    overrides = {k: kwargs.pop(k) for k in PROTOCOL_FIELDS if k in kwargs}
    return replace(PROTOCOLS[key], **overrides), kwargs


def make_avdigits_env(image_noise: float = 0.5, dataset_seed: int = 0, **kwargs) -> MultimodalALEnv:
    """AV-Digits (embedded): real digit images (noisy by ``image_noise``) + spoken digits."""
    from rlmba_env.data.avdigits import load_avdigits

    dataset_seed = check_seed("dataset_seed", dataset_seed)  # named as the user passes it
    protocol, kwargs = _split_protocol("avdigits", kwargs)
    return MultimodalALEnv(load_avdigits(image_noise=image_noise, seed=dataset_seed), protocol, **kwargs)


def make_synthetic_env(dataset: dict | None = None, **kwargs) -> MultimodalALEnv:
    """Synthetic data; ``dataset`` holds :func:`~rlmba_env.data.synthetic.make_synthetic` kwargs."""
    protocol, kwargs = _split_protocol("synthetic", kwargs)
    return MultimodalALEnv(make_synthetic(**(dataset or {})), protocol, **kwargs)


def make_features_env(path: str | Path, **kwargs) -> MultimodalALEnv:
    """Any feature cache written by ``MultimodalDataset.save(path)``, with any number (>= 2) of modalities."""
    protocol, kwargs = _split_protocol("features", kwargs)
    return MultimodalALEnv(load_dataset(path), protocol, **kwargs)


def make_devsuite_env(name: str, **kwargs) -> MultimodalALEnv:
    """One of the nine development-suite datasets shipped with the package, with its protocol."""
    from rlmba_env.data.suite import suite_path, suite_protocol

    overrides = {k: kwargs.pop(k) for k in PROTOCOL_FIELDS if k in kwargs}
    protocol = replace(suite_protocol(name), **overrides)
    return MultimodalALEnv(load_dataset(suite_path(name)), protocol, **kwargs)


def real_dataset_dir(key: str, data_root: str | Path | None) -> Path:
    root = Path(data_root).expanduser() if data_root is not None else default_data_root()
    return root / key


def make_real_env(key: str, data_root: str | Path | None = None, **kwargs) -> MultimodalALEnv:
    """A real dataset read from its feature cache under the data root."""
    cache = real_dataset_dir(key, data_root)
    if not is_cache(cache):
        raise FileNotFoundError(
            f"no {key} feature cache under {cache} (data root: the data_root kwarg, else $RLMBA_DATA, "
            f"else ~/.cache/rlmba); create it with: "
            f"rlmba prepare {key} --raw {RAW_EXAMPLES[key]}" + (f" --out {cache}" if data_root is not None else "")
            + " (raw layouts and where to download them: docs/real_datasets.md)"
        )
    protocol, kwargs = _split_protocol(key, kwargs)
    return MultimodalALEnv(load_dataset(cache), protocol, **kwargs)


def make_food101_env(**kwargs) -> MultimodalALEnv:
    """UPMC Food-101 (image + text), the paper's protocol 1000 + 1000 x 6."""
    return make_real_env("food101", **kwargs)


def make_kinetics_sound_env(**kwargs) -> MultimodalALEnv:
    """KineticsSound (visual + audio), the paper's protocol 1000 + 1000 x 6."""
    return make_real_env("kinetics_sound", **kwargs)


def make_vggsound_env(**kwargs) -> MultimodalALEnv:
    """VGGSound (visual + audio), the paper's protocol 2000 + 2000 x 6."""
    return make_real_env("vggsound", **kwargs)


ENV_IDS = {
    "RLMBA-AVDigits-v0": make_avdigits_env,
    "RLMBA-Synthetic-v0": make_synthetic_env,
    "RLMBA-Features-v0": make_features_env,
    "RLMBA-DevSuite-v0": make_devsuite_env,
    "RLMBA-Food101-v0": make_food101_env,
    "RLMBA-KineticsSound-v0": make_kinetics_sound_env,
    "RLMBA-VGGSound-v0": make_vggsound_env,
}


def register_envs() -> None:
    """Register every id with its factory as ``entry_point`` and the batched vector env as
    ``vector_entry_point``: ``gym.make_vec(id, num_envs=n, vectorization_mode="vector_entry_point")``
    builds :class:`~rlmba_env.vector.BatchedMultimodalALVectorEnv`."""
    import gymnasium as gym

    from rlmba_env.vector import BatchedMultimodalALVectorEnv

    for env_id, factory in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=f"{factory.__module__}:{factory.__name__}",
                         vector_entry_point=partial(BatchedMultimodalALVectorEnv.from_env_id, env_id))
