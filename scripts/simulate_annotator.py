"""Play the annotator of a labeling campaign on AV-Digits with hidden labels.

    python scripts/simulate_annotator.py hide runs/label_demo
        AV-Digits with its pool and val labels hidden (-1): runs/label_demo/cache, and the
        answer key runs/label_demo/answers.csv
    python scripts/simulate_annotator.py answer runs/label_demo/answers.csv BATCH.csv OUT.csv
    python scripts/simulate_annotator.py answer runs/label_demo/answers.csv BATCH.json OUT.json
        fill in a batch written by `rlmba label next`: the CSV, or its Label Studio tasks as a
        Label Studio JSON export
    python scripts/simulate_annotator.py run runs/label_demo --agent margin --rounds 10 --seed 0
        a whole campaign through the Python API (rlmba_env.labeling.LabelingProject), then the
        env with the same agent and seed: both test top-1 curves, which must be equal
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def hide(args) -> int:
    from rlmba_env.data.avdigits import load_avdigits
    from rlmba_env.labeling.simulate import hide_labels

    cache, answers = hide_labels(load_avdigits(), args.out, overwrite=args.overwrite)
    print(f"wrote {cache} (pool and val labels hidden) and the answer key {answers}")
    return 0


def answer(args) -> int:
    from rlmba_env.labeling.simulate import SimulatedAnnotator

    annotator = SimulatedAnnotator(args.answers)
    if Path(args.batch).suffix == ".json":
        out = annotator.answer_label_studio(args.batch, args.out)
    else:
        out = annotator.answer_csv(args.batch, args.out)
    print(f"wrote {out}")
    return 0


def run(args) -> int:
    import gymnasium as gym

    import rlmba_env  # noqa: F401  (registers the env ids)
    from rlmba_env.labeling import LabelingProject
    from rlmba_env.labeling.simulate import SimulatedAnnotator
    from rlmba_env.strategies import make_strategy, run_strategy_episode

    out = Path(args.out)
    project_dir = out / f"project-{args.agent}-seed{args.seed}"
    annotator = SimulatedAnnotator(out / "answers.csv")
    project = LabelingProject.init(project_dir, out / "cache", audit_split="val", rounds=args.rounds, seed=args.seed)
    for _ in range(2 + args.rounds):
        batch = project.next(args.agent)
        report = project.import_labels(annotator.answer_csv(batch.csv, project_dir / f"answers-{batch.id:04d}.csv"))
        assert report.committed == len(batch.rows) and not report.errors, report
    project.measure()
    labeling = [(r["labeled"], r["test_top1"]) for r in project.status()["rounds"]]
    env = gym.make("RLMBA-AVDigits-v0", rounds=args.rounds)
    episode = run_strategy_episode(env, make_strategy(args.agent), args.seed, rng_seed=args.seed)
    simulated = [(r["labeled"], r["test_top1"]) for r in episode]
    print(f"{'labels':>6} {'project test top-1':>18} {'env test top-1':>14}")
    for (n, a), (_, b) in zip(labeling, simulated):
        print(f"{n:>6} {a:>18.4f} {b:>14.4f}")
    same = len(labeling) == len(simulated) and all(np.isclose(a, b, atol=0) for (_, a), (_, b) in zip(labeling, simulated))
    print("the project reproduces the env's curve" if same else "the curves DIFFER")
    return 0 if same else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("hide", help="write AV-Digits with hidden labels and its answer key")
    q.add_argument("out")
    q.add_argument("--overwrite", action="store_true")
    q.set_defaults(func=hide)
    q = sub.add_parser("answer", help="answer a batch CSV, or its tasks JSON as a Label Studio export")
    q.add_argument("answers")
    q.add_argument("batch")
    q.add_argument("out")
    q.set_defaults(func=answer)
    q = sub.add_parser("run", help="a whole campaign via the API, compared with the env")
    q.add_argument("out", help="the folder `hide` wrote")
    q.add_argument("--agent", default="margin", help="a strategy name")
    q.add_argument("--rounds", type=int, default=10)
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=run)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
