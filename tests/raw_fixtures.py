"""Tiny raw datasets in the layouts ``rlmba prepare`` reads: real JPEG/PNG files, text, 16 kHz wavs.

Each class gets its own colour, its own words and its own tone, so the prepared features carry
the class. Knobs plant the faults the report must catch: a truncated JPEG, a missing text, a
truncated wav, a silent wav, one unreadable frame among a clip's frames, an empty test split.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

FOOD_CLASSES = ("apple_pie", "caesar_salad", "ramen")
AV_CLASSES = ("playing bagpipes", "playing drums, loudly", "tapping pen")  # one label has a comma
FOOD_WORDS = {"apple_pie": "apples cinnamon butter flour sugar crust",
              "caesar_salad": "romaine parmesan croutons anchovy lemon garlic",
              "ramen": "noodles broth pork miso scallion egg"}


def write_image(path: Path, cls: int, seed: int, size: int = 64) -> Path:
    rng = np.random.default_rng(seed)
    base = np.array([[220, 60, 40], [40, 200, 60], [50, 70, 220]][cls % 3], dtype=np.float64)
    pixels = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)  # format from the suffix: JPEG or PNG
    return path


def truncate(path: Path, keep: float = 0.4) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_wav(path: Path, cls: int, seed: int, seconds: float = 1.0, silent: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16_000 * seconds)) / 16_000
    wave = 0.4 * np.sin(2 * np.pi * (300 + 500 * cls) * t) + 0.02 * rng.normal(size=t.size)
    if silent:
        wave = np.zeros_like(wave)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave.astype(np.float32), 16_000, subtype="PCM_16")
    return path


def make_food101(root: Path, layout: str = "txt", train_per_class: int = 8, test_per_class: int = 2,
                 corrupt_image: bool = False, missing_text: bool = False, empty_test: bool = False) -> Path:
    """UPMC Food-101 layout: ``images/{train,test}/<class>/*.jpg`` + ``texts_txt`` or ``texts/*_titles.csv``."""
    rows = {"train": [], "test": []}
    for split, n in (("train", train_per_class), ("test", 0 if empty_test else test_per_class)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        for c, name in enumerate(FOOD_CLASSES):
            for i in range(n):
                stem = f"{name}_{split}{i}"
                suffix = ".png" if i == 1 else ".jpg"
                write_image(root / "images" / split / name / f"{stem}{suffix}", c, seed=1000 * c + 10 * i + (split == "test"))
                # Half the pages have an ingredients section, the rest are page titles only.
                text = (f"Best {name.replace('_', ' ')} recipe ever {i}. Ingredients: {FOOD_WORDS[name]} "
                        f"step {i}" if i % 2 == 0 else f"{name.replace('_', ' ')} {FOOD_WORDS[name]} homemade")
                rows[split].append((f"{stem}{suffix}", text, name))
                if layout == "txt":
                    txt = root / "texts_txt" / name / f"{stem}.txt"
                    txt.parent.mkdir(parents=True, exist_ok=True)
                    txt.write_text(text)
    if layout == "csv":
        (root / "texts").mkdir(parents=True, exist_ok=True)
        for split, split_rows in rows.items():
            with open(root / "texts" / f"{split}_titles.csv", "w", newline="") as f:
                w = csv.writer(f)
                if split == "train":
                    w.writerow(["image_path", "text", "food"])  # a header, which the reader skips
                w.writerows(split_rows)
    if corrupt_image:
        truncate(root / "images" / "train" / FOOD_CLASSES[0] / f"{FOOD_CLASSES[0]}_train2.jpg")
    if missing_text:
        name = FOOD_CLASSES[1]
        if layout == "txt":
            (root / "texts_txt" / name / f"{name}_train3.txt").unlink()
    return root


def make_audiovisual(root: Path, name: str, list_format: str = "split", train_per_class: int = 8,
                     test_per_class: int = 2, frames: int = 4, truncated_wav: bool = False,
                     silent_wav: bool = False, bad_frame: bool = False, clip_folders: bool = False) -> Path:
    """KineticsSound / VGGSound layout: split lists or one CSV, ``frames/<id>/frame_*.jpg``, ``audio/<id>.wav``.

    With ``list_format="csv"`` the test clips' media go under ``frames/test/`` and ``audio/test/``,
    another placement the reader accepts; with ``clip_folders`` every clip's frames and wav share
    one folder, ``<split>/<id>/``.
    """
    root.mkdir(parents=True, exist_ok=True)
    lists = {"train": [], "test": []}
    csv_rows = []
    clip = 0
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for c, label in enumerate(AV_CLASSES):
            for i in range(n):
                ytid, start = f"yt{clip:04d}{'AbC-_'[clip % 5]}", 10 * (clip % 3)
                clip += 1
                if list_format == "split":
                    cid = f"{ytid}_{start:06d}_{start + 10:06d}"
                    lists[split].append(f"{cid},10,{label}")
                    sub = ""
                else:
                    cid = f"{ytid}_{start:06d}"
                    csv_rows.append([ytid, start, label, split])
                    sub = split if split == "test" else ""
                seed = 1000 * c + 10 * i + 5 * (split == "test")
                frame_dir = root / split / cid if clip_folders else root / "frames" / sub / cid
                for f in range(frames):
                    write_image(frame_dir / f"frame_{f}.jpg", c, seed=seed + f)
                write_wav(root / split / cid / f"{cid}.wav" if clip_folders else root / "audio" / sub / f"{cid}.wav",
                          c, seed=seed)
    if list_format == "split":
        for split, lines in lists.items():
            (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
        train_ids = [line.split(",")[0] for line in lists["train"]]
    else:
        with open(root / f"{name}.csv", "w", newline="") as f:
            csv.writer(f).writerows(csv_rows)
        train_ids = [f"{r[0]}_{r[1]:06d}" for r in csv_rows if r[3] == "train"]
    if truncated_wav:
        truncate(root / "audio" / f"{train_ids[0]}.wav", keep=0.5)
    if silent_wav:
        write_wav(root / "audio" / f"{train_ids[1]}.wav", 0, seed=0, silent=True)
    if bad_frame:
        truncate(root / "frames" / train_ids[2] / "frame_0.jpg", keep=0.3)
    return root
