"""The development suite: nine real multi-view datasets shipped with the package.

Public multi-view benchmarks (the collection ChuanbinZhang/Multi-view-datasets on GitHub),
converted to the feature-cache format; provenance, preprocessing and licence notes are in
``devsuite/README.md`` beside this module. Each dataset carries the protocol that fits it
(``2K`` initial labels, ``K`` per round, 10 rounds for ``K`` classes, fewer rounds or a larger
budget where the pool is small or the classes many), read from ``devsuite/index.json``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from rlmba_env.protocols import Protocol

SUITE_DIR = Path(__file__).resolve().parent / "devsuite"
"""Where the suite's caches live: one folder per dataset, plus ``index.json`` and ``README.md``."""


@lru_cache(maxsize=1)
def _index() -> dict[str, dict]:
    with open(SUITE_DIR / "index.json", encoding="utf-8") as f:
        return {entry["name"]: entry for entry in json.load(f)}


def suite_names() -> list[str]:
    """The suite's dataset names, in ``index.json`` order."""
    return list(_index())


def _entry(name: str) -> dict:
    index = _index()
    if name not in index:
        raise ValueError(f"unknown development-suite dataset {name!r}; choose one of {', '.join(index)}")
    return index[name]


def suite_path(name: str) -> Path:
    """The cache folder of dataset ``name`` (load it with ``load_dataset`` or ``RLMBA-Features-v0``)."""
    _entry(name)
    return SUITE_DIR / name


def suite_protocol(name: str) -> Protocol:
    """The labeling protocol that fits dataset ``name``."""
    return Protocol(**_entry(name)["protocol"])
