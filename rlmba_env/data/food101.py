"""UPMC Food-101 (Wang et al., 2015) raw layout -> samples for ``rlmba prepare food101``.

101 food classes, one web page per sample: an image (modality ``image``) and the page's text
(modality ``text``). RL-MBA (arXiv 2603.25107) uses it as an image + text benchmark.

Accepted layout (``--raw DIR``; ``DIR`` may also be a folder holding exactly one such
dataset directory, e.g. the unpacked archive's top folder)::

    DIR/images/train/<class>/<name>.jpg      the official train split (.jpg, .jpeg or .png)
    DIR/images/test/<class>/<name>.jpg       the official test split

and the text in one of two forms (the first found wins):

    DIR/texts_txt/<class>/<name>.txt         full page text, matched to the image by file stem
    DIR/texts/train_titles.csv               rows ``filename,text,class`` (header optional),
    DIR/texts/test_titles.csv                matched to the image by file name

Classes are the folder names under ``images/train``, sorted. Text used: the words after the
first occurrence of the word "ingredients" (case-insensitive), first 100 whitespace tokens,
when present and non-empty; else the whole text with whitespace collapsed. An image without
text, a CSV row without an image, and a class folder under ``images/test`` that is not a train
class are reported and skipped.
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

from rlmba_env.data.raw import (
    IMAGE_EXTENSIONS,
    RAW_SPLITS,
    PrepareError,
    Problem,
    RawListing,
    RawSample,
    SampleError,
    read_image,
)

N_CLASSES = 101
INGREDIENT_TOKENS = 100
_INGREDIENTS = re.compile(r"\bingredients\b", re.IGNORECASE)

LAYOUT_HELP = """expected UPMC Food-101 layout:
    DIR/images/{train,test}/<class>/<name>.jpg
  and either
    DIR/texts_txt/<class>/<name>.txt
  or
    DIR/texts/{train,test}_titles.csv   (filename,text,class)"""


def food_text(text: str) -> str:
    """The part of a page's text that is used: what follows "ingredients" (100 tokens), else all."""
    m = _INGREDIENTS.search(text)
    if m:
        tokens = text[m.end():].split()[:INGREDIENT_TOKENS]
        if tokens:
            return " ".join(tokens)
    return " ".join(text.split())


def read_text(source) -> str:
    """Decode one text input: a ``.txt`` path (layout ``texts_txt``) or the CSV's string."""
    if isinstance(source, Path):
        if not source.is_file():
            raise SampleError("missing", f"no text file {source}")
        try:
            raw = source.read_bytes().decode("utf-8", errors="replace")
        except OSError as e:
            raise SampleError("unreadable", f"{source}: {e}") from None
        where = str(source)
    else:
        raw, where = str(source), "titles CSV"
    text = food_text(raw)
    if not text:
        raise SampleError("empty", f"no text ({where})")
    return text


def _find_root(raw: Path) -> Path:
    if not raw.is_dir():
        raise PrepareError(f"--raw {raw} is not a directory; {LAYOUT_HELP}")
    if (raw / "images").is_dir():
        return raw
    subdirs = [d for d in raw.iterdir() if d.is_dir() and (d / "images").is_dir()]
    if len(subdirs) == 1:
        return subdirs[0]
    raise PrepareError(f"no images/ folder under {raw}; {LAYOUT_HELP}")


def _read_titles(path: Path) -> dict[str, str]:
    csv.field_size_limit(sys.maxsize)
    texts: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        for i, row in enumerate(csv.reader(f)):
            if len(row) < 2:
                continue
            name = Path(row[0].strip()).name
            if i == 0 and not name.lower().endswith(IMAGE_EXTENSIONS):
                continue  # header
            texts.setdefault(name, row[1])
    return texts


def _images(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                  key=lambda p: p.name)


def list_food101(raw) -> RawListing:
    """List UPMC Food-101's samples under ``raw`` (layout in the module docstring)."""
    root = _find_root(Path(raw).expanduser())
    images = root / "images"
    if not (images / "train").is_dir():
        raise PrepareError(f"no images/train folder under {root}; {LAYOUT_HELP}")
    classes = sorted(d.name for d in (images / "train").iterdir() if d.is_dir())
    if len(classes) < 2:
        raise PrepareError(f"found {len(classes)} class folder(s) under {images / 'train'}; need at least 2")
    class_index = {c: i for i, c in enumerate(classes)}

    txt_root = root / "texts_txt"
    titles = {s: root / "texts" / f"{s}_titles.csv" for s in RAW_SPLITS}
    if txt_root.is_dir():
        layout = "images/{train,test}/<class>/*.jpg + texts_txt/<class>/<stem>.txt"
        csv_texts = None
    elif all(p.is_file() for p in titles.values()):
        layout = "images/{train,test}/<class>/*.jpg + texts/{train,test}_titles.csv"
        csv_texts = {s: _read_titles(p) for s, p in titles.items()}
    else:
        raise PrepareError(f"no texts_txt/ folder and no texts/train_titles.csv + texts/test_titles.csv "
                           f"under {root}; {LAYOUT_HELP}")

    problems: list[Problem] = []
    warnings: list[str] = []
    splits: dict[str, list[RawSample]] = {}
    for split in RAW_SPLITS:
        samples: list[RawSample] = []
        seen: set[str] = set()
        folder = images / split
        class_dirs = sorted(d for d in folder.iterdir() if d.is_dir()) if folder.is_dir() else []
        if not folder.is_dir():
            warnings.append(f"no {folder} folder: the {split} split has no images")
        for cdir in class_dirs:
            for img in _images(cdir):
                sid = f"{split}/{cdir.name}/{img.name}"
                seen.add(img.name)
                if cdir.name not in class_index:
                    problems.append(Problem(split, sid, None, "unknown class",
                                            f"class folder {cdir.name!r} is not under images/train"))
                    continue
                if csv_texts is None:
                    text = txt_root / cdir.name / f"{img.stem}.txt"
                    if not text.is_file():
                        problems.append(Problem(split, sid, "text", "missing", f"no text file {text}"))
                        continue
                else:
                    text = csv_texts[split].get(img.name)
                    if text is None:
                        problems.append(Problem(split, sid, "text", "missing",
                                                f"{img.name} has no row in {titles[split]}"))
                        continue
                samples.append(RawSample(sid, class_index[cdir.name], {"image": img, "text": text}))
        if csv_texts is not None:
            for name in sorted(set(csv_texts[split]) - seen):
                problems.append(Problem(split, f"{split}/{name}", "image", "missing",
                                        f"{titles[split].name} lists {name} but no such image is under {folder}"))
        splits[split] = samples
    if len(classes) != N_CLASSES:
        warnings.append(f"found {len(classes)} classes; UPMC Food-101 has {N_CLASSES}")
    return RawListing(name="food101", classes=classes, modalities={"image": "image", "text": "text"},
                      decoders={"image": read_image, "text": read_text}, splits=splits, layout=layout,
                      problems=problems, warnings=warnings)
