"""The one in-memory dataset type every source produces and the environment consumes.

A :class:`MultimodalDataset` holds, for N samples, one feature matrix per modality, the
labels, and the index splits ``pool`` (unlabeled at the start of an episode), ``val`` (model
selection, AMCB and the reward) and ``test`` (reporting only). It is validated when built, so
a bad cache or a bad array fails at load time with the file, key and first bad index named,
never later inside a training round.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlmba_env.data.cache import SPLITS, UNLABELED, DatasetError, read_cache, save_dataset

FEATURE_MAX_ABS = 1e15
"""largest feature magnitude accepted: the env's per-column statistics and distances run in
float32 over chunks of 65,536 rows, whose sums of squared deviations overflow (to inf, then
NaN probabilities in k-means++) beyond about 3e16; no encoder output comes near this, so a
larger value means a broken array (wrong dtype, uninitialised memory), not a feature"""


@dataclass
class MultimodalDataset:
    """Features per modality, labels, splits and class names for one multimodal dataset.

    Args:
        features: modality name -> ``(N, d_m)`` float32 or float16 array, at least two modalities.
        labels: ``(N,)`` integer class indices in ``[0, len(classes))``, or :data:`UNLABELED`
            (-1) for a row whose class is not known (data to label with ``rlmba label``; the
            environment refuses unlabeled ``val`` and ``test`` rows).
        splits: ``pool``, ``val`` and ``test`` -> disjoint arrays of row indices; ``val`` and
            ``test`` may be empty (a cache of unlabeled data), ``pool`` may not.
        classes: class names; their count is the number of classes.
        name: short dataset name, used in messages and run names.
        meta: free-form provenance (encoders, preprocessing), stored in ``meta.json``.
        source: where the data came from (a cache directory), named in error messages.
    """

    features: dict[str, np.ndarray]
    labels: np.ndarray
    splits: dict[str, np.ndarray]
    classes: list[str]
    name: str = "dataset"
    meta: dict[str, Any] = field(default_factory=dict)
    source: str | None = None

    def __post_init__(self) -> None:
        self.features = dict(self.features)
        self.labels = np.asarray(self.labels)
        self.splits = {k: np.asarray(v) for k, v in self.splits.items()}
        self.classes = [str(c) for c in self.classes]
        self._validate()
        self.labels = self.labels.astype(np.int64, copy=False)
        self.splits = {k: v.astype(np.int64, copy=False) for k, v in self.splits.items()}

    # -- properties -----------------------------------------------------------------------
    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.features)

    @property
    def n_samples(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_unlabeled(self) -> int:
        """Rows whose label is :data:`UNLABELED`."""
        return int((self.labels == UNLABELED).sum())

    @property
    def feature_dims(self) -> dict[str, int]:
        return {m: int(x.shape[1]) for m, x in self.features.items()}

    def __repr__(self) -> str:
        dims = ", ".join(f"{m}={d}" for m, d in self.feature_dims.items())
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits.items())
        return (
            f"MultimodalDataset(name={self.name!r}, N={self.n_samples}, classes={self.n_classes}, "
            f"features=({dims}), splits=({sizes}))"
        )

    def fingerprint(self) -> str:
        """sha256 of the classes, labels, splits and features: names a dataset in caches."""
        if getattr(self, "_fingerprint", None) is None:
            h = hashlib.sha256(json.dumps([self.name, self.classes, list(self.modalities)]).encode())
            for array in (self.labels, *(self.splits[s] for s in SPLITS), *self.features.values()):
                h.update(np.ascontiguousarray(array).tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def with_targets(self, labels: np.ndarray, splits: dict[str, np.ndarray], classes: list[str] | None = None
                     ) -> "MultimodalDataset":
        """A copy with other labels, splits (and classes), validated; the features are shared, not
        copied nor checked again (they were when this dataset was built)."""
        labels = np.asarray(labels)
        if labels.shape != self.labels.shape:
            raise DatasetError(f"{self._where('labels')}: new labels have shape {labels.shape}, the features "
                               f"have {self.n_samples} rows")
        out = copy.copy(self)
        out.labels = labels
        out.splits = {k: np.asarray(v) for k, v in splits.items()}
        out.classes = [str(c) for c in (self.classes if classes is None else classes)]
        out._fingerprint = None
        out._validate(features=False)
        out.labels = out.labels.astype(np.int64, copy=False)
        out.splits = {k: v.astype(np.int64, copy=False) for k, v in out.splits.items()}
        return out

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory, overwrite: bool = False) -> None:
        """Write the dataset as a feature cache (see :mod:`rlmba_env.data.cache`)."""
        save_dataset(self, directory, overwrite=overwrite)

    @classmethod
    def load(cls, directory) -> "MultimodalDataset":
        """Read and validate a feature cache written by :meth:`save` or ``rlmba prepare``."""
        return cls(**read_cache(directory))

    # -- validation -------------------------------------------------------------------------
    def _where(self, key: str) -> str:
        return f"{key} (cache {self.source})" if self.source else key

    def _validate_features(self, n: int) -> None:
        where = self._where
        for m, x in self.features.items():
            key = f"features[{m!r}]"
            # the name is a file name inside features.npz
            if not isinstance(m, str) or not m or any(c in m for c in "/\\\0"):
                raise DatasetError(
                    f"{where('features')}: modality name {m!r} must be a non-empty string without "
                    f"'/', '\\' or NUL (it names the modality's array in features.npz)"
                )
            if not isinstance(x, np.ndarray):
                raise DatasetError(f"{where(key)} must be a numpy array, got {type(x).__name__}")
            if x.ndim != 2:
                raise DatasetError(f"{where(key)} must be 2-D (N, d), got shape {x.shape}")
            if x.shape[0] != n:
                raise DatasetError(
                    f"{where(key)} has {x.shape[0]} rows but labels has {n}"
                )
            if x.shape[1] == 0:
                raise DatasetError(f"{where(key)} has no feature columns")
            if x.dtype not in (np.float16, np.float32, np.float64):
                raise DatasetError(f"{where(key)} must be float16/32/64, got dtype {x.dtype}")
            finite = np.isfinite(x).all(axis=1)
            if not finite.all():
                i = int(np.flatnonzero(~finite)[0])
                raise DatasetError(
                    f"{where(key)} row {i} has a non-finite value (NaN or inf); "
                    f"{int((~finite).sum())} such rows in all"
                )
            # a finite float16 is at most 65504: only wider dtypes can exceed the bound
            if x.size and x.dtype != np.float16 and max(float(x.max()), -float(x.min())) > FEATURE_MAX_ABS:
                big = np.abs(x).max(axis=1) > FEATURE_MAX_ABS
                i = int(np.flatnonzero(big)[0])
                raise DatasetError(
                    f"{where(key)} row {i} holds {float(np.abs(x[i]).max()):.3g}; feature values "
                    f"must lie within +-{FEATURE_MAX_ABS:g} ({int(big.sum())} rows beyond): rescale "
                    f"or standardise the features"
                )

    def _validate(self, features: bool = True) -> None:
        where = self._where
        if len(self.features) < 2:
            raise DatasetError(
                f"{where('features')}: a multimodal dataset needs at least 2 modalities, "
                f"got {list(self.features)}"
            )
        if self.labels.ndim != 1:
            raise DatasetError(f"{where('labels')} must be 1-D, got shape {self.labels.shape}")
        if not np.issubdtype(self.labels.dtype, np.integer):
            raise DatasetError(f"{where('labels')} must hold integers, got dtype {self.labels.dtype}")
        n = self.labels.shape[0]
        if n == 0:
            raise DatasetError(f"{where('labels')} is empty")
        k = len(self.classes)
        if k < 2:
            raise DatasetError(f"{where('classes')}: need at least 2 classes, got {self.classes}")
        bad = np.flatnonzero((self.labels < UNLABELED) | (self.labels >= k))
        if bad.size:
            i = int(bad[0])
            raise DatasetError(
                f"{where('labels')}[{i}] = {int(self.labels[i])} is out of range for "
                f"{k} classes ({bad.size} bad labels in all; allowed: 0..{k - 1}, or -1 for unlabeled)"
            )
        if features:
            self._validate_features(n)
        missing = [s for s in SPLITS if s not in self.splits]
        if missing:
            raise DatasetError(f"{where('splits')} is missing {missing}; need {list(SPLITS)}")
        seen = np.full(n, -1, dtype=np.int64)
        for j, s in enumerate(SPLITS):
            idx = self.splits[s]
            key = f"splits[{s!r}]"
            if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
                raise DatasetError(f"{where(key)} must be a 1-D integer array, got {idx.dtype} {idx.shape}")
            if idx.size == 0 and s == "pool":
                raise DatasetError(f"{where(key)} is empty")
            out = np.flatnonzero((idx < 0) | (idx >= n))
            if out.size:
                raise DatasetError(
                    f"{where(key)}[{int(out[0])}] = {int(idx[out[0]])} is not a row index in [0, {n})"
                )
            if np.unique(idx).size != idx.size:
                raise DatasetError(f"{where(key)} lists a row more than once")
            clash = np.flatnonzero(seen[idx] >= 0)
            if clash.size:
                row = int(idx[clash[0]])
                raise DatasetError(
                    f"{where(key)} and splits[{SPLITS[seen[row]]!r}] share row {row}; splits must be disjoint"
                )
            seen[idx] = j


def load_dataset(directory) -> MultimodalDataset:
    """Read and validate the feature cache in ``directory`` (:meth:`MultimodalDataset.load`)."""
    return MultimodalDataset.load(directory)
