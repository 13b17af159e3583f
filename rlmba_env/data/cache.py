"""The feature cache: one directory per dataset (and encoder tag) on disk.

Layout (format version 1)::

    DIR/meta.json       {"format_version": 1, "name", "classes", "modalities",
                         "n_samples", "feature_dims", "meta": {encoders, preprocessing, ...}}
    DIR/features.npz    one array per modality, (N, d_m) float16 or float32
    DIR/targets.npz     "labels" (N,) int64 and the splits "pool", "val", "test"

A label of -1 marks a row whose class is not known yet (data for ``rlmba label``); ``val`` and
``test`` may then be empty.

A cache is written into a temporary sibling directory and renamed into place, so an
interrupted write never leaves a cache that :func:`read_cache` would accept, and an
existing cache is never replaced unless ``overwrite=True`` is asked for; a folder that holds
files but is not a cache is never replaced at all. The folder gets the permissions the user's
umask gives a new folder (``tempfile.mkdtemp`` alone would leave it ``drwx------``).
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
UNLABELED = -1
"""The label of a row whose class is not known yet (a labeling project's pool, ``rlmba label``)."""
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


def current_umask() -> int:
    """The process's umask (``os.umask`` can only be read by setting it, so it is set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _check_target(target: Path, overwrite: bool) -> None:
    """Refuse to write over anything but an empty folder or, with ``overwrite``, a cache."""
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} is a file, not a folder; choose a folder for the cache")
    if not target.exists() or not any(target.iterdir()):
        return
    if not is_cache(target):
        raise FileExistsError(
            f"{target} holds files but is not a feature cache (no {META_FILE}, {FEATURES_FILE} and "
            f"{TARGETS_FILE}); a cache replaces only an earlier cache, even with overwrite=True: "
            f"choose a new or empty folder"
        )
    if not overwrite:
        raise FileExistsError(f"{target} already holds a feature cache; pass overwrite=True to replace it")


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed(path, **arrays)`` for any array names: numpy's own keyword
    arguments (``file``, ``allow_pickle``) are valid modality names here."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        for name, array in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)


def save_dataset(dataset: MultimodalDataset, directory, overwrite: bool = False) -> Path:
    """Write ``dataset`` to ``directory`` atomically; refuse to replace a cache unless asked,
    and anything that is not a cache always."""
    target = Path(directory).expanduser()
    _check_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
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
        _savez(tmp / FEATURES_FILE, dataset.features)
        _savez(tmp / TARGETS_FILE, {"labels": dataset.labels, **{s: dataset.splits[s] for s in SPLITS}})
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
    except Exception as e:  # a damaged zip or .npy header surfaces as any of a dozen types
        raise DatasetError(
            f"{path.name} in cache {directory} is unreadable ({type(e).__name__}: {e}); "
            f"rebuild the cache (MultimodalDataset.save or rlmba prepare --overwrite)"
        ) from e


def read_cache(directory, features: bool = True) -> dict[str, Any]:
    """The ``MultimodalDataset`` fields of a cache written by :func:`save_dataset`, every file
    and key checked (``rlmba_env.data.dataset.load_dataset`` builds and validates the dataset).
    ``features=False`` leaves the features out (and ``features.npz`` unread): for a reader that
    holds its own copy of them, e.g. a labeling project."""
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise FileNotFoundError(f"no feature cache directory at {d}")
    for f in (META_FILE, FEATURES_FILE, TARGETS_FILE):
        if not (d / f).is_file():
            raise DatasetError(f"cache {d} is missing {f}; a complete cache has {META_FILE}, {FEATURES_FILE}, {TARGETS_FILE}")
    try:
        meta = json.loads((d / META_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{META_FILE} in cache {d} is not valid JSON: {e}") from e
    if not isinstance(meta, dict):
        raise DatasetError(f"{META_FILE} in cache {d} must hold a JSON object, got {type(meta).__name__}")
    for key in ("format_version", "classes", "modalities"):
        if key not in meta:
            raise DatasetError(f"{META_FILE} in cache {d} has no {key!r} key")
    for key in ("classes", "modalities"):
        if not isinstance(meta[key], list) or not all(isinstance(v, str) for v in meta[key]):
            raise DatasetError(f"{META_FILE} in cache {d}: {key!r} must be a list of strings, got {meta[key]!r}")
    version = meta["format_version"]
    if type(version) is not int or version != FORMAT_VERSION:
        raise DatasetError(
            f"{META_FILE} in cache {d} has format_version {version!r} ({type(version).__name__}); "
            f"this rlmba reads the integer {FORMAT_VERSION}"
        )
    targets = _read_npz(d / TARGETS_FILE, d)
    for key in ("labels", *SPLITS):
        if key not in targets:
            raise DatasetError(f"{TARGETS_FILE} in cache {d} has no array {key!r}")
    fields = dict(labels=targets["labels"], splits={s: targets[s] for s in SPLITS}, classes=meta["classes"],
                  name=meta.get("name", d.name), meta=meta.get("meta", {}), source=str(d))
    if not features:
        return fields
    features = _read_npz(d / FEATURES_FILE, d)
    for m in meta["modalities"]:
        if m not in features:
            raise DatasetError(
                f"{FEATURES_FILE} in cache {d} has no array {m!r} (meta.json lists modalities "
                f"{meta['modalities']}, the file holds {sorted(features)})"
            )
    return dict(features={m: features[m] for m in meta["modalities"]}, **fields)
