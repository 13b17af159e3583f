"""A labeling campaign on your own data: the RL-MBA round (arXiv 2603.25107) with people
answering instead of known labels.

A project is a folder holding the label store (:mod:`rlmba_env.labeling.store`) and the batch
files sent to annotators; its data is a feature cache whose labels may be unknown (-1). The
loop is the environment's, one round per :meth:`LabelingProject.next`:

1. the first ``next`` proposes the *audit set*: random items (or the cache's ``val`` split)
   whose labels play the role of ``val`` (AMCB weights, metrics), since a real project has no
   labeled validation split;
2. the second proposes the *initial set*: the random rows the env draws at ``reset``;
3. every later ``next`` rebuilds the env at the current round from the labels so far
   (:meth:`MultimodalALEnv.resume`), trains the evidential learner, scores the pool, records
   the round's audit metrics and asks the agent for a batch. The agent sees what a strategy or
   policy sees in the env (the pool state, the candidate observation), never a label.

The env's random draws are replayed from the project seed exactly as ``env.reset(seed=seed)``
makes them, so with the cache's ``val`` split as audit set and the same agent, a simulated
annotator answering with the true labels reproduces the env's learning curve
(``scripts/simulate_annotator.py``; ``tests/test_labeling.py``).
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol as TypingProtocol

import numpy as np

from rlmba_env.data.cache import FEATURES_FILE, read_cache
from rlmba_env.data.dataset import UNLABELED, MultimodalDataset, load_dataset
from rlmba_env.labeling.store import LabelStore, StoreError

BATCH_DIR = "batches"
FEATURES_DIR = "features"
"""the project's uncompressed copy of the cache's features, ``<modality>.npy``, which ``next``
maps into memory instead of inflating the cache's compressed ``features.npz`` (3 s at 1e5
items x 2 x 512); written by ``init``, and by the first ``next`` of a project made before or
after the cache's features file changed (``source.json`` records its size and time)"""
FEATURES_STAMP = "source.json"
AUDIT_PER_CLASS = 3
"""default audit set size per class (random items, not stratified: their classes are unknown)"""
SAMPLES_FILE = "samples.csv"  # written by `rlmba prepare` next to a cache: row, split, id, class
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
TEXT_SUFFIXES = (".txt",)


LABEL_STUDIO_CONFIG = "label_studio.xml"


def label_studio_config(classes: list[str]) -> str:
    """A Label Studio labeling config for the tasks ``next`` writes: the item's id (and image and
    text, where the tasks carry them: add ``<Image name="image" value="$image"/>`` or
    ``<Text name="text" value="$text"/>``) and one single choice among the classes, named
    ``label`` as :mod:`rlmba_env.labeling.answers` reads it."""
    from xml.sax.saxutils import quoteattr

    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classes)
    return ('<View>\n  <Text name="item" value="$rlmba_id"/>\n'
            f'  <Choices name="label" toName="item" choice="single" showInline="true">\n{choices}\n'
            '  </Choices>\n</View>\n')


class LabelingError(ValueError):
    """A labeling command was asked something it cannot do; the message says what and why."""


@dataclass
class ProjectConfig:
    """Settings of a labeling project, fixed at ``init`` (stored in the label store)."""

    data: str
    """feature cache directory (absolute)"""
    classes: list[str]
    """class names; an answer must be one of them"""
    audit_size: int
    """items in the audit set (plays ``val``)"""
    audit_split: str | None = None
    """``"val"``: the audit set is the cache's val split (to reproduce the env); None: random"""
    initial_labels: int = 20
    """random items labeled before the first round (the env's initial labels)"""
    per_round: int = 10
    """items per round batch (``next -n`` overrides it for one batch)"""
    rounds: int = 10
    """rounds of the campaign (the env's protocol; the policy observation's round fraction)"""
    seed: int = 0
    """the campaign seed: the same seed replays ``env.reset(seed=seed)``"""
    learner: dict[str, Any] = field(default_factory=dict)
    """LearnerConfig fields (the env's ``EnvConfig.learner``)"""
    env: dict[str, Any] = field(default_factory=dict)
    """other EnvConfig fields (kappa, beta, tau, epsilon, device, precision, ...)"""
    n_samples: int = 0
    """rows of the cache, checked when the project is opened"""
    modalities: list[str] = field(default_factory=list)
    """the cache's modalities, in order"""

    def env_config(self):
        """The env's settings: ``learner`` and ``env`` as one :class:`~rlmba_env.config.EnvConfig`."""
        from rlmba_env.config import EnvConfig

        return EnvConfig(learner=dict(self.learner), **self.env)


