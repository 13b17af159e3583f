"""The ``rlmba`` command. One subcommand per job; ``rlmba COMMAND --help`` documents each.

    rlmba prepare DATASET --raw DIR    raw Food101 / KineticsSound / VGGSound -> feature cache
    rlmba evaluate --agents ...         agents x seeds: TensorBoard, CSV, summary, plot
    rlmba benchmark --datasets ...      datasets x agents x seeds in parallel, and a leaderboard
    rlmba label SUBCOMMAND ...          label your own data (agents/label_cli.py)

Adding a subcommand: write ``add_<name>(subparsers)``, which adds its parser and sets
``func`` to a function taking the parsed arguments and returning an exit status, and append it
to :data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

PROG = "rlmba"


def _val_per_class(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value >= 1 and value == int(value):
        return int(value)
    if 0 < value < 1:
        return value
    raise argparse.ArgumentTypeError(f"{text}: give a whole count >= 1 or a fraction in (0, 1)")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be >= 1")
    return value


# -- rlmba prepare ---------------------------------------------------------------------------
PREPARE_EPILOG = """\
The cache lands in <data root>/<DATASET> unless --out is given: the data root is $RLMBA_DATA,
else ~/.cache/rlmba, which is where gym.make("RLMBA-Food101-v0"), "RLMBA-KineticsSound-v0" and
"RLMBA-VGGSound-v0" look. Interrupt it any time and rerun the same command to resume. Skipped
samples (missing files, unreadable images, corrupt/truncated/silent audio) are listed in
prepare_report.json next to the cache.

Raw layouts: help(rlmba_env.data.food101), help(rlmba_env.data.audiovisual),
help(rlmba_env.data.folder), or
docs/real_datasets.md.

examples:
  rlmba prepare food101 --raw /data/UPMC_Food101
  rlmba prepare kinetics_sound --raw /data/kinetics_sound --device cuda --batch-size 128
  rlmba prepare vggsound --raw /data/vggsound --weights ~/resnet18-f37072fd.pth --workers 8
  rlmba prepare folder --raw /data/my_items --classes cat,dog,bird --out /data/my_items_cache
