"""The audio-visual raw layout shared by KineticsSound and VGGSound (``visual`` + ``audio``).

Both datasets are 10-second YouTube clips distributed as lists of clip ids; you download the
clips and extract frames and audio yourself. This reader accepts (``--raw DIR``):

Split lists, either one file per split (the first name found, in ``DIR`` or ``DIR/splits``)::

    train.txt | train.csv | my_train.txt | <dataset>_train.txt | <dataset>_train.csv
    test.txt  | test.csv  | my_test.txt  | <dataset>_test.txt  | <dataset>_test.csv

with one clip per line, ``clip_id,duration,label`` (e.g. ``-0nbe7K7WpY_000010_000020,10,
playing bagpipes``; a label may itself contain commas), or one CSV for both splits
(``<dataset>.csv`` or ``clips.csv``, in ``DIR`` or ``DIR/splits``) with rows
``ytid,start,label,split`` as in the official ``vggsound.csv`` (split ``train`` or ``test``;
other values are skipped with a warning). A first line whose second field is not a number is
a header and is skipped. For the one-CSV form the clip id on disk is the first of
``<ytid>_<start:06d>``, ``<ytid>_<start:06d>_<start+10:06d>``, ``<ytid>_<start>``, ``<ytid>``
that has frames or audio.

Media, per clip id (``<split>`` is ``train`` or ``test``; the placements may be mixed)::

    DIR/frames/<id>/frame_*.jpg  or  DIR/frames/<split>/<id>/frame_*.jpg  or  DIR/<split>/<id>/frame_*.jpg
    DIR/audio/<id>.wav           or  DIR/audio/<split>/<id>.wav           or  DIR/<split>/<id>/<id>.wav

Frame files are the ``.jpg``/``.jpeg``/``.png`` files whose name starts with ``frame``
(``frame_0.jpg``, ``frame_00001.jpg``, ``frame3.png``).

Frames are taken in natural order (``frame_2`` before ``frame_10``); ``--frames N`` evenly
spaced ones are encoded and their features averaged (unreadable ones are replaced by other
frames of the clip and noted in the report). Audio: any format libsndfile reads, expected
16 kHz mono; other rates are resampled (torchaudio), channels are averaged. A clip is skipped
and reported when its frames or audio are missing, no frame decodes, the audio does not decode,
its WAV header promises more samples than the file holds (truncated), it is shorter than
0.1 s, or its peak amplitude is below 1e-4 (silent).
"""

from __future__ import annotations

import csv
import struct
from pathlib import Path

import numpy as np

from rlmba_env.data.raw import (
    IMAGE_EXTENSIONS,
    RAW_SPLITS,
    SAMPLE_RATE,
    Decoded,
    PrepareError,
    Problem,
    RawListing,
    RawSample,
    SampleError,
    natural_key,
    read_image,
)

MIN_SECONDS = 0.1
SILENCE_PEAK = 1e-4
FRAME_PREFIX = "frame"


def layout_help(name: str) -> str:
    return (f"expected {name} layout: split lists DIR/train.txt + DIR/test.txt (clip_id,duration,label) "
            f"or DIR/{name}.csv (ytid,start,label,split); frames DIR/frames/<id>/frame_*.jpg; "
            f"audio DIR/audio/<id>.wav (see `python -c \"import rlmba_env.data.audiovisual as m; help(m)\"`)")


