"""Learner quality: the evidential learner against logistic regression and its own modalities.

    python benchmarks/learner_quality.py                       # 9 dev-suite datasets + AV-Digits, 5 seeds
    python benchmarks/learner_quality.py --quick               # 4 datasets, 2 seeds
    python benchmarks/learner_quality.py --datasets webkb msrc --seeds 0 1 2

Every episode follows the dataset's protocol with random sampling (the labeled set of each
round does not depend on the model), so every model is trained on the same rows. Each round:

- the evidential learner (:class:`~rlmba_env.learner.EvidentialLearner`) with each fusion rule
  of ``--fusions`` (by default the learner's default, geometric, and the paper's EFDA; ``ds``
  too), fitted and weighted exactly as step 1-2 of an env round
  (:func:`rlmba_env.round.fusion_weights`); its fused test top-1 and each modality head's;
- a scikit-learn reference: per modality ``LogisticRegression`` (default ``C = 1``) on features
  standardised with the pool's statistics (``StandardScaler``), fused by the product of the
  modalities' probabilities.

The markdown table (stdout and ``<out>/learner_quality.md``) gives, per dataset and mean over
seeds: AULC (mean top-1 over the campaign, :func:`agents.summary.aulc`) and final top-1 of
each fusion rule, the LR reference and the best single modality (of the learner of the first
fusion rule, the modality with the best mean curve); ``worst gap``, the smallest difference
over budgets between the mean fused top-1 and the mean top-1 of the same learner's best
modality at that budget (the issue's target: >= -.005); ``fused<best``, the rounds of all episodes in which fused test top-1 is
below that episode's best modality; and the mean training seconds of a round of the first
fusion rule on one thread.
``<out>/rounds.csv`` holds one row per dataset, seed, round, model and view.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import tyro

from agents.summary import aulc
from rlmba_env.config import EnvConfig
from rlmba_env.data import MultimodalDataset, load_dataset
from rlmba_env.data.suite import suite_names, suite_path, suite_protocol
from rlmba_env.learner import EvidentialLearner, LearnerConfig, fuse
from rlmba_env.protocols import PROTOCOLS, Protocol
from rlmba_env.round import fusion_weights

QUICK_DATASETS = ("avdigits", "movies", "prokaryotic", "proteinfold")


@dataclass
class BenchArgs:
    datasets: tuple[str, ...] = ()
    """datasets to run ("avdigits" or dev-suite names); empty = all nine plus AV-Digits"""
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    """episode seeds (labeled-set draws and learner seeds)"""
    quick: bool = False
    """4 datasets (AV-Digits, movies, prokaryotic, proteinfold) and seeds 0 1, unless given"""
    fusions: tuple[str, ...] = (LearnerConfig.fusion, "efda")
    """fusion rules of the evidential learner to compare (LearnerConfig.fusion), the first one
    for the best-view, fit-time and win columns"""
    learner: str = "{}"
    """LearnerConfig fields for the evidential learner, as JSON (fusion is set by --fusions)"""
    tau: float = EnvConfig.tau
    """AMCB softmax temperature, as the env's default"""
    epsilon: float = EnvConfig.epsilon
    """AMCB weight floor, as the env's default"""
    fusion_select: str = EnvConfig.fusion_select
    """how the fused opinion's weights are chosen on val ("stacked", "nested", "none"), as the env's default"""
    torch_threads: int = 1
    """torch intra-op threads"""
    out_dir: str = "runs/learner_quality"
    """where rounds.csv and learner_quality.md go"""


def load(name: str) -> tuple[MultimodalDataset, Protocol]:
    if name == "avdigits":
        from rlmba_env.data.avdigits import load_avdigits

        return load_avdigits(), PROTOCOLS["avdigits"]
    return load_dataset(suite_path(name)), suite_protocol(name)


def labeled_sets(dataset: MultimodalDataset, protocol: Protocol, seed: int) -> list[np.ndarray]:
    """Random sampling: the labeled rows of every round, round 0 first (nested sets)."""
    order = np.random.default_rng(seed).permutation(np.asarray(dataset.splits["pool"]))
    return [order[: protocol.initial_labels + r * protocol.per_round] for r in range(protocol.rounds + 1)]


