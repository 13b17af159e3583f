"""What a raw-dataset reader hands to ``rlmba prepare``: listed samples, problems, decoders.

A reader (:mod:`~rlmba_env.data.food101`, :mod:`~rlmba_env.data.kinetics_sound`,
:mod:`~rlmba_env.data.vggsound`) walks a raw dataset directory and returns a
:class:`RawListing`: the classes, the samples of the official ``train`` and ``test`` splits
(each with one input per modality: a path, a list of paths or a string), the samples it had to
drop while listing (missing files, unknown classes) as :class:`Problem` records, and one decode
function per modality. Decoding happens later, in :mod:`~rlmba_env.data.prepare`'s loader
workers; a decoder that cannot use a sample raises :class:`SampleError`, and the sample is
skipped and reported instead of failing the run.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

RAW_SPLITS = ("train", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
SAMPLE_RATE = 16_000
"""Hz of every decoded audio track (the readers resample to it, the audio encoder expects it)"""


class PrepareError(RuntimeError):
    """A raw dataset cannot be turned into a feature cache; the message says why and what to do."""


class SampleError(Exception):
    """One sample cannot be used. ``kind`` groups the report (missing, unreadable, silent, ...)."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass
class Decoded:
    """A decoded input with a non-fatal remark (e.g. one unreadable frame out of several)."""

    value: Any
    note: str = ""


@dataclass(frozen=True)
class RawSample:
    id: str
    """Stable name of the sample inside the raw dataset (a relative path or a clip id)."""
    label: int
    inputs: dict[str, Any]
    """Modality -> what that modality's decoder takes (a path, a list of paths, a string)."""


@dataclass
class Problem:
    """A sample left out of the cache, and why."""

    split: str
    id: str
    modality: str | None
    kind: str
    detail: str

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class RawListing:
    name: str
    classes: list[str]
    modalities: dict[str, str]
    """Modality name -> encoder kind: ``image``, ``frames``, ``text`` or ``audio``."""
    decoders: dict[str, Callable[..., Any]]
    """Modality -> module-level decode function (picklable, runs in loader workers)."""
    splits: dict[str, list[RawSample]]
    layout: str
    """The raw layout that was recognised, in words (recorded in meta.json)."""
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unlabeled: bool = False
    """Every label is -1 and ``test`` is empty: data to label (``rlmba prepare folder``)."""


def natural_key(name: str) -> list:
    """Sort key that puts ``frame_2`` before ``frame_10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def read_image(path) -> Any:
    """Open an image file as an RGB PIL image, fully decoded (a truncated JPEG fails here)."""
    from PIL import Image

    p = Path(path)
    if not p.is_file():
        raise SampleError("missing", f"no image file {p}")
    try:
        with Image.open(p) as im:
            im.load()
            return im.convert("RGB")
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise SampleError("unreadable", f"{p}: {type(e).__name__}: {e}") from None
