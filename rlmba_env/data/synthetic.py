"""A controllable multimodal generator for experiments on modality imbalance and difficulty.

Each class has one prototype per modality; a sample's modality-m features are its class
prototype scaled by that modality's *informativeness* plus isotropic Gaussian noise. A
per-sample *difficulty* in [0, difficulty_spread] pulls the sample towards the prototype of
a second, confusable class, so some samples sit near decision boundaries (what
difficulty-aware selection should find) and others are easy. Informativeness 0 makes a
modality pure noise; unequal values make one modality dominant.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rlmba_env.checks import check_int, check_real, check_seed, fail
from rlmba_env.data.dataset import MultimodalDataset


def stratified_split(
    labels: np.ndarray, rng: np.random.Generator, val_per_class: int, test_fraction: float
) -> dict[str, np.ndarray]:
    """Split rows into pool / val / test, stratified by class (``val_per_class`` rows each)."""
    pool, val, test = [], [], []
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(test_fraction * rows.size))
        n_val = min(val_per_class, max(rows.size - n_test - 1, 0))
        test.append(rows[:n_test])
        val.append(rows[n_test : n_test + n_val])
        pool.append(rows[n_test + n_val :])
    return {name: np.sort(np.concatenate(parts)) for name, parts in
            (("pool", pool), ("val", val), ("test", test))}


def make_synthetic(
    n_samples: int = 3000,
    n_classes: int = 10,
    n_modalities: int = 2,
    dims: int | Sequence[int] = 32,
    informativeness: float | Sequence[float] | None = None,
    difficulty_spread: float = 0.5,
    noise: float = 1.0,
    val_per_class: int = 30,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> MultimodalDataset:
    """Generate a seeded synthetic multimodal dataset.

    Args:
        n_samples: total rows (pool + val + test).
        n_classes: number of classes.
        n_modalities: number of modalities, named ``m0, m1, ...``.
        dims: feature dimension per modality (one int for all, or one per modality).
        informativeness: class-signal scale per modality (0 = pure noise); by default 1.0 for
            ``m0`` and 0.4 for the others, so ``m0`` dominates.
        difficulty_spread: largest pull towards a confusable class, in [0, 1).
        noise: standard deviation of the isotropic Gaussian noise.
        val_per_class: validation rows per class.
        test_fraction: fraction of each class held out for testing.
        seed: seed of every random draw.
    """
    n_samples = check_int("n_samples", n_samples, 1)
    n_classes = check_int("n_classes", n_classes, 2)
    n_modalities = check_int("n_modalities", n_modalities, 2)
    dims_list = [dims] * n_modalities if np.isscalar(dims) else list(dims)
    dims_list = [check_int("dims", d, 1) for d in dims_list]
    if informativeness is None:
        informativeness = [1.0] + [0.4] * (n_modalities - 1)
    info = [informativeness] * n_modalities if np.isscalar(informativeness) else list(informativeness)
    info = [check_real("informativeness", v) for v in info]
    if len(dims_list) != n_modalities or len(info) != n_modalities:
        raise ValueError(
            f"dims ({len(dims_list)}) and informativeness ({len(info)}) need one entry per "
            f"modality ({n_modalities})"
        )
    difficulty_spread = check_real("difficulty_spread", difficulty_spread, 0.0, 1.0, high_open=True)
    noise = check_real("noise", noise, low=0.0)
    val_per_class = check_int("val_per_class", val_per_class, 1)
    test_fraction = check_real("test_fraction", test_fraction, 0.0, 1.0, low_open=True, high_open=True)
    seed = check_seed("seed", seed)
    if n_samples < n_classes * (val_per_class + 3):
        raise ValueError(
            f"n_samples={n_samples} is too small for {n_classes} classes with "
            f"{val_per_class} validation rows each"
        )

    rng = np.random.default_rng(seed)
    labels = np.arange(n_samples) % n_classes
    rng.shuffle(labels)
    confusable = (labels + rng.integers(1, n_classes, size=n_samples)) % n_classes
    difficulty = rng.uniform(0.0, difficulty_spread, size=n_samples)[:, None]

    features = {}
    for m, (d, scale) in enumerate(zip(dims_list, info)):
        # Prototypes on a sphere of radius sqrt(d) keep class separation independent of d.
        protos = rng.standard_normal((n_classes, d))
        protos *= np.sqrt(d) / np.linalg.norm(protos, axis=1, keepdims=True) / 2.0
        signal = (1.0 - difficulty) * protos[labels] + difficulty * protos[confusable]
        x = scale * signal + noise * rng.standard_normal((n_samples, d))
        features[f"m{m}"] = x.astype(np.float32)

    splits = stratified_split(labels, rng, val_per_class, test_fraction)
    if not (splits["test"].size and splits["pool"].size):
        fail("test_fraction", test_fraction, f"large enough to hold out test rows and small enough to leave "
                                              f"pool rows in each of {n_classes} classes of ~{n_samples // n_classes}")
    return MultimodalDataset(
        features=features,
        labels=labels.astype(np.int64),
        splits=splits,
        classes=[f"class_{c}" for c in range(n_classes)],
        name="synthetic",
        meta={
            "source": "rlmba_env.data.synthetic.make_synthetic",
            "informativeness": info,
            "dims": dims_list,
            "difficulty_spread": difficulty_spread,
            "noise": noise,
            "seed": seed,
        },
    )