def evidential_curve(dataset, features, labels, sets, config: LearnerConfig, seed: int, tau: float, epsilon: float,
                     fusion_select: str = EnvConfig.fusion_select):
    """Per round: val/test top-1 of fused and of each modality, the weights, the fit seconds."""
    learner = EvidentialLearner(dataset.feature_dims, dataset.n_classes, config)
    val = torch.as_tensor(dataset.splits["val"])
    test = torch.as_tensor(dataset.splits["test"])
    weights = torch.full((len(dataset.modalities),), 1.0 / len(dataset.modalities))
    out = []
    for r, rows in enumerate(sets):
        fit = learner.fit(features, labels, torch.as_tensor(rows), weights, seed=seed * 1000 + r)
        alphas = learner.predict(features)
        weights = fusion_weights(alphas[:, val], labels[val], weights, config.fusion, tau, epsilon, fusion_select)
        record = {"fit_s": fit.seconds, "weights": weights.tolist()}
        for split, split_rows in (("val", val), ("test", test)):
            a, y = alphas[:, split_rows], labels[split_rows]
            record[split] = {"fused": float((fuse(a, weights, config.fusion).argmax(-1) == y).float().mean())}
            for m, am in zip(dataset.modalities, a):
                record[split][m] = float((am.argmax(-1) == y).float().mean())
        out.append(record)
    return out


def logistic_curve(dataset, sets):
    """Per round: val/test top-1 of the per-modality LR reference and of its product fusion."""
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    k = dataset.n_classes
    y_all = np.asarray(dataset.labels)
    pool = np.asarray(dataset.splits["pool"])
    # standardised with the pool's statistics, as the evidential learner is: a scaler fitted on
    # a handful of labeled rows blows up columns that happen to be constant among them
    x_all = {m: StandardScaler().fit(np.asarray(x[pool], dtype=np.float64)).transform(np.asarray(x, dtype=np.float64))
             for m, x in dataset.features.items()}
    out = []
    for rows in sets:
        start = time.perf_counter()
        record = {}
        logp = {}
        for m in dataset.modalities:
            x = x_all[m]
            if np.unique(y_all[rows]).size == 1:  # one class seen: predict it
                p = np.full((x.shape[0], k), 1e-6)
                p[:, y_all[rows][0]] = 1.0
            else:
                with warnings.catch_warnings():  # "more classes than half the samples": expected here
                    warnings.simplefilter("ignore", UserWarning)
                    model = LogisticRegression(max_iter=1000).fit(x[rows], y_all[rows])
                p = np.full((x.shape[0], k), 1e-6)  # classes never labeled get (almost) no mass
                p[:, model.classes_] = model.predict_proba(x)
            logp[m] = np.log(np.clip(p, 1e-12, None))
        record["fit_s"] = time.perf_counter() - start
        fused = sum(logp.values())
        for split in ("val", "test"):
            split_rows = np.asarray(dataset.splits[split])
            y = y_all[split_rows]
            record[split] = {"fused": float((fused[split_rows].argmax(1) == y).mean())}
            for m in dataset.modalities:
                record[split][m] = float((logp[m][split_rows].argmax(1) == y).mean())
        out.append(record)
    return out


def run(args: BenchArgs) -> list[dict]:
    torch.set_num_threads(args.torch_threads)
    names = args.datasets or ((QUICK_DATASETS if args.quick else tuple(suite_names()) + ("avdigits",)))
    learner = json.loads(args.learner)
    rows = []
    for name in names:
        dataset, protocol = load(name)
        features = {m: torch.as_tensor(x) for m, x in dataset.features.items()}
        labels = torch.as_tensor(dataset.labels)
        for seed in args.seeds:
            sets = labeled_sets(dataset, protocol, seed)
            curves = {fusion: evidential_curve(dataset, features, labels, sets,
                                               LearnerConfig(**{**learner, "fusion": fusion}), seed,
                                               args.tau, args.epsilon, args.fusion_select)
                      for fusion in args.fusions}
            curves["lr"] = logistic_curve(dataset, sets)
            for model, curve in curves.items():
                for r, record in enumerate(curve):
                    weights = dict(zip(dataset.modalities, record.get("weights", [])))
                    for view in ("fused",) + dataset.modalities:
                        rows.append({"dataset": name, "seed": seed, "round": r, "labeled": len(sets[r]),
                                     "model": model, "view": view, "val_top1": record["val"][view],
                                     "test_top1": record["test"][view], "weight": weights.get(view, ""),
                                     "fit_s": record["fit_s"]})
            print(f"{name} seed {seed}: final test top-1 "
                  + ", ".join(f"{m} {c[-1]['test']['fused']:.3f}" for m, c in curves.items()), flush=True)
    return rows