@dataclass
class Batch:
    """One proposed batch: its items, in the agent's order, and where its files are."""

    id: int
    kind: str
    round: int | None
    agent: str
    rows: list[int]
    item_ids: list[str]
    csv: Path | None = None
    tasks: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class ImportReport:
    """What an import did: labels committed, and one line per invalid row."""

    committed: int
    errors: list[str]
    skipped_unanswered: int = 0
    strict: bool = False


class Chooser(TypingProtocol):
    """How the project asks an agent for a batch: ``choose(env, rng)`` returns ``env.budget``
    distinct unlabeled pool rows. ``env`` is a :class:`~rlmba_env.env.MultimodalALEnv` resumed
    at the current round (its unlabeled rows carry label -1: an agent cannot read them)."""

    name: str

    def choose(self, env, rng: np.random.Generator) -> np.ndarray: ...


@dataclass
class StrategyChooser:
    """A classic strategy (``rlmba_env.strategies``) on the round's pool state."""

    name: str

    def choose(self, env, rng: np.random.Generator) -> np.ndarray:
        from rlmba_env.strategies import make_strategy

        return np.asarray(make_strategy(self.name).select(env.pool_state(), env.budget, rng))


@dataclass
class PolicyChooser:
    """A policy acting on the env's candidate observation, one pick at a time
    (``act(obs) -> candidate position``), e.g. a trained agent from ``agents``."""

    name: str
    act: Callable[[dict], int]

    def choose(self, env, rng: np.random.Generator) -> np.ndarray:
        return env.pick_rows(self.act)


def episode_seed(seed: int) -> int:
    """The episode seed ``env.reset(seed=seed)`` draws."""
    from gymnasium.utils import seeding

    rng, _ = seeding.np_random(int(seed))
    return int(rng.integers(2**63 - 1))


def item_ids_of(cache: Path, n: int) -> list[str]:
    """Item names: the ids ``rlmba prepare`` recorded (``samples.csv``), else the row number."""
    samples = cache / SAMPLES_FILE
    if samples.is_file():
        with open(samples, newline="") as f:
            ids = {int(r["row"]): r["id"] for r in csv.DictReader(f)}
        if len(ids) == n and len(set(ids.values())) == n:
            return [ids[i] for i in range(n)]
    return [str(i) for i in range(n)]


