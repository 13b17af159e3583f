"""SIGKILL during `rlmba label import`: the store keeps all or none of the file's rows.

    python benchmarks/label_kill.py                  # 100 kills, 2,000-row answer file
    python benchmarks/label_kill.py --kills 5 --rows 400   # what tests/test_labeling.py runs

A project is built once (a synthetic dataset with hidden labels, an audit batch of ``--rows``
pending items) and its answer file written. Each trial copies the pristine project, forks a
child that runs exactly what ``rlmba label import DIR FILE`` runs (modules already imported,
so the whole child is the import: read, validate, one transaction), and kills it with SIGKILL
after a random delay drawn uniformly from [0, the import's measured duration]. Then
the store is reopened (SQLite rolls back an unfinished transaction from its WAL), checked
with ``PRAGMA integrity_check`` and its labels counted: anything but 0 or all ``--rows`` is a
partial import. The exit status is 1 on any partial import or failed check.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's rlmba_env and agents
from agents.label_cli import main as label_main
from rlmba_env.data.synthetic import make_synthetic
from rlmba_env.labeling import LabelingProject, LabelStore
from rlmba_env.labeling.simulate import SimulatedAnnotator, hide_labels


def build(work: Path, rows: int) -> tuple[Path, Path]:
    """A project whose audit batch of ``rows`` items is pending, and the answers to all of them."""
    ds = make_synthetic(n_samples=rows * 2 + 200, n_classes=4, dims=(4, 4), val_per_class=5, seed=0)
    cache, key = hide_labels(ds, work / "data")
    with LabelingProject.init(work / "pristine", cache, audit_size=rows, initial_labels=1, per_round=1,
                              rounds=1) as project:
        batch = project.next()
        answers = SimulatedAnnotator(key).answer_csv(batch.csv, work / "answers.csv")
    return work / "pristine", answers


def import_in_child(project: Path, answers: Path) -> int:
    """Fork a child that runs ``rlmba label import project answers``; returns its pid."""
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        status = 99  # an exception in the import
        try:
            status = label_main(["import", str(project), str(answers)])
        finally:
            os._exit(status)
    return pid


def labels_and_integrity(project: Path) -> tuple[int, str]:
    store = LabelStore(project / LabelStore.FILE)
    try:
        return len(store.labels()), store.integrity_check()
    finally:
        store.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("--rows", type=int, default=2000, help="answers in the imported file")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    p.add_argument("--dir", help="work folder (default: a temporary one, removed afterwards)")
    args = p.parse_args(argv)
    work = Path(args.dir or tempfile.mkdtemp(prefix="label_kill-"))
    rng = np.random.default_rng(args.seed)
    try:
        pristine, answers = build(work, args.rows)
        trial = work / "trial"

        # the import's duration, unkilled (median of 3)
        durations = []
        for _ in range(3):
            shutil.rmtree(trial, ignore_errors=True)
            shutil.copytree(pristine, trial)
            start = time.perf_counter()
            _, status = os.waitpid(import_in_child(trial, answers), 0)
            durations.append(time.perf_counter() - start)
            count, check = labels_and_integrity(trial)
            if os.waitstatus_to_exitcode(status) != 0 or count != args.rows or check != "ok":
                print(f"an unkilled import failed: exit {os.waitstatus_to_exitcode(status)}, {count} labels, {check}")
                return 1
        duration = float(np.median(durations))
        print(f"import of {args.rows} answers, unkilled: {duration * 1000:.1f} ms (median of 3)")

        outcomes = {"none": 0, "writing": 0, "all": 0, "finished": 0}
        partial = failed_checks = 0
        for _ in range(args.kills):
            shutil.rmtree(trial, ignore_errors=True)
            shutil.copytree(pristine, trial)
            delay = rng.uniform(0, duration)
            pid = import_in_child(trial, answers)
            time.sleep(delay)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, status = os.waitpid(pid, 0)
            killed = os.WIFSIGNALED(status)
            wal = trial / (LabelStore.FILE + "-wal")
            wal_bytes = wal.stat().st_size if wal.exists() else 0
            count, check = labels_and_integrity(trial)
            failed_checks += check != "ok"
            if count not in (0, args.rows):
                partial += 1
            elif not killed:
                outcomes["finished"] += 1
            else:
                outcomes["all" if count else "writing" if wal_bytes else "none"] += 1
        print(f"{args.kills} kills: {partial} partial imports, {failed_checks} failed integrity checks")
        print(f"  killed before the transaction wrote: {outcomes['none']}; killed while writing it (WAL "
              f"frames left, rolled back on open): {outcomes['writing']}; killed after the commit: "
              f"{outcomes['all']}; finished before the kill: {outcomes['finished']}")
        return 1 if partial or failed_checks else 0
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