def summarise(rows: list[dict]) -> dict[str, dict]:
    """Per dataset: mean-over-seeds curves and the table's numbers."""
    out = {}
    for name in dict.fromkeys(r["dataset"] for r in rows):
        sub = [r for r in rows if r["dataset"] == name]
        seeds = sorted({r["seed"] for r in sub})
        sizes = np.array(sorted({r["labeled"] for r in sub}))
        views = list(dict.fromkeys(r["view"] for r in sub))

        def grid(model, view, key="test_top1"):  # (seeds, rounds)
            g = np.full((len(seeds), len(sizes)), np.nan)
            for r in sub:
                if r["model"] == model and r["view"] == view:
                    g[seeds.index(r["seed"]), int(np.searchsorted(sizes, r["labeled"]))] = r[key]
            return g

        fusions = [m for m in dict.fromkeys(r["model"] for r in sub) if m != "lr"]
        models = fusions + ["lr"]
        fused = {m: grid(m, "fused") for m in models}
        singles = {v: grid(fusions[0], v) for v in views if v != "fused"}
        best_view = max(singles, key=lambda v: aulc(sizes, singles[v].mean(0)))
        per_episode_best = np.max(np.stack(list(singles.values())), axis=0)
        out[name] = {
            "seeds": len(seeds), "sizes": sizes.tolist(), "best_view": best_view, "fusions": fusions,
            "aulc": {m: float(aulc(sizes, fused[m].mean(0))) for m in models}
            | {"best": float(aulc(sizes, singles[best_view].mean(0)))},
            "final": {m: float(fused[m].mean(0)[-1]) for m in models} | {"best": float(singles[best_view].mean(0)[-1])},
            # each fusion rule against its own learner's modality heads
            "worst_gap": {m: float((fused[m].mean(0) - np.max([grid(m, v).mean(0) for v in singles], axis=0)).min())
                          for m in fusions},
            "below": {m: int((grid(m, "fused") < np.max(np.stack([grid(m, v) for v in singles]), axis=0)).sum())
                      for m in fusions},
            "rounds": int(per_episode_best.size),
            "fit_s": float(np.nanmean(grid(fusions[0], "fused", "fit_s"))),
        }
    return out


def table(summary: dict[str, dict]) -> str:
    fusions = next(iter(summary.values()))["fusions"]
    names = [f.upper() if len(f) <= 4 else f for f in fusions]
    slash = " / ".join(names)
    lines = ["| dataset | " + " | ".join(f"AULC {n}" for n in names) + " | AULC LR | AULC best view | "
             + " | ".join(f"final {n}" for n in names) + " | final LR | final best view "
             f"| worst gap {slash} | fused<best {slash} | train s/round |",
             "|---|" + "---:|" * (2 * len(fusions) + 7)]
    for name, s in summary.items():
        a, f = s["aulc"], s["final"]
        gaps = " / ".join(f"{s['worst_gap'][m]:+.3f}" for m in fusions)
        lines.append(
            f"| {name} | " + " | ".join(f"{a[m]:.3f}" for m in fusions)
            + f" | {a['lr']:.3f} | {a['best']:.3f} ({s['best_view']}) | "
            + " | ".join(f"{f[m]:.3f}" for m in fusions) + f" | {f['lr']:.3f} | {f['best']:.3f} "
            f"| {gaps} "
            f"| {' / '.join(str(s['below'][m]) for m in fusions)} of {s['rounds']} | {s['fit_s']:.3f} |")
    lines.append("")
    for m, n in zip(fusions, names):
        wins = sum(s["aulc"][m] >= s["aulc"]["lr"] for s in summary.values())
        worst = min(s["aulc"][m] - s["aulc"]["lr"] for s in summary.values())
        lines.append(f"{n} AULC >= LR on {wins} of {len(summary)} datasets; worst {n} - LR {worst:+.3f}; "
                     f"worst fused - best view over budgets {min(s['worst_gap'][m] for s in summary.values()):+.3f}")
    return "\n".join(lines)


def main(args: BenchArgs) -> str:
    if args.quick:
        args = replace(args, datasets=args.datasets or QUICK_DATASETS,
                       seeds=args.seeds if args.seeds != BenchArgs.seeds else (0, 1))
    rows = run(args)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "rounds.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    text = table(summarise(rows))
    (out / "learner_quality.md").write_text(text + "\n")
    print(text)
    return text


if __name__ == "__main__":
    main(tyro.cli(BenchArgs))