class LabelingProject:
    """A labeling campaign in a folder: ``LabelingProject.init(dir, data=cache)`` creates it,
    ``LabelingProject(dir)`` opens it.

    ``next(agent)`` proposes a batch (writing ``batches/batch-NNNN.csv`` and ``.json``, Label
    Studio tasks), ``import_labels(file)`` takes answers back (CSV ``id,label`` or a Label Studio
    JSON export), ``status()`` and ``plot(path)`` report the campaign, ``export(path)`` writes
    every label, ``measure()`` trains on the labels so far and records the audit metrics
    without proposing, ``backup(path)`` copies the store while it is in use.
    """

    def __init__(self, directory: str | Path):
        self.dir = Path(directory).expanduser()
        self.store = LabelStore(self.dir / LabelStore.FILE)
        self.config = ProjectConfig(**self.store.get_meta("config"))
        self._dataset: MultimodalDataset | None = None
        items = self.store.items()
        self._item_id = {r: i for r, i, _ in items}
        self._row_of = {i: r for r, i, _ in items}
        self._role = {r: role for r, _, role in items}

    def close(self) -> None:
        self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- creation -----------------------------------------------------------------------------
    @classmethod
    def init(cls, directory: str | Path, data: str | Path, classes: list[str] | None = None,
             audit_size: int | None = None, audit_split: str | None = None, initial_labels: int = 20,
             per_round: int = 10, rounds: int = 10, seed: int = 0, learner: dict | None = None,
             env: dict | None = None) -> "LabelingProject":
        """Create a project in ``directory`` (new or empty) over the feature cache ``data``.

        Items are the cache's ``pool`` and ``val`` rows; a labeled ``test`` split, if the cache
        has one, is kept as a held-out test set for reporting. ``classes`` default to the
        cache's; ``audit_size`` to :data:`AUDIT_PER_CLASS` per class; ``audit_split="val"`` uses
        the cache's val split as the audit set instead of a random draw.
        """
        directory = Path(directory).expanduser()
        if directory.exists() and any(directory.iterdir()):
            raise LabelingError(f"{directory} is not empty; a labeling project needs a new or empty folder")
        data = Path(data).expanduser().resolve()
        ds = load_dataset(data)
        classes = list(ds.classes) if classes is None else [str(c) for c in classes]
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise LabelingError(f"classes must be at least 2 distinct names, got {classes}")
        for name, value in (("initial_labels", initial_labels), ("per_round", per_round), ("rounds", rounds)):
            if not isinstance(value, int) or value < 1:
                raise LabelingError(f"{name} must be a positive integer, got {value!r}")
        if audit_split not in (None, "val"):
            raise LabelingError(f"audit_split must be None (random) or 'val', got {audit_split!r}")
        order = np.concatenate([ds.splits["pool"], ds.splits["val"]])
        if audit_split == "val":
            if len(ds.splits["val"]) == 0:
                raise LabelingError(f"audit_split='val' but the cache {data} has an empty val split")
            if audit_size is not None and audit_size != len(ds.splits["val"]):
                raise LabelingError(f"audit_split='val' fixes the audit size at {len(ds.splits['val'])}; "
                                    f"leave audit_size out")
            audit = set(ds.splits["val"].tolist())
            audit_size = len(audit)
        else:
            audit_size = AUDIT_PER_CLASS * len(classes) if audit_size is None else audit_size
            if not isinstance(audit_size, int) or not 1 <= audit_size < len(order):
                raise LabelingError(f"audit_size must be in [1, {len(order)}), got {audit_size!r}")
            audit = set(np.random.default_rng([seed, 1]).choice(order, audit_size, replace=False).tolist())
        pool_size = len(order) - len(audit)
        need = initial_labels + per_round * rounds
        if need > pool_size:
            raise LabelingError(f"the campaign needs {need} pool items ({initial_labels} + {rounds} x "
                                f"{per_round}) but {pool_size} are left after the audit set")
        config = ProjectConfig(data=str(data), classes=classes, audit_size=audit_size, audit_split=audit_split,
                               initial_labels=initial_labels, per_round=per_round, rounds=rounds, seed=int(seed),
                               learner=dict(learner or {}), env=dict(env or {}), n_samples=ds.n_samples,
                               modalities=list(ds.modalities))
        _check_env_config(config)
        ids = item_ids_of(data, ds.n_samples)
        items = [(int(r), ids[r], "audit" if r in audit else "pool") for r in order.tolist()]
        directory.mkdir(parents=True, exist_ok=True)
        (directory / BATCH_DIR).mkdir(exist_ok=True)
        LabelStore.create(directory / LabelStore.FILE, asdict(config), classes, items).close()
        _atomic_write(directory / LABEL_STUDIO_CONFIG, label_studio_config(classes))
        _write_features(directory / FEATURES_DIR, ds)
        return cls(directory)

    # -- data ----------------------------------------------------------------------------------
    @property
    def dataset(self) -> MultimodalDataset:
        """The cache, loaded once (its labels of items are never read: they may be hidden), with the
        features from the project's copy (:data:`FEATURES_DIR`) when it has one."""
        if self._dataset is None:
            fields = read_cache(self.config.data, features=False)  # labels, splits, classes, provenance
            features = _read_features(self.dir / FEATURES_DIR, self.config.modalities, len(fields["labels"]),
                                      _features_stamp(self.config.data))
            if features is None:  # a project made before the copy, or the cache's features changed
                ds = load_dataset(self.config.data)
                if ds.n_samples == self.config.n_samples:
                    _write_features(self.dir / FEATURES_DIR, ds)
            else:
                ds = MultimodalDataset(features=features, **fields)
            if ds.n_samples != self.config.n_samples:
                raise LabelingError(f"the cache {self.config.data} now has {ds.n_samples} rows; the project "
                                    f"was created on {self.config.n_samples}")
            self._dataset = ds
        return self._dataset

    def _order(self) -> np.ndarray:
        ds = self.dataset
        return np.concatenate([ds.splits["pool"], ds.splits["val"]])

    def _view(self, labels: dict[int, int]) -> MultimodalDataset:
        """The dataset the env sees: labels from the store (-1 where unknown), audit as val, the
        cache's test split when fully labeled in the project's classes."""
        ds = self.dataset
        order = self._order()
        y = np.full(ds.n_samples, UNLABELED, dtype=np.int64)
        if labels:
            rows = np.fromiter(labels.keys(), dtype=np.int64, count=len(labels))
            y[rows] = np.fromiter(labels.values(), dtype=np.int64, count=len(labels))
        test = ds.splits["test"]
        if len(test) and list(ds.classes) == self.config.classes and (ds.labels[test] != UNLABELED).all():
            y[test] = ds.labels[test]
        else:
            test = test[:0]
        role = np.array([self._role[r] for r in order.tolist()])
        return ds.with_targets(y, {"pool": order[role == "pool"], "val": order[role == "audit"], "test": test},
                               classes=self.config.classes)

    def _env(self, view: MultimodalDataset, per_round: int):
        from rlmba_env.env import MultimodalALEnv

        cfg = self.config
        protocol = {"initial_labels": cfg.initial_labels, "per_round": per_round, "rounds": cfg.rounds}
        return MultimodalALEnv(view, protocol, cfg.env_config())

    # -- the loop ------------------------------------------------------------------------------
    def next(self, agent: str | Chooser = "random", n: int | None = None, write_files: bool = True) -> Batch:
        """Propose the next batch (audit set, then initial set, then one round batch per call)
        and record it as pending. ``agent``: a strategy name or a :class:`Chooser`; ``n``: batch
        size of a round batch (default ``per_round``)."""
        chooser = StrategyChooser(agent) if isinstance(agent, str) else agent
        if isinstance(agent, str):
            from rlmba_env.strategies import STRATEGIES

            if agent not in STRATEGIES:
                raise LabelingError(f"unknown agent {agent!r}; strategies: {', '.join(sorted(STRATEGIES))}")
        cfg = self.config
        if n is not None and (not isinstance(n, int) or n < 1):
            raise LabelingError(f"n must be a positive integer, got {n!r}")
        start, cpu_start = time.perf_counter(), time.process_time()
        _ = self.dataset
        load_s = time.perf_counter() - start
        with self.store.write():
            batches = self.store.batches()
            kinds = {b["kind"] for b in batches}
            order = self._order()
            if "audit" not in kinds:
                rows = [r for r in order.tolist() if self._role[r] == "audit"]
                batch = self._add(("audit", None, "random"), rows, None)
            elif "initial" not in kinds:
                pool = np.array([r for r in order.tolist() if self._role[r] == "pool"])
                # the env's reset draws its initial labels first from the episode generator
                initial = np.random.default_rng(episode_seed(cfg.seed)).choice(pool, cfg.initial_labels, replace=False)
                batch = self._add(("initial", None, "random"), initial.tolist(), None)
            else:
                batch = self._round_batch(batches, chooser, n or cfg.per_round)
            if write_files:
                self._write_batch_files(batch)
        if batch.timings:
            batch.timings["load_s"] = load_s
            batch.timings["total_s"] = time.perf_counter() - start
            batch.timings["cpu_s"] = time.process_time() - cpu_start
        return batch

    def measure(self) -> dict[str, Any]:
        """Train on the labels so far and record the audit metrics, proposing nothing (e.g. after
        the last round's answers)."""
        with self.store.write():
            batches = self.store.batches()
            env, info, _ = self._resume(batches, self.config.per_round)
            return self._record_round(env, info)

    def _seed_labels_missing(self, batches: list[dict], labels: dict[int, int]) -> None:
        for b in batches:
            if b["kind"] in ("audit", "initial"):
                missing = [r for r, _ in self.store.batch_rows(b["id"]) if r not in labels]
                if missing:
                    raise LabelingError(
                        f"{len(missing)} item(s) of the {b['kind']} batch {b['id']} have no label yet (e.g. "
                        f"{self._item_id[missing[0]]!r}); import their labels before the first round")

    def _resume(self, batches: list[dict], per_round: int):
        kinds = {b["kind"] for b in batches}
        if not {"audit", "initial"} <= kinds:
            raise LabelingError("the audit and initial batches come first: run `next` "
                                f"{2 - len(kinds & {'audit', 'initial'})} more time(s) and label them")
        labels = self.store.labels()
        self._seed_labels_missing(batches, labels)
        rounds = [b for b in batches if b["kind"] == "round"]
        view = self._view(labels)
        env = self._env(view, per_round)
        labeled = [r for r in labels if self._role[r] == "pool"]
        held = [r for r in self.store.pending() if self._role[r] == "pool"]
        weights = rounds[-1]["weights"] if rounds else None
        _, info = env.resume(episode_seed(self.config.seed), len(rounds), sorted(labeled), weights, held)
        return env, info, rounds

    def _round_batch(self, batches: list[dict], chooser: Chooser, per_round: int) -> Batch:
        cfg = self.config
        done = sum(b["kind"] == "round" for b in batches)
        if done >= cfg.rounds:
            raise LabelingError(f"the campaign's {cfg.rounds} rounds are done; `status` shows the results "
                                f"(create a new project to plan more rounds)")
        t_load = time.perf_counter()
        env, info, rounds = self._resume(batches, per_round)
        t_train = time.perf_counter()
        self._record_round(env, info)
        same = [b for b in rounds if b["agent"] == chooser.name and b["agent_state"]]
        rng = np.random.default_rng(cfg.seed)
        if same:
            rng.bit_generator.state = same[-1]["agent_state"]
        rows = np.asarray(chooser.choose(env, rng), dtype=np.int64)
        t_select = time.perf_counter()
        self._check_choice(rows, env)
        scores = self._scores(env, rows)
        weights = [info[f"weight_{m}"] for m in env.modalities]
        batch = self._add(("round", done, chooser.name), rows.tolist(), scores,
                          agent_state=rng.bit_generator.state, weights=weights)
        batch.timings = {"train_s": env.last_timings.get("train_s", float("nan")),
                         "score_s": env.last_timings.get("score_s", float("nan")),
                         "resume_s": t_train - t_load, "select_s": t_select - t_train}
        return batch

    def _check_choice(self, rows: np.ndarray, env) -> None:
        state = env.pool_state()
        allowed = set(state.unlabeled.cpu().tolist())
        bad = [r for r in rows.tolist() if r not in allowed]
        if bad or len(set(rows.tolist())) != rows.size:
            raise LabelingError(f"the agent proposed row {bad[0] if bad else rows.tolist()} which is not a "
                                f"distinct, unlabeled, unproposed pool item")

    def _scores(self, env, rows: np.ndarray) -> list[dict]:
        """The model's view of each proposed item: score q, fused prediction and its probability."""
        state = env.pool_state()
        index = {r: i for i, r in enumerate(state.unlabeled.cpu().tolist())}
        pos = np.array([index[r] for r in rows.tolist()], dtype=np.int64)
        alpha = state.fused_alpha[pos].double().cpu().numpy()
        probs = alpha / alpha.sum(-1, keepdims=True)
        q = state.score[pos].cpu().numpy()
        return [{"q": float(q[i]), "predicted": self.config.classes[int(probs[i].argmax())],
                 "probability": float(probs[i].max())} for i in range(rows.size)]

    def _record_round(self, env, info: dict) -> dict[str, Any]:
        metrics = {"audit_top1": info["top1"], "audit_nll": info["nll"], "audit_ece": info["ece"],
                   "balance": info["balance"]}
        for m in env.modalities:
            metrics[f"audit_top1_{m}"] = info[f"top1_{m}"]
            metrics[f"contribution_{m}"] = info[f"contribution_{m}"]
            metrics[f"weight_{m}"] = info[f"weight_{m}"]
        if len(env.dataset.splits["test"]):
            metrics["test_top1"] = info["test_top1"]
            for m in env.modalities:
                metrics[f"test_top1_{m}"] = info[f"test_top1_{m}"]
        self.store.add_round(int(info["round"]), int(info["labeled"]), metrics)
        return {"round": int(info["round"]), "labeled": int(info["labeled"]), **metrics}

    def _add(self, what: tuple, rows: list[int], scores, agent_state=None, weights=None) -> Batch:
        kind, round_, agent = what
        bid = self.store.add_batch(kind, round_, agent, rows, scores, agent_state, weights)
        return Batch(bid, kind, round_, agent, list(rows), [self._item_id[r] for r in rows])

    # -- files ---------------------------------------------------------------------------------
    def batch_files(self, batch_id: int) -> tuple[Path, Path]:
        stem = self.dir / BATCH_DIR / f"batch-{batch_id:04d}"
        return stem.with_suffix(".csv"), stem.with_suffix(".json")

    def _write_batch_files(self, batch: Batch) -> None:
        """``id,label`` CSV with empty labels for annotators to fill, and Label Studio tasks."""
        csv_path, json_path = self.batch_files(batch.id)
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(csv_path, "id,label\n" + "".join(f"{_csv_field(i)},\n" for i in batch.item_ids))
        tasks = [{"data": {"rlmba_id": i, "row": r, "batch": batch.id, **self._media(i)}}
                 for r, i in zip(batch.rows, batch.item_ids)]
        _atomic_write(json_path, json.dumps(tasks, indent=1))
        batch.csv, batch.tasks = csv_path, json_path

    def _media(self, item_id: str) -> dict[str, str]:
        """The item's image path or text, when the cache's provenance names a raw file."""
        source = self.dataset.meta.get("source")
        raw = source.get("raw") if isinstance(source, dict) else None
        if not raw:
            return {}
        path = Path(raw) / item_id
        media = {}
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            media["image"] = str(path)
        text = path if path.suffix.lower() in TEXT_SUFFIXES else path.with_suffix(".txt")
        if text.is_file():  # `rlmba prepare folder`: the text beside the image
            media["text"] = text.read_text(errors="replace")
        return media

    # -- answers -------------------------------------------------------------------------------
    def import_labels(self, path: str | Path, strict: bool = False, annotator: str | None = None) -> ImportReport:
        """Commit the answers in ``path`` (CSV ``id,label[,annotator]`` or a Label Studio JSON
        export) in one transaction. Every row is validated (known item, known class, item in a
        pending batch, no conflicting duplicate); invalid rows are reported, one line each, and
        left out, or with ``strict`` nothing is committed when any row is invalid."""
        from rlmba_env.labeling.answers import read_answers

        answers, errors, unanswered = read_answers(Path(path))
        classes = {c: i for i, c in enumerate(self.config.classes)}
        with self.store.write():
            labels = self.store.labels()
            pending = self.store.pending()
            valid: dict[int, tuple] = {}
            first: dict[str, tuple[str, str]] = {}
            for a in answers:
                row = self._row_of.get(a.item_id)
                if row is None:
                    errors.append(f"{a.where}: unknown item id {a.item_id!r} (not an item of this project)")
                    continue
                if a.label not in classes:
                    errors.append(f"{a.where}: item {a.item_id!r}: unknown class {a.label!r}; classes are "
                                  f"{', '.join(self.config.classes)}")
                    continue
                if a.item_id in first:
                    where, label = first[a.item_id]
                    if label != a.label:
                        errors.append(f"{a.where}: item {a.item_id!r} labeled {a.label!r} here but {label!r} at "
                                      f"{where}; conflicting answers, neither imported")
                        valid.pop(row, None)
                    continue
                first[a.item_id] = (a.where, a.label)
                if row in labels:
                    errors.append(f"{a.where}: item {a.item_id!r} is already labeled "
                                  f"({self.config.classes[labels[row]]!r}); not in a pending batch")
                    continue
                if row not in pending:
                    errors.append(f"{a.where}: item {a.item_id!r} is not in a pending batch (propose it with `next`)")
                    continue
                valid[row] = (row, classes[a.label], a.annotator or annotator, pending[row], a.source)
            committed = 0
            if valid and not (strict and errors):
                self.store.add_labels(list(valid.values()))
                committed = len(valid)
        return ImportReport(committed, errors, unanswered, strict)

    # -- reports -------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Labeled items per class, batches, pending items and every measured round."""
        with self.store.read():
            labels = self.store.labels()
            pending = self.store.pending()
            batches = self.store.batches()
            rounds = self.store.rounds()
        counts = np.bincount(np.fromiter(labels.values(), dtype=np.int64, count=len(labels)),
                             minlength=len(self.config.classes))
        audit = sum(1 for r in labels if self._role[r] == "audit")
        return {
            "items": len(self._role), "labeled": len(labels), "audit_labeled": audit,
            "audit_size": self.config.audit_size, "pending": len(pending),
            "per_class": dict(zip(self.config.classes, counts.tolist())),
            "batches": [{k: b[k] for k in ("id", "kind", "round", "agent", "created")} for b in batches],
            "rounds_done": sum(b["kind"] == "round" for b in batches), "rounds_planned": self.config.rounds,
            "rounds": rounds,
        }

    def plot(self, path: str | Path) -> Path:
        """PNG of the measured rounds against labels: audit top-1 fused and per modality,
        modality contributions and balance."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rounds = self.status()["rounds"]
        if not rounds:
            raise LabelingError("no round measured yet: `next` measures one after the initial batch is labeled")
        modalities = self.config.modalities
        x = [r["labeled"] for r in rounds]
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
        a.plot(x, [r["audit_top1"] for r in rounds], "o-", label="fused")
        for m in modalities:
            a.plot(x, [r[f"audit_top1_{m}"] for r in rounds], ".--", label=m)
        a.set(xlabel="labels", ylabel="audit top-1", title="audit-set top-1")
        a.legend()
        for m in modalities:
            b.plot(x, [r[f"contribution_{m}"] for r in rounds], ".-", label=f"contribution {m}")
        b.plot(x, [r["balance"] for r in rounds], "k-", label="balance")
        b.set(xlabel="labels", title="modality contributions and balance")
        b.legend()
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    def export(self, path: str | Path) -> int:
        """Write every label as CSV ``id,label,annotator,labeled_at,batch,source``; returns the count."""
        with self.store.read():
            rows = self.store.label_rows()
        lines = ["id,label,annotator,labeled_at,batch,source\n"]
        lines += [",".join(_csv_field("" if v is None else str(v)) for v in row) + "\n" for row in rows]
        _atomic_write(Path(path), "".join(lines))
        return len(rows)

    def backup(self, path: str | Path) -> Path:
        return self.store.backup(path)


def _check_env_config(config: ProjectConfig) -> None:
    try:
        env = config.env_config()
    except (TypeError, ValueError) as e:
        raise LabelingError(f"env settings (learner {config.learner}, env {config.env}): {e}") from None
    if env.learner.warm_start:
        raise LabelingError("learner warm_start is not supported by labeling projects: each round is "
                            "trained afresh from the store (the env's default)")
    if env.reward != "gain":
        raise LabelingError("a labeling project has no reward; leave env 'reward' out")


def _features_stamp(cache) -> dict[str, int]:
    """Size and modification time of the cache's features file: what the project's copy is of."""
    st = (Path(cache) / FEATURES_FILE).stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_features(directory: Path, ds: MultimodalDataset) -> None:
    """The project's copy of ``ds``'s features (:data:`FEATURES_DIR`), each file written whole
    or not at all, the stamp of the cache it copies (:data:`FEATURES_STAMP`) last; a copy that
    cannot be written is left out (``next`` then reads the cache)."""
    tmp = None
    try:
        directory.mkdir(exist_ok=True)
        (directory / FEATURES_STAMP).unlink(missing_ok=True)  # no stamp while the files change
        for m, x in ds.features.items():
            tmp = directory / f".{m}.npy.tmp-{os.getpid()}"
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(x), allow_pickle=False)
            tmp.replace(directory / f"{m}.npy")
        _atomic_write(directory / FEATURES_STAMP, json.dumps(_features_stamp(ds.source)))
    except OSError:  # e.g. a full disk: the project works from the cache, only slower
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def _read_features(directory: Path, modalities: list[str], rows: int,
                   stamp: dict[str, int]) -> dict[str, np.ndarray] | None:
    """The project's copy of the features, memory-mapped (copy on write: the arrays are
    writable, as torch expects, and the files never change); None unless the copy is of the
    cache's features as they are now (``stamp``) and every modality has a readable file of
    ``rows`` rows."""
    try:
        if json.loads((directory / FEATURES_STAMP).read_text()) != stamp:
            return None
    except (OSError, ValueError):
        return None
    features = {}
    for m in modalities:
        try:
            x = np.load(directory / f"{m}.npy", mmap_mode="c", allow_pickle=False)
        except (OSError, ValueError):
            return None
        if x.ndim != 2 or x.shape[0] != rows:
            return None
        features[m] = x
    return features


def _csv_field(text: str) -> str:
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


__all__ = ["Batch", "Chooser", "ImportReport", "LabelingError", "LabelingProject", "PolicyChooser",
           "ProjectConfig", "StoreError", "StrategyChooser", "episode_seed"]
