"""``rlmba label``: a labeling campaign on your own data, from the command line.

    rlmba label init DIR --data CACHE [--classes a,b,c] [--audit N | --audit-split val]
    rlmba label next DIR [-n N] [--agent NAME]      propose a batch: DIR/batches/batch-NNNN.{csv,json}
    rlmba label import DIR FILE [--strict]          answers: CSV id,label or a Label Studio JSON export
    rlmba label status DIR [--plot PNG] [--json]    labels per class, rounds, audit top-1, balance
    rlmba label measure DIR                         train on the labels so far, record the audit metrics
    rlmba label export DIR FILE                     every label as CSV
    rlmba label backup DIR FILE                     a consistent copy of the label store while in use

The loop itself is :class:`rlmba_env.labeling.LabelingProject`; this module parses the command
line and turns an ``--agent`` into something the project can ask for a batch: a strategy name
(``rlmba_env.strategies``) or a trained policy ``[NAME=]PATH`` (an SB3 ``.zip`` or a REINFORCE
``.pt``, as in ``agents/evaluate.py``), played greedy on the env's candidate observation.
Every error is one line on stderr and exit status 1; nothing is changed by a failed command.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PROG = "rlmba label"

EPILOG = """\
A campaign: `init` once; `next` proposes the audit set (random items whose labels measure the
model, like a validation split), `next` again the initial set; label both and `import` the
answers; from then on every `next` trains the evidential learner on the labels so far and
proposes a batch chosen by --agent. Batches are written as CSV (id,label with empty labels: fill
them in) and as Label Studio tasks JSON (import into Label Studio, export its JSON, import here).

examples:
  rlmba label init proj --data ~/.cache/rlmba/mydata --classes cat,dog,bird
  rlmba label next proj
  rlmba label import proj proj/batches/batch-0001.csv
  rlmba label next proj --agent coreset -n 50
  rlmba label next proj --agent runs/<run>/model.zip
  rlmba label status proj --plot status.png
"""


def add_label_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``label`` and its subcommands to an ``rlmba`` subparsers object."""
    p = subparsers.add_parser("label", help="label your own data: propose batches, import answers, report",
                              description="A labeling campaign over a crash-safe SQLite label store.",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="label_command", required=True, metavar="SUBCOMMAND")

    q = sub.add_parser("init", help="create a project over a feature cache")
    q.add_argument("dir", metavar="DIR", help="project folder (new or empty)")
    q.add_argument("--data", required=True, metavar="CACHE", help="feature cache directory (labels may be -1)")
    q.add_argument("--classes", metavar="A,B,...", help="class names, comma-separated (default: the cache's)")
    audit = q.add_mutually_exclusive_group()
    audit.add_argument("--audit", type=int, metavar="N", help="random audit items (default 3 per class)")
    audit.add_argument("--audit-split", choices=("val",),
                       help="use the cache's val split as the audit set (reproduces the env)")
    q.add_argument("--initial", type=int, default=20, metavar="N", help="initial random labels (default 20)")
    q.add_argument("--per-round", type=int, default=10, metavar="N", help="items per round batch (default 10)")
    q.add_argument("--rounds", type=int, default=10, metavar="N", help="rounds planned (default 10)")
    q.add_argument("--seed", type=int, default=0, help="campaign seed (same as env.reset(seed=...))")
    q.add_argument("--learner", default="{}", metavar="JSON", help="LearnerConfig fields, e.g. '{\"epochs\": 150}'")
    q.add_argument("--env-kwargs", default="{}", metavar="JSON",
                   help="EnvConfig fields (env settings), e.g. '{\"device\": \"cuda\", \"kappa\": 5}'")
    q.set_defaults(label_func=_init)

    q = sub.add_parser("next", help="train on the labels so far and propose the next batch")
    q.add_argument("dir", metavar="DIR")
    q.add_argument("-n", type=int, metavar="N", help="round batch size (default: the project's --per-round)")
    q.add_argument("--agent", default="random", metavar="NAME",
                   help="a strategy name or a trained policy [NAME=]PATH (.zip SB3, .pt REINFORCE); default random")
    q.add_argument("--device", default="cpu", help="device of a trained policy (default cpu)")
    q.set_defaults(label_func=_next)

    q = sub.add_parser("import", help="import answers (CSV id,label or a Label Studio JSON export)")
    q.add_argument("dir", metavar="DIR")
    q.add_argument("file", metavar="FILE", help=".csv (id,label[,annotator]) or .json (Label Studio export)")
    q.add_argument("--strict", action="store_true", help="commit nothing when any row is invalid")
    q.add_argument("--annotator", help="annotator name for rows that do not name one")
    q.set_defaults(label_func=_import)

    q = sub.add_parser("status", help="labels per class, rounds, audit top-1 fused and per modality, balance")
    q.add_argument("dir", metavar="DIR")
    q.add_argument("--plot", metavar="PNG", help="also write a plot of the rounds against labels")
    q.add_argument("--json", action="store_true", help="print the status as JSON")
    q.set_defaults(label_func=_status)

    q = sub.add_parser("measure", help="train on the labels so far and record the audit metrics")
    q.add_argument("dir", metavar="DIR")
    q.set_defaults(label_func=_measure)

    q = sub.add_parser("export", help="write every label as CSV")
    q.add_argument("dir", metavar="DIR")
    q.add_argument("file", metavar="FILE")
    q.set_defaults(label_func=_export)

    q = sub.add_parser("backup", help="copy the label store (safe while other commands run)")
    q.add_argument("dir", metavar="DIR")
    q.add_argument("file", metavar="FILE")
    q.set_defaults(label_func=_backup)

    p.set_defaults(func=run_label)
    return p


