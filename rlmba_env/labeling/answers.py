"""Annotators' answers from a file: CSV ``id,label[,annotator]`` or a Label Studio JSON export.

Label Studio's JSON export (https://labelstud.io/guide/export, "Label Studio JSON format of
annotated tasks") is a list of tasks, each with the ``data`` it was imported with and its
``annotations``; a classification answer is a result of ``"type": "choices"`` whose
``value.choices`` holds the chosen class name::

    [{"id": 7, "data": {"rlmba_id": "1234", ...},
      "annotations": [{"completed_by": 1, "was_cancelled": false,
                       "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                   "value": {"choices": ["cat"]}}]}]}]

The tasks that ``rlmba label next`` writes carry the item's id as ``data.rlmba_id``, so the
export maps back to items. Reading never touches the store: it returns the answers with where
each came from (``line 3``, ``task 2``) and one line per row it could not read.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Answer:
    item_id: str
    label: str
    annotator: str | None
    where: str
    """``line N`` of a CSV, ``task N`` of a JSON export (1-based)"""
    source: str
    """file name the answer came from"""


class AnswerFileError(ValueError):
    """The file as a whole cannot be read as answers."""


def read_answers(path: Path) -> tuple[list[Answer], list[str], int]:
    """The answers in ``path``, the per-row problems, and how many rows had no answer (an empty
    label, a task without annotation): those are not errors, just not answered yet."""
    if not path.is_file():
        raise AnswerFileError(f"no answer file at {path}")
    if path.suffix.lower() == ".json":
        return _read_label_studio(path)
    return _read_csv(path)


def _read_csv(path: Path) -> tuple[list[Answer], list[str], int]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or "id" not in header or "label" not in header:
                raise AnswerFileError(f"{path}: the first line must be a header with columns id,label "
                                      f"(optionally annotator), got {header}")
            i_id, i_label = header.index("id"), header.index("label")
            i_ann = header.index("annotator") if "annotator" in header else None
            answers, errors, unanswered = [], [], 0
            for n, row in enumerate(reader, start=2):
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    errors.append(f"{path.name} line {n}: {len(row)} fields, the header has {len(header)}")
                    continue
                item, label = row[i_id].strip(), row[i_label].strip()
                if not item:
                    errors.append(f"{path.name} line {n}: empty id")
                    continue
                if not label:
                    unanswered += 1
                    continue
                annotator = row[i_ann].strip() or None if i_ann is not None else None
                answers.append(Answer(item, label, annotator, f"{path.name} line {n}", path.name))
    except UnicodeDecodeError as e:
        raise AnswerFileError(f"{path}: not a UTF-8 text file ({e})") from None
    except csv.Error as e:
        raise AnswerFileError(f"{path}: not a readable CSV ({e})") from None
    return answers, errors, unanswered


def _annotator(annotation: dict) -> str | None:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    return None if who is None else str(who)


def _read_label_studio(path: Path) -> tuple[list[Answer], list[str], int]:
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AnswerFileError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(tasks, list):
        raise AnswerFileError(f"{path}: a Label Studio export is a JSON list of tasks, got {type(tasks).__name__}")
    answers, errors, unanswered = [], [], 0
    for n, task in enumerate(tasks, start=1):
        where = f"{path.name} task {n}"
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict) or "rlmba_id" not in data:
            errors.append(f"{where}: no data.rlmba_id (import into Label Studio the tasks JSON that "
                          f"`rlmba label next` wrote)")
            continue
        item = str(data["rlmba_id"])
        choices = []
        for annotation in task.get("annotations") or []:
            if annotation.get("was_cancelled"):
                continue
            for result in annotation.get("result") or []:
                if result.get("type") == "choices":
                    picked = (result.get("value") or {}).get("choices") or []
                    choices.append((picked, _annotator(annotation)))
        if not choices:
            unanswered += 1
            continue
        names = {tuple(p) for p, _ in choices}
        if len(names) > 1:
            errors.append(f"{where}: item {item!r} has conflicting annotations {sorted(names)}; resolve them in "
                          f"Label Studio first")
            continue
        picked, who = choices[0]
        if len(picked) != 1:
            errors.append(f"{where}: item {item!r}: {len(picked)} classes chosen {picked}, need exactly one")
            continue
        answers.append(Answer(item, str(picked[0]), who, where, path.name))
    return answers, errors, unanswered
