"""Turn a raw dataset on disk into a feature cache, resumably (``rlmba prepare DATASET --raw DIR``).

Stages:

1. List: the dataset's reader (:mod:`~rlmba_env.data.food101`,
   :mod:`~rlmba_env.data.kinetics_sound`, :mod:`~rlmba_env.data.vggsound`) walks ``--raw`` and
   returns the samples of the official ``train`` and ``test`` splits; samples with a missing
   file are reported and dropped here.
2. Encode: per modality and split, batches of ``batch_size`` samples are decoded on the CPU
   (``workers`` loader processes) and encoded on ``device`` by the frozen encoders of
   :mod:`~rlmba_env.data.encoders`. Every batch is written as one shard, atomically, under the
   work directory ``<out>.partial/``; a sample that cannot be decoded (unreadable image,
   corrupt, truncated or silent audio) is recorded in its shard and skipped.
3. Assemble: a sample is kept when every modality encoded. ``test`` is the official test
   split; ``val`` is carved from train, stratified: ``val_per_class`` random samples of each
   class (a number >= 1), or that fraction of each class (a number < 1), always leaving at least
   one sample of the class in the pool, drawn with ``seed``; ``pool`` is the rest of train.
   Rows are the kept train samples then the kept test samples, in listing order.
4. Save: :meth:`MultimodalDataset.save` writes the cache atomically, then
   ``prepare_report.json`` (counts, every skipped sample and why, timings) and ``samples.csv``
   (row -> split, raw id, class: how to find a row's files when you label it) are added beside
   it and the work directory is removed.

Interrupt it at any point and run the same command again: finished shards are reused (the
work directory's ``plan.json`` must match the new run's settings and sample list, else prepare
stops and says so; ``fresh=True`` discards it). A complete cache is never replaced unless
``overwrite=True``. Prepare fails, naming the split and writing the report into the work
directory, only when a split would end up empty.

Work directory layout::

    <out>.partial/plan.json                     dataset, raw dir, encoder settings, sample ids
    <out>.partial/<modality>.encoder.pkl        a fitted encoder (TF-IDF + SVD), if any
    <out>.partial/<split>/<modality>/<batch>.npz  "features" (ok rows), "error", "note" per sample
"""

from __future__ import annotations

import csv
import importlib
import importlib.metadata
import json
import math
import os
import pickle
import shutil
import time
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path

import numpy as np

from rlmba_env.data.cache import default_data_root, is_cache
from rlmba_env.data.dataset import MultimodalDataset
from rlmba_env.data.encoders import EncoderConfig, build_encoder
from rlmba_env.data.raw import RAW_SPLITS, Decoded, PrepareError, Problem, RawListing, SampleError

LISTERS = {
    "food101": "rlmba_env.data.food101:list_food101",
    "kinetics_sound": "rlmba_env.data.kinetics_sound:list_kinetics_sound",
    "vggsound": "rlmba_env.data.vggsound:list_vggsound",
    "folder": "rlmba_env.data.folder:list_folder",
}
UNLABELED_LISTERS = ("folder",)
"""readers of unlabeled data: they take the class names (``--classes``)"""
DATASETS = tuple(LISTERS)
PLAN_FORMAT = 1
REPORT_FILE = "prepare_report.json"
SAMPLES_FILE = "samples.csv"


@dataclass(frozen=True, kw_only=True)
class PrepareConfig(EncoderConfig):
    """Everything one ``rlmba prepare`` run needs: the encoder settings of
    :class:`~rlmba_env.data.encoders.EncoderConfig` (declared there once) and the run's own;
    the CLI flags map one to one."""

    dataset: str
    raw: str | Path
    out: str | Path | None = None
    """Cache directory; None = ``<data root>/<dataset>``, where the env ids look."""
    device: str = "auto"
    """``auto`` = CUDA when present (the encoders' own default is the CPU)."""
    batch_size: int = 64
    workers: int = 0
    frames: int = 3
    val_per_class: float = 10
    dtype: str = "float16"
    classes: tuple[str, ...] | None = None
    """class names of unlabeled data (``folder``); the other datasets read theirs"""
    overwrite: bool = False
    fresh: bool = False
    keep_work: bool = False
    progress: bool = True


def default_out(dataset: str) -> Path:
    return default_data_root() / dataset


