"""Time of `rlmba label next` on a large pool: target under 10 s for 1e5 items, 2 modalities.

    python benchmarks/label_next.py                       # 1e5 items, 2 x 512 features, float16
    python benchmarks/label_next.py --items 2000 --dims 16  # a quick run

A synthetic dataset (``make_synthetic``: 10 classes, 2 modalities) is written as a feature
cache with hidden labels, in float16 like ``rlmba prepare``'s caches; a project is created
(audit set 3 per class, ``--initial`` initial labels, ``--per-round`` per round: by default
1,000 and 1,000, the paper's real-dataset protocol), the audit and initial batches are answered
by the simulated annotator, and then ``rlmba label next DIR --agent AGENT`` runs as a user runs
it, in a fresh process. The benchmark prints its wall time (interpreter start and imports
included), its CPU time, and the split the command reports: loading the features (the project's
uncompressed copy, memory-mapped), rebuilding the env and training + scoring (train / score),
the agent's selection, and writing the store and files.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's rlmba_env and agents
from rlmba_env.data.dataset import MultimodalDataset
from rlmba_env.data.synthetic import make_synthetic
from rlmba_env.labeling import LabelingProject
from rlmba_env.labeling.simulate import SimulatedAnnotator, hide_labels


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=float, default=1e5, help="pool + val rows (test adds 2%%)")
    p.add_argument("--dims", type=int, default=512, help="features per modality")
    p.add_argument("--initial", type=int, default=1000)
    p.add_argument("--per-round", type=int, default=1000)
    p.add_argument("--agent", default="random")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the `next` process")
    p.add_argument("--dir", help="work folder (kept; default a temporary one, removed)")
    args = p.parse_args(argv)
    work = Path(args.dir or tempfile.mkdtemp(prefix="label_next-"))
    n = int(args.items / 0.98)
    t = time.perf_counter()
    ds = make_synthetic(n_samples=n, n_classes=10, dims=args.dims, val_per_class=30, test_fraction=0.02, seed=0)
    ds = MultimodalDataset({m: x.astype(np.float16) for m, x in ds.features.items()}, ds.labels, ds.splits,
                           ds.classes, name="synthetic-1e5")
    cache, key = hide_labels(ds, work / "data", overwrite=True)
    project_dir = work / "project"
    with LabelingProject.init(project_dir, cache, initial_labels=args.initial, per_round=args.per_round,
                              rounds=6) as project:
        annotator = SimulatedAnnotator(key)
        for _ in range(2):
            batch = project.next()
            project.import_labels(annotator.answer_csv(batch.csv, work / f"answers-{batch.id}.csv"))
        items = len(project._role)
    print(f"setup (dataset, cache, project, audit + initial labels): {time.perf_counter() - t:.1f} s; "
          f"{items} items, {args.dims} features x 2 modalities (float16), "
          f"{args.initial} initial labels, batch of {args.per_round}")

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    start, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([sys.executable, "-m", "agents.label_cli", "next", str(project_dir), "--agent", args.agent],
                         capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1])
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
    if out.returncode:
        print(out.stdout + out.stderr)
        return 1
    print(f"`rlmba label next --agent {args.agent}`: {wall:.2f} s wall, {cpu_s:.2f} s CPU, in a fresh process "
          f"with {args.threads} torch thread(s) (interpreter start and imports included; on a shared machine "
          f"the CPU time is what the command costs, the wall time adds waiting for a core)")
    print("  " + next(line.strip() for line in out.stdout.splitlines() if line.strip().startswith("time")))
    if not args.dir:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