def run_label(args: argparse.Namespace) -> int:
    """Run a ``label`` subcommand; a known error is printed as one line, exit status 1."""
    from rlmba_env.data.dataset import DatasetError
    from rlmba_env.labeling import AnswerFileError, LabelingError, StoreError

    try:
        return args.label_func(args)
    except (LabelingError, StoreError, AnswerFileError, DatasetError, FileNotFoundError, FileExistsError) as e:
        print(f"{PROG} {args.label_command}: error: {e}", file=sys.stderr)
        return 1


def _json_arg(text: str, option: str) -> dict:
    from rlmba_env.labeling import LabelingError

    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise LabelingError(f"{option} must be a JSON object, got {text!r} ({e})") from None
    if not isinstance(value, dict):
        raise LabelingError(f"{option} must be a JSON object, got {text!r}")
    return value


def _open(directory: str):
    from rlmba_env.labeling import LabelingProject

    return LabelingProject(directory)


def _init(args) -> int:
    from rlmba_env.labeling import LabelingProject

    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    with LabelingProject.init(args.dir, args.data, classes=classes, audit_size=args.audit,
                              audit_split=args.audit_split, initial_labels=args.initial, per_round=args.per_round,
                              rounds=args.rounds, seed=args.seed, learner=_json_arg(args.learner, "--learner"),
                              env=_json_arg(args.env_kwargs, "--env-kwargs")) as project:
        c = project.config
        print(f"created {project.dir}: {len(project._role)} items, {len(c.classes)} classes, audit set of "
              f"{c.audit_size}{' (the cache val split)' if c.audit_split else ''}, {c.initial_labels} initial "
              f"labels, {c.rounds} rounds of {c.per_round}")
        print(f"next: {PROG} next {args.dir}")
    return 0


def policy_chooser(spec: str, device: str = "cpu"):
    """A :class:`~rlmba_env.labeling.Chooser` for ``--agent``: a strategy name, or a trained
    policy ``[NAME=]PATH`` (SB3 ``.zip``, REINFORCE ``.pt``) played greedy on the candidates."""
    from rlmba_env.labeling import LabelingError, PolicyChooser, StrategyChooser
    from rlmba_env.strategies import STRATEGIES

    name, _, target = spec.rpartition("=") if "=" in spec else ("", "", spec)
    if target.endswith(":online"):
        raise LabelingError(f"agent {spec!r}: ':online' (a REINFORCE agent learning during the campaign) is not "
                            f"supported by labeling projects yet; drop ':online' to play the policy greedy")
    path = Path(target)
    if path.suffix not in (".zip", ".pt"):
        if name:
            raise LabelingError(f"agent {spec!r}: NAME=PATH needs a .zip or .pt policy file")
        if target not in STRATEGIES:
            raise LabelingError(f"unknown agent {spec!r}: give a strategy ({', '.join(sorted(STRATEGIES))}) "
                                f"or a trained policy [NAME=]PATH.zip|.pt")
        return StrategyChooser(target)
    if not path.is_file():
        raise LabelingError(f"agent {spec!r}: no trained policy at {path}")
    from agents.reinforce import ReinforceAgent
    from agents.rollout import SB3Agent
    from agents.transfer import load_policy

    agent = load_policy(path, device)
    default = path.parent.name if path.stem in ("model", "agent") else path.stem

    class _Policy(PolicyChooser):
        def choose(self, env, rng):
            if isinstance(agent, SB3Agent):
                agent.check_env(env.observation_space)
            return super().choose(env, rng)

    if isinstance(agent, ReinforceAgent):
        return _Policy(name or default, lambda obs: agent.act(obs, deterministic=True))
    return _Policy(name or default, agent.act)