# -- decoders (run in loader workers) ---------------------------------------------------------
def frame_paths(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    paths = [p for p in folder.iterdir()
             if p.name.startswith(FRAME_PREFIX) and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(paths, key=lambda p: natural_key(p.name))


def read_frames(folder, frames: int = 3):
    """Up to ``frames`` evenly spaced decoded frames of a clip (PIL images, in time order)."""
    folder = Path(folder)
    paths = frame_paths(folder)
    if not paths:
        raise SampleError("missing", f"no {FRAME_PREFIX}*.jpg / .png in {folder}")
    n = min(frames, len(paths))
    chosen = sorted(set(np.linspace(0, len(paths) - 1, n).round().astype(int).tolist()))
    order = chosen + [i for i in range(len(paths)) if i not in chosen]
    images, bad = [], []
    for i in order:
        if len(images) == n:
            break
        try:
            images.append(read_image(paths[i]))
        except SampleError as e:
            bad.append(e.detail)
    if not images:
        raise SampleError("unreadable", f"none of the {len(paths)} frames in {folder} decodes ({bad[0]})")
    return Decoded(images, f"{len(bad)} unreadable frame(s): {bad[0]}" if bad else "")


def _wav_declared_frames(path: Path, frame_bytes: int) -> int | None:
    """Samples per channel that a RIFF/WAVE header promises, or None if it does not say."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                # Streaming writers leave 0 or 0xFFFFFFFF: the size is unknown, not a promise.
                if size in (0, 0xFFFFFFFF) or frame_bytes <= 0:
                    return None
                return size // frame_bytes
            f.seek(size + (size & 1), 1)


def read_audio(path) -> np.ndarray:
    """A 16 kHz mono float32 waveform; missing, corrupt, truncated, too short or silent -> SampleError."""
    import soundfile as sf

    p = Path(path)
    if not p.is_file():
        raise SampleError("missing", f"no audio file {p}")
    try:
        info = sf.info(str(p))
        wave, rate = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile errors, RuntimeError, EOFError...
        raise SampleError("unreadable", f"{p}: {e}") from None
    if p.suffix.lower() == ".wav":
        bits = {"PCM_U8": 8, "PCM_S8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32, "FLOAT": 32,
                "DOUBLE": 64, "ULAW": 8, "ALAW": 8}.get(info.subtype)
        declared = _wav_declared_frames(p, bits // 8 * info.channels) if bits else None
        if declared is not None and declared > len(wave):
            raise SampleError("truncated", f"{p}: header promises {declared / rate:.2f} s, "
                                           f"the file holds {len(wave) / rate:.2f} s")
    wave = wave.mean(axis=1)
    if rate != SAMPLE_RATE:
        import torch
        import torchaudio

        wave = torchaudio.functional.resample(torch.from_numpy(wave), rate, SAMPLE_RATE).numpy()
    if len(wave) < MIN_SECONDS * SAMPLE_RATE:
        raise SampleError("too short", f"{p}: {len(wave) / SAMPLE_RATE:.3f} s")
    if not np.isfinite(wave).all():
        raise SampleError("unreadable", f"{p}: non-finite samples")
    if float(np.abs(wave).max()) < SILENCE_PEAK:
        raise SampleError("silent", f"{p}: peak amplitude {float(np.abs(wave).max()):.1e}")
    return wave


# -- listing ----------------------------------------------------------------------------------
def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _find_lists(raw: Path, name: str) -> tuple[dict[str, Path] | None, Path | None]:
    places = [raw, raw / "splits"]
    per_split = {}
    for split in RAW_SPLITS:
        names = [f"{split}.txt", f"{split}.csv", f"my_{split}.txt", f"{name}_{split}.txt", f"{name}_{split}.csv"]
        found = [d / n for d in places for n in names if (d / n).is_file()]
        if found:
            per_split[split] = found[0]
    if len(per_split) == len(RAW_SPLITS):
        return per_split, None
    single = [d / n for d in places for n in (f"{name}.csv", "clips.csv") if (d / n).is_file()]
    if single:
        return None, single[0]
    if per_split:
        missing = [s for s in RAW_SPLITS if s not in per_split]
        raise PrepareError(f"found the {list(per_split)} list(s) {[str(p) for p in per_split.values()]} "
                           f"but no {missing} list under {raw}; {layout_help(name)}")
    raise PrepareError(f"no split lists under {raw}; {layout_help(name)}")


def _rows(path: Path):
    """Rows of a list file; fields are not stripped, so a label's own ", " survives re-joining."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        for i, row in enumerate(csv.reader(f)):
            if len(row) < 3 or not row[0].strip():
                continue
            if i == 0 and not _is_number(row[1].strip()):
                continue  # header
            yield row


def _media(raw: Path, split: str, cid: str) -> tuple[Path | None, Path | None]:
    frames = next((d for d in (raw / "frames" / cid, raw / "frames" / split / cid, raw / split / cid)
                   if d.is_dir()), None)
    audio = next((a for a in (raw / "audio" / f"{cid}.wav", raw / "audio" / split / f"{cid}.wav",
                              raw / split / cid / f"{cid}.wav") if a.is_file()), None)
    return frames, audio


def list_audiovisual(raw, name: str, n_classes: int) -> RawListing:
    """List a KineticsSound / VGGSound-style dataset under ``raw`` (layout in the module docstring)."""
    raw = Path(raw).expanduser()
    if not raw.is_dir():
        raise PrepareError(f"--raw {raw} is not a directory; {layout_help(name)}")
    per_split, single = _find_lists(raw, name)
    warnings: list[str] = []
    # (split, candidate clip ids, label) in list order
    entries: list[tuple[str, list[str], str]] = []
    if per_split is not None:
        layout = f"split lists {', '.join(p.name for p in per_split.values())} (clip_id,duration,label)"
        for split, path in per_split.items():
            for row in _rows(path):
                entries.append((split, [row[0].strip()], ",".join(row[2:]).strip()))
    else:
        layout = f"{single.name} (ytid,start,label,split)"
        odd: dict[str, int] = {}
        for row in _rows(single):
            if len(row) < 4:
                continue
            ytid, start = row[0].strip(), row[1].strip()
            label, split = ",".join(row[2:-1]).strip(), row[-1].strip().lower()
            if split not in RAW_SPLITS:
                odd[split] = odd.get(split, 0) + 1
                continue
            s = int(float(start))
            entries.append((split, [f"{ytid}_{s:06d}", f"{ytid}_{s:06d}_{s + 10:06d}", f"{ytid}_{start}", ytid],
                            label))
        for split, count in odd.items():
            warnings.append(f"{count} rows of {single.name} have split {split!r}, not train/test: skipped")
    layout += "; frames/<id>/frame_*.jpg; audio/<id>.wav"

    classes = sorted({label for split, _, label in entries if split == "train"})
    if len(classes) < 2:
        raise PrepareError(f"the train list of {name} names {len(classes)} class(es); need at least 2 "
                           f"({layout_help(name)})")
    class_index = {c: i for i, c in enumerate(classes)}
    problems: list[Problem] = []
    splits: dict[str, list[RawSample]] = {s: [] for s in RAW_SPLITS}
    seen: set[str] = set()
    duplicates = 0
    for split, candidates, label in entries:
        cid, frames, audio = candidates[0], None, None
        for c in candidates:
            frames, audio = _media(raw, split, c)
            if frames or audio:
                cid = c
                break
        if cid in seen:
            duplicates += 1
            continue
        seen.add(cid)
        if label not in class_index:
            problems.append(Problem(split, cid, None, "unknown class", f"label {label!r} is not in the train list"))
            continue
        if frames is None:
            problems.append(Problem(split, cid, "visual", "missing", f"no frames folder {raw / 'frames' / cid}"))
            continue
        if audio is None:
            problems.append(Problem(split, cid, "audio", "missing", f"no audio file {raw / 'audio' / cid}.wav"))
            continue
        splits[split].append(RawSample(cid, class_index[label], {"visual": frames, "audio": audio}))
    if duplicates:
        warnings.append(f"{duplicates} clip ids are listed more than once; the first listing was kept")
    if len(classes) != n_classes:
        warnings.append(f"found {len(classes)} classes; {name} has {n_classes}")
    return RawListing(name=name, classes=classes, modalities={"visual": "frames", "audio": "audio"},
                      decoders={"visual": read_frames, "audio": read_audio}, splits=splits, layout=layout,
                      problems=problems, warnings=warnings)
