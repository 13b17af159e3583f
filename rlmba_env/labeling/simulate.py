"""A simulated annotator: try a labeling campaign on data whose labels are known but hidden.

:func:`hide_labels` writes a copy of a dataset whose ``pool`` and ``val`` labels are -1 (the
project cannot read them) and the answer key beside it; :class:`SimulatedAnnotator` answers a
batch from the key, as a filled-in batch CSV or as a Label Studio JSON export of the batch's
tasks (the format Label Studio's "Export -> JSON" writes). With the cache's ``val`` split as the
audit set, a project answered this way reproduces the env's learning curve for the same agent
and seed (``tests/test_labeling.py``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from rlmba_env.data.dataset import UNLABELED, MultimodalDataset

ANSWERS_FILE = "answers.csv"


def hide_labels(dataset: MultimodalDataset, out: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``out/cache`` (``dataset`` with its pool and val labels set to -1; test labels kept
    for reporting) and ``out/answers.csv`` (``id,label`` of every hidden row). Returns both paths."""
    out = Path(out).expanduser()
    hidden_rows = np.concatenate([dataset.splits["pool"], dataset.splits["val"]])
    labels = dataset.labels.copy()
    labels[hidden_rows] = UNLABELED
    hidden = dataset.with_targets(labels, dataset.splits)
    cache = out / "cache"
    hidden.save(cache, overwrite=overwrite)
    answers = out / ANSWERS_FILE
    with open(answers, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label"])
        for r in sorted(hidden_rows.tolist()):
            w.writerow([str(r), dataset.classes[int(dataset.labels[r])]])
    return cache, answers


class SimulatedAnnotator:
    """Answers batches from an answer key (CSV ``id,label``), optionally wrong on purpose."""

    def __init__(self, answers: str | Path, name: str = "simulated"):
        with open(answers, newline="") as f:
            self.key = {r["id"]: r["label"] for r in csv.DictReader(f)}
        self.name = name

    def answer_csv(self, batch_csv: str | Path, out: str | Path) -> Path:
        """The batch CSV (``id,label`` with empty labels) with every label filled in."""
        with open(batch_csv, newline="") as f:
            ids = [r["id"] for r in csv.DictReader(f)]
        out = Path(out)
        with open(out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "label", "annotator"])
            for i in ids:
                w.writerow([i, self.key[i], self.name])
        return out

    def answer_label_studio(self, tasks_json: str | Path, out: str | Path) -> Path:
        """What Label Studio exports (JSON) after this annotator labeled the batch's tasks with a
        ``<Choices name="label" toName="...">`` control: each task with its ``data`` and one
        annotation whose result is a ``choices`` value."""
        tasks = json.loads(Path(tasks_json).read_text())
        exported = []
        for n, task in enumerate(tasks, start=1):
            item = str(task["data"]["rlmba_id"])
            exported.append({
                "id": n, "data": task["data"], "project": 1,
                "annotations": [{
                    "id": n, "completed_by": {"id": 1, "email": f"{self.name}@example.com"},
                    "was_cancelled": False, "ground_truth": False, "lead_time": 1.0, "task": n,
                    "result": [{"id": f"r{n}", "from_name": "label", "to_name": "item", "type": "choices",
                                "origin": "manual", "value": {"choices": [self.key[item]]}}],
                }],
                "predictions": [],
            })
        out = Path(out)
        out.write_text(json.dumps(exported, indent=1))
        return out