def _next(args) -> int:
    chooser = policy_chooser(args.agent, args.device)
    with _open(args.dir) as project:
        batch = project.next(chooser, n=args.n)
        what = {"audit": "the audit set (plays val: label it carefully)", "initial": "the initial random set",
                "round": f"round {batch.round} batch chosen by {batch.agent}"}[batch.kind]
        print(f"batch {batch.id}: {len(batch.rows)} items, {what}")
        if batch.timings:
            t = batch.timings
            print(f"  time {t['total_s']:.2f} s (CPU {t['cpu_s']:.2f} s): load features {t['load_s']:.2f} s, env rebuild + train + score "
                  f"{t['resume_s']:.2f} s (train {t['train_s']:.2f} s, score {t['score_s']:.2f} s), select "
                  f"{t['select_s']:.2f} s, store and files {t['total_s'] - t['load_s'] - t['resume_s'] - t['select_s']:.2f} s")
        print(f"  {batch.csv}  (fill the label column, then: {PROG} import {args.dir} FILE)")
        print(f"  {batch.tasks}  (Label Studio tasks)")
    return 0


def _import(args) -> int:
    with _open(args.dir) as project:
        report = project.import_labels(args.file, strict=args.strict, annotator=args.annotator)
    for line in report.errors:
        print(f"{PROG} import: invalid: {line}", file=sys.stderr)
    skipped = f"; {report.skipped_unanswered} rows without an answer skipped" if report.skipped_unanswered else ""
    if report.errors and report.strict:
        print(f"nothing imported: {len(report.errors)} invalid row(s) and --strict{skipped}")
    else:
        print(f"imported {report.committed} labels" +
              (f"; {len(report.errors)} invalid row(s) left out" if report.errors else "") + skipped)
    return 1 if report.errors else 0


def _status(args) -> int:
    with _open(args.dir) as project:
        s = project.status()
        modalities = project.config.modalities
        if args.plot:
            project.plot(args.plot)
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    print(f"{s['labeled']} of {s['items']} items labeled (audit {s['audit_labeled']}/{s['audit_size']}), "
          f"{s['pending']} pending; round batches {s['rounds_done']}/{s['rounds_planned']}")
    print("per class: " + ", ".join(f"{c} {n}" for c, n in s["per_class"].items()))
    counts = list(s["per_class"].values())
    if sum(counts):
        print(f"class balance: smallest/largest class count {min(counts)}/{max(counts)}")
    if s["rounds"]:
        head = f"{'round':>5} {'labels':>6} {'audit top-1':>11} " + " ".join(f"{m[:10]:>10}" for m in modalities)
        head += " " + " ".join(f"{'contr ' + m[:4]:>10}" for m in modalities) + f" {'balance':>7}"
        has_test = "test_top1" in s["rounds"][-1]
        print(head + (f" {'test top-1':>10}" if has_test else ""))
        for r in s["rounds"]:
            line = f"{r['round']:>5} {r['labeled']:>6} {r['audit_top1']:>11.3f} "
            line += " ".join(f"{r[f'audit_top1_{m}']:>10.3f}" for m in modalities) + " "
            line += " ".join(f"{r[f'contribution_{m}']:>+10.3f}" for m in modalities) + f" {r['balance']:>7.2f}"
            print(line + (f" {r['test_top1']:>10.3f}" if has_test else ""))
    else:
        print("no round measured yet (the first round batch measures one)")
    if args.plot:
        print(f"wrote {args.plot}")
    return 0


def _measure(args) -> int:
    with _open(args.dir) as project:
        r = project.measure()
    print(f"round {r['round']}, {r['labeled']} labels: audit top-1 {r['audit_top1']:.3f}, balance {r['balance']:.2f}"
          + (f", test top-1 {r['test_top1']:.3f}" if "test_top1" in r else ""))
    return 0


def _export(args) -> int:
    with _open(args.dir) as project:
        n = project.export(args.file)
    print(f"wrote {n} labels to {args.file}")
    return 0


def _backup(args) -> int:
    with _open(args.dir) as project:
        path = project.backup(args.file)
    print(f"backed up the label store to {path}")
    return 0


def main(argv=None) -> int:
    """``python -m agents.label_cli SUBCOMMAND ...`` (the same as ``rlmba label``)."""
    parser = argparse.ArgumentParser(prog="rlmba")
    add_label_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["label", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