"""


def add_prepare(subparsers) -> None:
    from rlmba_env.data.prepare import DATASETS, PrepareConfig

    d = PrepareConfig(dataset="", raw="")
    p = subparsers.add_parser(
        "prepare", help="turn a raw dataset into the feature cache the env ids read",
        description="Encode a raw Food101 / KineticsSound / VGGSound download with frozen encoders "
                    "and write the feature cache that the matching RLMBA-*-v0 env id reads; or, with "
                    "`folder`, your own unlabeled images + texts for `rlmba label`.",
        epilog=PREPARE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=DATASETS, metavar="DATASET", help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--raw", required=True, metavar="DIR", help="the raw dataset's directory")
    p.add_argument("--out", metavar="DIR", help="cache directory (default: <data root>/DATASET)")
    p.add_argument("--device", default=d.device, help="cpu, cuda, cuda:1, or auto = cuda when present (default)")
    p.add_argument("--batch-size", type=_positive, default=d.batch_size, metavar="N",
                   help=f"samples per encoder batch and per resumable shard (default {d.batch_size})")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), metavar="N",
                   help="decoding processes (default: min(4, CPUs)); 0 decodes in the main process")
    p.add_argument("--arch", choices=("resnet18", "resnet50"), default=d.arch,
                   help=f"image / frame encoder (default {d.arch})")
    p.add_argument("--weights", default=d.weights, metavar="PATH|imagenet|none",
                   help="image encoder weights: imagenet (torchvision download, default), a local torchvision "
                        "state_dict file, or none (random init, recorded as such)")
    p.add_argument("--image-size", type=int, default=d.image_size, metavar="PX",
                   help=f"center-crop size fed to the ResNet (default {d.image_size})")
    p.add_argument("--frames", type=_positive, default=d.frames, metavar="N",
                   help=f"frames per clip, evenly spaced, features averaged (default {d.frames})")
    p.add_argument("--text-model", metavar="PATH",
                   help="local transformers model directory for text; default TF-IDF + SVD fitted on train")
    p.add_argument("--text-max-length", type=_positive, default=d.text_max_length, metavar="N",
                   help=f"tokens per text for --text-model (default {d.text_max_length})")
    p.add_argument("--text-dim", type=_positive, default=d.text_dim, metavar="N",
                   help=f"SVD dimensions of the TF-IDF text features (default {d.text_dim})")
    p.add_argument("--val-per-class", type=_val_per_class, default=d.val_per_class, metavar="N|FRACTION",
                   help=f"val carved from train per class: a count, or a fraction < 1 (default {d.val_per_class})")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the val split and of random init")
    p.add_argument("--classes", metavar="A,B,...",
                   help="class names, comma-separated: for `folder` (unlabeled images + texts, labels -1 "
                        "for `rlmba label`), which has no classes on disk")
    p.add_argument("--dtype", choices=("float16", "float32"), default=d.dtype,
                   help=f"stored feature dtype (default {d.dtype})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing complete cache")
    p.add_argument("--fresh", action="store_true", help="discard an interrupted run's work directory")
    p.add_argument("--keep-work", action="store_true", help="keep <out>.partial/ after success")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    from rlmba_env.data.prepare import REPORT_FILE, PrepareConfig, default_out, prepare, work_dir

    cfg = PrepareConfig(
        dataset=args.dataset, raw=args.raw, out=args.out, device=args.device, batch_size=args.batch_size,
        workers=args.workers, arch=args.arch, weights=args.weights, image_size=args.image_size,
        frames=args.frames, text_model=args.text_model, text_max_length=args.text_max_length,
        text_dim=args.text_dim, val_per_class=args.val_per_class, seed=args.seed, dtype=args.dtype,
        classes=tuple(c.strip() for c in args.classes.split(",")) if args.classes else None,
        overwrite=args.overwrite, fresh=args.fresh, keep_work=args.keep_work, progress=not args.no_progress)
    try:
        out = prepare(cfg)
    except KeyboardInterrupt:
        target = Path(args.out).expanduser() if args.out else default_out(args.dataset)
        print(f"{PROG} prepare: interrupted; run the same command again to resume from {work_dir(target)}",
              file=sys.stderr)
        return 130
    report = json.loads((out / REPORT_FILE).read_text())
    print(f"wrote {out}: pool {report['splits']['pool']}, val {report['splits']['val']}, "
          f"test {report['splits']['test']}; {report['skipped_count']} samples skipped "
          f"(see {out / REPORT_FILE})")
    print(f"use it with: {_env_hint(args.dataset, out.resolve())}")
    return 0


def _env_hint(dataset: str, out: Path) -> str:
    from rlmba_env.data.cache import default_data_root
    from rlmba_env.registration import REAL_DATASETS

    if dataset not in REAL_DATASETS.values():  # unlabeled data
        return f"rlmba label init PROJECT_DIR --data {out}"
    env_id = next(k for k, v in REAL_DATASETS.items() if v == dataset)
    if out.name != dataset:
        return f'gym.make("RLMBA-Features-v0", path="{out}")  (or rename it to .../{dataset})'
    if out.parent == default_data_root().expanduser().resolve():
        return f'gym.make("{env_id}")'
    return f'gym.make("{env_id}", data_root="{out.parent}")  (or RLMBA_DATA={out.parent})'


# -- rlmba evaluate, rlmba benchmark ----------------------------------------------------------
def _add_script(subparsers, name: str, script: str, help: str, func: Callable) -> None:
    # The options are the script's Args dataclass, parsed by tyro, so the command and the
    # script can never disagree; argparse only hands the rest of the line over.
    parser = subparsers.add_parser(
        name, add_help=False, help=help,
        description=f"Same options as python {script} ({PROG} {name} --help lists them).")
    parser.set_defaults(func=func, pass_through=True)


def add_evaluate(subparsers) -> None:
    _add_script(subparsers, "evaluate", "agents/evaluate.py",
                "agents x seeds on an env id: TensorBoard, results.csv, summary.md, curves.png", _run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    import tyro

    from agents.evaluate import Args, evaluate

    evaluate(tyro.cli(Args, args=args.options, prog=f"{PROG} evaluate"))
    return 0


def add_benchmark(subparsers) -> None:
    _add_script(subparsers, "benchmark", "agents/benchmark.py",
                "datasets x agents x seeds on every core or a Ray cluster, and a leaderboard", _run_benchmark)


def _run_benchmark(args: argparse.Namespace) -> int:
    from agents.benchmark import main as benchmark_main

    return benchmark_main(args.options, prog=f"{PROG} benchmark")


# -- rlmba label (agents/label_cli.py: its --agent takes the agents' trained policies) ---------
def add_label(subparsers) -> None:
    from agents.label_cli import add_label_parser

    add_label_parser(subparsers)


# -- the command -----------------------------------------------------------------------------
SUBCOMMANDS: list[Callable] = [add_prepare, add_evaluate, add_benchmark, add_label]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="rlmba: multimodal active learning as a "
                                     "Gymnasium environment (RL-MBA, arXiv 2603.25107).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rlmba`` console script; returns the exit status."""
    from rlmba_env.data.raw import PrepareError

    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "pass_through", False):
        args.options = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.func(args)
    except (PrepareError, FileExistsError, FileNotFoundError) as e:
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
