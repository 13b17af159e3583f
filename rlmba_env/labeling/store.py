"""The label store of a labeling project: one SQLite database, crash-safe by construction.

Nothing an annotator answered may be lost, so every command is one SQLite transaction in WAL
mode (``synchronous=FULL``): a process killed in the middle of an import leaves either all or
none of that file's rows, and the next open rolls back the unfinished transaction. Commands
that write take the write lock first (``BEGIN IMMEDIATE``), so two ``next`` commands at once
run one after the other and the second sees the first's pending batch. Readers (``status``,
``export``, ``backup``) never wait for writers (WAL). Foreign keys tie every label and batch
entry to an item and every label to a class.

Tables (schema version :data:`SCHEMA_VERSION`):

| table         | one row per                      | columns                                            |
|---------------|----------------------------------|----------------------------------------------------|
| ``meta``      | setting                          | ``key``, ``value`` (JSON): schema version, config  |
| ``classes``   | class                            | ``idx``, ``name``                                  |
| ``items``     | labelable dataset row            | ``row``, ``item_id``, ``role`` (pool / audit)      |
| ``batches``   | batch proposed by ``next``       | ``id``, ``kind``, ``round``, ``agent``, ``created``, ``agent_state``, ``weights`` |
| ``batch_items`` | item of a batch                | ``batch_id``, ``row``, ``position``, ``score`` (JSON: the model's scores) |
| ``labels``    | labeled item                     | ``row``, ``class_idx``, ``annotator``, ``labeled_at``, ``batch_id``, ``source`` |
| ``rounds``    | measurement of the model         | ``id``, ``round``, ``labeled``, ``created``, ``metrics`` (JSON) |

An item is *pending* when it belongs to a batch and has no label yet; an item belongs to at
most one pending batch.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 600_000
"""how long a command waits for another one's write lock (a ``next`` training on a large pool)"""

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE classes (idx INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE items (
    row INTEGER PRIMARY KEY,
    item_id TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('pool', 'audit'))
);
CREATE TABLE batches (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('audit', 'initial', 'round')),
    round INTEGER,
    agent TEXT NOT NULL,
    created TEXT NOT NULL,
    agent_state TEXT,
    weights TEXT
);
CREATE TABLE batch_items (
    batch_id INTEGER NOT NULL REFERENCES batches(id),
    row INTEGER NOT NULL REFERENCES items(row),
    position INTEGER NOT NULL,
    score TEXT,
    PRIMARY KEY (batch_id, row)
);
CREATE INDEX batch_items_row ON batch_items(row);
CREATE TABLE labels (
    row INTEGER PRIMARY KEY REFERENCES items(row),
    class_idx INTEGER NOT NULL REFERENCES classes(idx),
    annotator TEXT,
    labeled_at TEXT NOT NULL,
    batch_id INTEGER REFERENCES batches(id),
    source TEXT
);
CREATE TABLE rounds (
    id INTEGER PRIMARY KEY,
    round INTEGER NOT NULL,
    labeled INTEGER NOT NULL,
    created TEXT NOT NULL,
    metrics TEXT NOT NULL
);
"""


class StoreError(RuntimeError):
    """The label store is missing, of another schema version, or was asked something invalid."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class LabelStore:
    """The SQLite database of one labeling project (``DIR/labels.sqlite``)."""

    FILE = "labels.sqlite"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(f"no label store at {self.path}; create a project with `rlmba label init`")
        self.conn = self._connect(self.path)
        version = self.get_meta("schema_version")
        if version != SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema version {version}; this rlmba reads {SCHEMA_VERSION}")

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT), never
        # opened implicitly by the sqlite3 module
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return conn

    @classmethod
    def create(cls, path: str | Path, config: dict, classes: list[str],
               items: list[tuple[int, str, str]]) -> "LabelStore":
        """A new store with ``config``, ``classes`` and ``items`` (row, item id, role), in one
        transaction: an interrupted ``init`` leaves no usable store behind."""
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"{path} already exists; a project folder holds one label store")
        tmp = path.with_name(path.name + ".init")
        tmp.unlink(missing_ok=True)
        conn = cls._connect(tmp)
        try:
            conn.executescript(SCHEMA)  # into a temporary file, renamed into place when complete
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO meta VALUES (?, ?)",
                             [("schema_version", json.dumps(SCHEMA_VERSION)), ("config", json.dumps(config)),
                              ("created", json.dumps(now()))])
            conn.executemany("INSERT INTO classes VALUES (?, ?)", list(enumerate(classes)))
            conn.executemany("INSERT INTO items VALUES (?, ?, ?)", items)
            conn.execute("COMMIT")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        for suffix in ("-wal", "-shm"):
            Path(str(tmp) + suffix).unlink(missing_ok=True)
        tmp.rename(path)
        return cls(path)

    def close(self) -> None:
        self.conn.close()

    # -- transactions -----------------------------------------------------------------------
    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding the write lock from its start (``BEGIN IMMEDIATE``):
        committed when the block ends, rolled back on any exception."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """One consistent snapshot for a read-only command."""
        self.conn.execute("BEGIN")
        try:
            yield self.conn
        finally:
            self.conn.execute("COMMIT")

    # -- reads ----------------------------------------------------------------------------------
    def get_meta(self, key: str):
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def classes(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM classes ORDER BY idx")]

    def items(self) -> list[tuple[int, str, str]]:
        return list(self.conn.execute("SELECT row, item_id, role FROM items ORDER BY row"))

    def labels(self) -> dict[int, int]:
        """row -> class index of every labeled item."""
        return dict(self.conn.execute("SELECT row, class_idx FROM labels"))

    def pending(self) -> dict[int, int]:
        """row -> batch id of every item proposed and not labeled yet."""
        return dict(self.conn.execute(
            "SELECT b.row, b.batch_id FROM batch_items b LEFT JOIN labels l ON l.row = b.row "
            "WHERE l.row IS NULL"))

    def batches(self) -> list[dict]:
        cur = self.conn.execute("SELECT id, kind, round, agent, created, agent_state, weights FROM batches ORDER BY id")
        out = []
        for bid, kind, rnd, agent, created, state, weights in cur:
            out.append({"id": bid, "kind": kind, "round": rnd, "agent": agent, "created": created,
                        "agent_state": json.loads(state) if state else None,
                        "weights": json.loads(weights) if weights else None})
        return out

    def batch_rows(self, batch_id: int) -> list[tuple[int, dict]]:
        return [(r, json.loads(s) if s else {}) for r, s in self.conn.execute(
            "SELECT row, score FROM batch_items WHERE batch_id = ? ORDER BY position", (batch_id,))]

    def rounds(self) -> list[dict]:
        return [{"id": i, "round": r, "labeled": n, "created": c, **json.loads(m)} for i, r, n, c, m in
                self.conn.execute("SELECT id, round, labeled, created, metrics FROM rounds ORDER BY id")]

    def label_rows(self) -> list[tuple[str, str, str | None, str, int | None, str | None]]:
        """(item id, class name, annotator, time, batch id, source) of every label, by item row."""
        return list(self.conn.execute(
            "SELECT i.item_id, c.name, l.annotator, l.labeled_at, l.batch_id, l.source FROM labels l "
            "JOIN items i ON i.row = l.row JOIN classes c ON c.idx = l.class_idx ORDER BY l.row"))

    # -- writes (inside :meth:`write`) ----------------------------------------------------------
    def add_batch(self, kind: str, round_: int | None, agent: str, rows, scores: list[dict] | None,
                  agent_state=None, weights=None) -> int:
        cur = self.conn.execute(
            "INSERT INTO batches (kind, round, agent, created, agent_state, weights) VALUES (?, ?, ?, ?, ?, ?)",
            (kind, round_, agent, now(), json.dumps(agent_state) if agent_state is not None else None,
             json.dumps(weights) if weights is not None else None))
        bid = int(cur.lastrowid)
        scores = scores or [None] * len(rows)
        self.conn.executemany(
            "INSERT INTO batch_items VALUES (?, ?, ?, ?)",
            [(bid, int(r), i, json.dumps(s) if s is not None else None) for i, (r, s) in enumerate(zip(rows, scores))])
        return bid

    def add_labels(self, rows: list[tuple[int, int, str | None, int, str]]) -> None:
        """(row, class index, annotator, batch id, source) per label."""
        t = now()
        self.conn.executemany(
            "INSERT INTO labels (row, class_idx, annotator, labeled_at, batch_id, source) VALUES (?, ?, ?, ?, ?, ?)",
            [(r, c, a, t, b, s) for r, c, a, b, s in rows])

    def add_round(self, round_: int, labeled: int, metrics: dict) -> None:
        self.conn.execute("INSERT INTO rounds (round, labeled, created, metrics) VALUES (?, ?, ?, ?)",
                          (round_, labeled, now(), json.dumps(metrics)))

    # -- maintenance -------------------------------------------------------------------------------
    def integrity_check(self) -> str:
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]

    def backup(self, target: str | Path) -> Path:
        """A consistent copy of the store while it may be in use (SQLite's online backup API)."""
        target = Path(target)
        if target.exists():
            raise FileExistsError(f"{target} already exists; choose a new backup file")
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.unlink(missing_ok=True)
        dest = sqlite3.connect(tmp)
        try:
            self.conn.backup(dest)
            dest.execute("PRAGMA journal_mode=DELETE")
        finally:
            dest.close()
        tmp.rename(target)
        return target