def work_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def list_raw(dataset: str, raw, classes=None) -> RawListing:
    if dataset not in LISTERS:
        raise PrepareError(f"unknown dataset {dataset!r}; choose one of {list(DATASETS)}")
    if (classes is not None) != (dataset in UNLABELED_LISTERS):
        raise PrepareError(f"--classes is for unlabeled data ({', '.join(UNLABELED_LISTERS)}) and required there; "
                           f"{dataset} " + ("reads its classes from the raw layout" if classes is not None else
                                            "needs the class names"))
    module, func = LISTERS[dataset].split(":")
    reader = getattr(importlib.import_module(module), func)
    return reader(raw, classes) if dataset in UNLABELED_LISTERS else reader(raw)


def carve_val(labels: np.ndarray, val_per_class: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (pool, val) positions into ``labels``; see the module docstring for the rule."""
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = int(val_per_class) if val_per_class >= 1 else int(round(val_per_class * len(idx)))
        k = min(k, len(idx) - 1)
        if k > 0:
            val.append(rng.permutation(idx)[:k])
    val = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    pool = np.setdiff1d(np.arange(len(labels)), val)
    return pool.astype(np.int64), val.astype(np.int64)


# -- the loader ------------------------------------------------------------------------------
class _Stream:
    """Decode + preprocess one sample; a SampleError becomes an error string, not a crash."""

    def __init__(self, inputs: list, decoder, preprocessor):
        self.inputs, self.decoder, self.preprocessor = inputs, decoder, preprocessor

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int):
        try:
            item, note = self.decoder(self.inputs[i]), ""
            if isinstance(item, Decoded):
                item, note = item.value, item.note
            return self.preprocessor(item), "", note
        except SampleError as e:
            return None, f"{e.kind}: {e.detail}", ""


def _as_list(batch):
    return batch


def _write_shard(path: Path, features: np.ndarray, errors: list[str], notes: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, features=features.astype(np.float32), error=np.array(errors, dtype=str),
                 note=np.array(notes, dtype=str))
    os.replace(tmp, path)


def _shard_path(folder: Path, j: int) -> Path:
    return folder / f"{j:06d}.npz"


def _batches(n: int, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def _encode_split(cfg: PrepareConfig, work: Path, split: str, modality: str, inputs: list, decoder,
                  encoder) -> int:
    """Encode the shards of one (split, modality) that are not on disk yet; return samples encoded."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    folder = work / split / modality
    folder.mkdir(parents=True, exist_ok=True)
    batches = _batches(len(inputs), cfg.batch_size)
    pending = [(j, b) for j, b in enumerate(batches) if not _shard_path(folder, j).is_file()]
    if not pending:
        return 0
    loader = DataLoader(_Stream(inputs, decoder, encoder.preprocessor), batch_sampler=[b for _, b in pending],
                        num_workers=cfg.workers, collate_fn=_as_list)
    done = len(inputs) - sum(len(b) for _, b in pending)
    encoded = 0
    with tqdm(total=len(inputs), initial=done, desc=f"{cfg.dataset} {split} {modality}", unit="sample",
              disable=not cfg.progress, dynamic_ncols=True) as bar:
        for (j, _), results in zip(pending, loader):
            items = [r[0] for r in results if not r[1]]
            feats = encoder.encode(items) if items else np.zeros((0, encoder.dim), np.float32)
            _write_shard(_shard_path(folder, j), feats, [r[1] for r in results], [r[2] for r in results])
            encoded += len(results)
            bar.update(len(results))
    return encoded


def _read_split(work: Path, split: str, modality: str, n: int, batch_size: int):
    """(features of the ok samples, ok mask, errors, notes) of one (split, modality)."""
    feats, errors, notes = [], [], []
    for j in range(math.ceil(n / batch_size)):
        path = _shard_path(work / split / modality, j)
        try:
            with np.load(path, allow_pickle=False) as z:
                feats.append(z["features"])
                errors.extend(z["error"].tolist())
                notes.extend(z["note"].tolist())
        except Exception as e:  # a damaged zip or .npy header surfaces as any of a dozen types
            raise _damaged(path, e) from e
    ok = np.array([e == "" for e in errors], dtype=bool)
    return np.concatenate(feats), ok, errors, notes


# -- the work directory ----------------------------------------------------------------------
def _damaged(path: Path, error: Exception) -> PrepareError:
    """The error for a damaged file of the work directory: what, and the two ways out."""
    return PrepareError(
        f"{path} in prepare's work directory is damaged ({type(error).__name__}: {error}); delete "
        f"that file and rerun the same command to redo only its part, or rerun with --fresh to start over"
    )


def _open_work(work: Path, plan: dict, fresh: bool) -> None:
    plan_file = work / "plan.json"
    if work.exists() and fresh:
        shutil.rmtree(work)
    if plan_file.is_file():
        try:
            old = json.loads(plan_file.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _damaged(plan_file, e) from e
        if old != plan:
            diff = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
            raise PrepareError(
                f"{work} holds an interrupted prepare whose {', '.join(diff)} differ from this run's; "
                f"rerun it with the same settings to resume, or pass --fresh to discard it and start over"
            )
        return
    if work.exists() and any(work.iterdir()):
        raise PrepareError(f"{work} exists but holds no plan.json; remove it or pass --fresh")
    work.mkdir(parents=True, exist_ok=True)
    tmp = plan_file.with_name("plan.json.tmp")
    tmp.write_text(json.dumps(plan))
    os.replace(tmp, plan_file)


def _fit_encoder(cfg: PrepareConfig, work: Path, modality: str, encoder, inputs: list, decoder):
    """Fit (or reload the fit of) an encoder that learns from the train split, e.g. TF-IDF."""
    path = work / f"{modality}.encoder.pkl"
    if path.is_file():
        try:
            with open(path, "rb") as f:
                return pickle.load(f)  # written by this function in an earlier, interrupted run
        except Exception as e:  # a truncated pickle raises EOFError, UnpicklingError, ...
            raise _damaged(path, e) from e
    stream = _Stream(inputs, decoder, encoder.preprocessor)
    texts = [x for x, err, _ in (stream[i] for i in range(len(stream))) if not err]
    if not texts:
        raise PrepareError(f"no {modality} of the train split could be read, nothing to fit the encoder on")
    encoder.fit(texts)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(encoder, f)
    os.replace(tmp, path)
    return encoder


# -- the driver ------------------------------------------------------------------------------
def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PrepareError(f"--device {device}: CUDA is not available here (torch {torch.__version__}); "
                           f"use --device cpu")
    return device


def _check_out(out: Path, overwrite: bool) -> None:
    if is_cache(out):
        if not overwrite:
            raise FileExistsError(f"{out} already holds a feature cache; pass --overwrite to rebuild it")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not a feature cache; choose another --out or empty it")


def _fail_empty(work: Path, report: dict, message: str) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / REPORT_FILE).write_text(json.dumps(report, indent=2))
    raise PrepareError(f"{message}; prepare stopped (report: {work / REPORT_FILE})")


def _summarise(problems: list[Problem]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in problems:
        key = f"{p.modality or 'sample'}: {p.kind}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def prepare(config: PrepareConfig) -> Path:
    """Build the feature cache of ``config.dataset`` from ``config.raw``; return the cache directory."""
    cfg = config
    t_start = time.perf_counter()
    if cfg.dataset not in LISTERS:
        raise PrepareError(f"unknown dataset {cfg.dataset!r}; choose one of {list(DATASETS)}")
    if cfg.batch_size < 1 or cfg.frames < 1 or cfg.image_size < 32:
        raise PrepareError("batch_size and frames must be >= 1 and image_size >= 32")
    if not (cfg.val_per_class >= 1 or 0 < cfg.val_per_class < 1):
        raise PrepareError(f"val_per_class must be a count >= 1 or a fraction in (0, 1), got {cfg.val_per_class}")
    if cfg.dtype not in ("float16", "float32"):
        raise PrepareError(f"dtype must be float16 or float32, got {cfg.dtype!r}")
    out = Path(cfg.out).expanduser() if cfg.out is not None else default_out(cfg.dataset)
    work = work_dir(out)
    raw = Path(cfg.raw).expanduser().resolve()
    _check_out(out, cfg.overwrite)
    device = _resolve_device(cfg.device)

    listing = list_raw(cfg.dataset, raw, cfg.classes)
    t_listed = time.perf_counter()
    report = {
        "dataset": cfg.dataset, "raw": str(raw), "layout": listing.layout, "cache": str(out),
        "classes": len(listing.classes),
        "listed": {s: len(listing.splits[s]) + sum(p.split == s for p in listing.problems) for s in RAW_SPLITS},
        "warnings": list(listing.warnings),
    }
    for s in RAW_SPLITS:
        if not listing.splits[s] and not (listing.unlabeled and s == "test"):
            problems = [p for p in listing.problems if p.split == s]
            _fail_empty(work, {**report, "skipped": [p.to_json() for p in listing.problems]},
                        f"{cfg.dataset}: the {s} split would be empty: no usable sample listed under {raw}"
                        + (f" ({len(problems)} dropped: {_summarise(problems)})" if problems else ""))

    # The encoder settings are the EncoderConfig fields PrepareConfig inherits (the CLI stays flat).
    enc_cfg = EncoderConfig(device=device, **{f.name: getattr(cfg, f.name) for f in fields(EncoderConfig)
                                              if f.name != "device"})
    encoders = {m: build_encoder(kind, enc_cfg) for m, kind in listing.modalities.items()}
    decoders = {m: partial(listing.decoders[m], frames=cfg.frames) if kind == "frames" else listing.decoders[m]
                for m, kind in listing.modalities.items()}
    plan = {
        "format": PLAN_FORMAT, "dataset": cfg.dataset, "raw": str(raw), "batch_size": cfg.batch_size,
        "frames": cfg.frames if "frames" in listing.modalities.values() else None, "encoders": {m: e.settings() for m, e in encoders.items()},
        "classes": listing.classes,
        "samples": {s: [[x.id, x.label] for x in listing.splits[s]] for s in RAW_SPLITS},
    }
    _open_work(work, plan, cfg.fresh)
    t_ready = time.perf_counter()

    encoded = 0
    for m, enc in encoders.items():
        if enc.needs_fit:
            train_inputs = [x.inputs[m] for x in listing.splits["train"]]
            encoders[m] = enc = _fit_encoder(cfg, work, m, enc, train_inputs, decoders[m])
        for s in RAW_SPLITS:
            encoded += _encode_split(cfg, work, s, m, [x.inputs[m] for x in listing.splits[s]], decoders[m], enc)
    t_encoded = time.perf_counter()

    # Assemble: keep the samples every modality encoded.
    problems = list(listing.problems)
    notes = []
    parts: dict[str, dict[str, np.ndarray]] = {}
    labels: dict[str, np.ndarray] = {}
    kept_ids: dict[str, list[str]] = {}
    for s in RAW_SPLITS:
        samples = listing.splits[s]
        if not samples:  # an unlabeled listing's test split
            parts[s], labels[s], kept_ids[s] = {}, np.zeros(0, np.int64), []
            continue
        read = {m: _read_split(work, s, m, len(samples), cfg.batch_size) for m in encoders}
        keep = np.logical_and.reduce([ok for _, ok, _, _ in read.values()])
        for m, (_, ok, errors, note) in read.items():
            for i in np.flatnonzero(~ok):
                kind, _, detail = errors[i].partition(": ")
                problems.append(Problem(s, samples[i].id, m, kind, detail))
            notes += [{"split": s, "id": samples[i].id, "modality": m, "note": note[i]}
                      for i in range(len(samples)) if note[i]]
        parts[s] = {m: feats[keep[ok]] for m, (feats, ok, _, _) in read.items()}
        labels[s] = np.array([x.label for x in samples], dtype=np.int64)[keep]
        kept_ids[s] = [x.id for x, k in zip(samples, keep) if k]

    n_train = len(labels["train"])
    if listing.unlabeled:  # everything is to be labeled: no val to carve, no test
        pool, val = np.arange(n_train, dtype=np.int64), np.zeros(0, np.int64)
    else:
        pool, val = carve_val(labels["train"], cfg.val_per_class, cfg.seed)
    test = np.arange(n_train, n_train + len(labels["test"]), dtype=np.int64)
    splits = {"pool": pool, "val": val, "test": test}
    report.update({
        "kept": {s: len(labels[s]) for s in RAW_SPLITS},
        "splits": {k: int(len(v)) for k, v in splits.items()},
        "skipped_count": len(problems),
        "skipped_by_reason": _summarise(problems),
        "skipped": [p.to_json() for p in problems],
        "notes": notes,
    })
    for name, idx in splits.items():
        if len(idx) == 0 and not (listing.unlabeled and name != "pool"):
            why = ("every train class has at most one sample, nothing to carve val from"
                   if name == "val" and n_train else "none of the listed samples could be encoded")
            _fail_empty(work, report, f"{cfg.dataset}: the {name} split would be empty ({why}; "
                                      f"{len(problems)} samples skipped: {_summarise(problems)})")
    if len(pool) < len(val):
        counts = np.bincount(labels["train"], minlength=len(listing.classes))
        raise PrepareError(
            f"{cfg.dataset}: --val-per-class {cfg.val_per_class:g} would leave {len(pool)} pool rows "
            f"against {len(val)} val rows (train classes hold {int(counts.min())} to {int(counts.max())} "
            f"samples, and val leaves one of each class in the pool); lower --val-per-class or give a "
            f"fraction such as 0.1 (the encoded shards in {work} are reused)"
        )
    short = [c for i, c in enumerate(listing.classes)
             if cfg.val_per_class >= 1 and 0 < (labels["train"] == i).sum() <= cfg.val_per_class]
    if short:
        report["warnings"].append(f"{len(short)} classes have at most --val-per-class train samples and kept "
                                  f"only one in the pool: {short[:10]}")
    missing_classes = [c for i, c in enumerate(listing.classes) if not (labels["train"][pool] == i).any()]
    if missing_classes and not listing.unlabeled:
        report["warnings"].append(f"{len(missing_classes)} classes have no pool sample: {missing_classes[:10]}")

    import torch
    import torchaudio
    import torchvision

    features = {m: np.concatenate([parts[s][m] for s in RAW_SPLITS if parts[s]]) for m in encoders}
    if cfg.dtype == "float16":
        for m, x in features.items():
            peak = float(np.abs(x).max()) if x.size else 0.0
            if peak > np.finfo(np.float16).max:
                raise PrepareError(f"{m} features reach {peak:.3g}, beyond float16's range; rerun with "
                                   f"--dtype float32 (the encoded shards in {work} are reused)")
    features = {m: x.astype(cfg.dtype) for m, x in features.items()}
    meta = {
        "encoders": {m: e.describe() for m, e in encoders.items()},
        "preprocessing": {m: e.settings() for m, e in encoders.items()},
        "source": {"dataset": cfg.dataset, "raw": str(raw), "layout": listing.layout},
        "splits": {"test": "official test split", "pool": "official train split minus val",
                   "val": f"stratified from train: {cfg.val_per_class:g} "
                          f"{'per class' if cfg.val_per_class >= 1 else 'of each class'}, seed {cfg.seed}"}
        if not listing.unlabeled else {"pool": "every sample, unlabeled (-1)", "val": "empty", "test": "empty"},
        "prepare": {"rlmba": importlib.metadata.version("rlmba"), "torch": torch.__version__,
                    "torchvision": torchvision.__version__, "torchaudio": torchaudio.__version__,
                    "device": device, "batch_size": cfg.batch_size, "dtype": cfg.dtype,
                    "frames": cfg.frames if "frames" in listing.modalities.values() else None,
                    "skipped": len(problems), "report": REPORT_FILE, "samples": SAMPLES_FILE},
    }
    dataset = MultimodalDataset(features=features, labels=np.concatenate([labels["train"], labels["test"]]),
                                splits=splits, classes=listing.classes, name=cfg.dataset, meta=meta)
    dataset.save(out, overwrite=cfg.overwrite)
    t_end = time.perf_counter()
    report["timing"] = {
        "list_s": round(t_listed - t_start, 3), "load_encoders_s": round(t_ready - t_listed, 3),
        "encode_s": round(t_encoded - t_ready, 3),
        "total_s": round(t_end - t_start, 3), "samples_encoded_this_run": encoded // max(len(encoders), 1),
        "samples_per_s": round(encoded / len(encoders) / (t_encoded - t_ready), 2) if encoded else None,
        "device": device, "workers": cfg.workers, "batch_size": cfg.batch_size,
    }
    report["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2))
    with open(out / SAMPLES_FILE, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "split", "id", "class"])
        split_of = np.empty(dataset.n_samples, dtype=object)
        for name, idx in splits.items():
            split_of[idx] = name
        for row, (sid, label) in enumerate(zip(kept_ids["train"] + kept_ids["test"], dataset.labels)):
            w.writerow([row, split_of[row], sid, listing.classes[label] if label >= 0 else ""])
    if not cfg.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return out
