"""The feature cache: one directory per dataset (and encoder tag) on disk.

Layout (format version 1)::

    DIR/meta.json       {"format_version": 1, "name", "classes", "modalities",
                         "n_samples", "feature_dims", "meta": {encoders, preprocessing, ...}}
    DIR/features.npz    one array per modality, (N, d_m) float16 or float32
    DIR/targets.npz     "labels" (N,) int64 and the splits "pool", "val", "test"

A cache is written into a temporary sibling directory and renamed into place, so an
interrupted write never leaves a cache that :func:`read_cache` would accept, and an
existing cache is never replaced unless ``overwrite=True`` is asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from rlmba_env.data.dataset import MultimodalDataset

SPLITS = ("pool", "val", "test")
"""the row splits of every dataset: the unlabeled pool, validation (rewards) and test"""
FORMAT_VERSION = 1
META_FILE = "meta.json"
FEATURES_FILE = "features.npz"
TARGETS_FILE = "targets.npz"


class DatasetError(ValueError):
    """A dataset or feature cache is malformed; the message names what and where."""


def default_data_root() -> Path:
    """``$RLMBA_DATA`` if set, else ``~/.cache/rlmba``."""
    env = os.environ.get("RLMBA_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rlmba"


def file_sha256(path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_cache(directory) -> bool:
    d = Path(directory)
    return all((d / f).is_file() for f in (META_FILE, FEATURES_FILE, TARGETS_FILE))


def save_dataset(dataset: MultimodalDataset, directory, overwrite: bool = False) -> Path:
    """Write ``dataset`` to ``directory`` atomically; refuse to replace a cache unless asked."""
    target = Path(directory).expanduser()
    if target.exists() and any(target.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{target} already holds files; pass overwrite=True to replace the cache there"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        meta = {
            "format_version": FORMAT_VERSION,
            "name": dataset.name,
            "classes": list(dataset.classes),
            "modalities": list(dataset.modalities),
            "n_samples": dataset.n_samples,
            "feature_dims": dataset.feature_dims,
            "meta": dataset.meta,
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        np.savez_compressed(tmp / FEATURES_FILE, **dataset.features)
        np.savez_compressed(
            tmp / TARGETS_FILE, labels=dataset.labels, **{s: dataset.splits[s] for s in SPLITS}
        )
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _read_npz(path: Path, directory: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise DatasetError(f"{path.name} in cache {directory} is unreadable: {e}") from e


def read_cache(directory) -> dict[str, Any]:
    """The ``MultimodalDataset`` fields of a cache written by :func:`save_dataset`, every file
    and key checked (``rlmba_env.data.dataset.load_dataset`` builds and validates the dataset)."""
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise FileNotFoundError(f"no feature cache directory at {d}")
    for f in (META_FILE, FEATURES_FILE, TARGETS_FILE):
        if not (d / f).is_file():
            raise DatasetError(f"cache {d} is missing {f}; a complete cache has {META_FILE}, {FEATURES_FILE}, {TARGETS_FILE}")
    try:
        meta = json.loads((d / META_FILE).read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{META_FILE} in cache {d} is not valid JSON: {e}") from e
    for key in ("format_version", "classes", "modalities"):
        if key not in meta:
            raise DatasetError(f"{META_FILE} in cache {d} has no {key!r} key")
    if meta["format_version"] != FORMAT_VERSION:
        raise DatasetError(
            f"{META_FILE} in cache {d} has format_version {meta['format_version']}, "
            f"this rlmba reads {FORMAT_VERSION}"
        )
    features = _read_npz(d / FEATURES_FILE, d)
    targets = _read_npz(d / TARGETS_FILE, d)
    for m in meta["modalities"]:
        if m not in features:
            raise DatasetError(
                f"{FEATURES_FILE} in cache {d} has no array {m!r} (meta.json lists modalities "
                f"{meta['modalities']}, the file holds {sorted(features)})"
            )
    for key in ("labels", *SPLITS):
        if key not in targets:
            raise DatasetError(f"{TARGETS_FILE} in cache {d} has no array {key!r}")
    return dict(
        features={m: features[m] for m in meta["modalities"]},
        labels=targets["labels"],
        splits={s: targets[s] for s in SPLITS},
        classes=meta["classes"],
        name=meta.get("name", d.name),
        meta=meta.get("meta", {}),
        source=str(d),
    )
