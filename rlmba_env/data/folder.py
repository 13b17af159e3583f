"""Your own unlabeled data for ``rlmba prepare folder``: images, each with a text beside it.

Layout (any depth; a sample is an image and the ``.txt`` file of the same name next to it)::

    DIR/**/<name>.jpg|.jpeg|.png
    DIR/**/<name>.txt

No classes are read from the folder: the class names are given (``--classes``) and every
sample's label is -1 (unlabeled), to be labeled with ``rlmba label``. All samples go to the
cache's ``pool``; ``val`` and ``test`` are empty (a labeling project's audit set plays ``val``).
A sample's id is its image's path relative to ``DIR``, which ``rlmba label`` turns back into the
image path and the text of the Label Studio tasks it writes. An image without its text, or a
text without its image, is reported and skipped.
"""

from __future__ import annotations

from pathlib import Path

from rlmba_env.data.dataset import UNLABELED
from rlmba_env.data.raw import IMAGE_EXTENSIONS, PrepareError, Problem, RawListing, RawSample, SampleError, natural_key
from rlmba_env.data.raw import read_image

LAYOUT = "DIR/**/<name>.{jpg,jpeg,png} with DIR/**/<name>.txt beside each image"


def read_plain_text(path) -> str:
    """A text file's words, whitespace-normalised; an empty or unreadable file is a SampleError."""
    p = Path(path)
    try:
        text = " ".join(p.read_bytes().decode("utf-8", errors="replace").split())
    except OSError as e:
        raise SampleError("unreadable", f"{p}: {e}") from None
    if not text:
        raise SampleError("empty", f"no text in {p}")
    return text


def list_folder(raw, classes) -> RawListing:
    """List the image + text samples under ``raw`` (layout in the module docstring)."""
    root = Path(raw).expanduser()
    if not root.is_dir():
        raise PrepareError(f"--raw {root} is not a directory; expected {LAYOUT}")
    classes = [str(c) for c in (classes or [])]
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise PrepareError(f"prepare folder needs --classes with at least 2 distinct names, got {classes}")
    files = sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: natural_key(str(p.relative_to(root))))
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    samples, problems = [], []
    for img in images:
        sid = str(img.relative_to(root))
        text = img.with_suffix(".txt")
        if not text.is_file():
            problems.append(Problem("train", sid, "text", "missing", f"no text file {text}"))
            continue
        samples.append(RawSample(sid, UNLABELED, {"image": img, "text": text}))
    stems = {img.with_suffix("") for img in images}
    for t in (p for p in files if p.suffix.lower() == ".txt" and p.with_suffix("") not in stems):
        problems.append(Problem("train", str(t.relative_to(root)), "image", "missing", f"no image beside {t}"))
    return RawListing(name="folder", classes=classes, modalities={"image": "image", "text": "text"},
                      decoders={"image": read_image, "text": read_plain_text},
                      splits={"train": samples, "test": []}, layout=LAYOUT, problems=problems, unlabeled=True)
