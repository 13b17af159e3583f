"""Turn per-round evaluation rows into the summary table and learning-curve plot.

Area under the learning curve (AULC) is the trapezoidal area under test top-1 against the
number of labels, divided by the label range, so it is a mean accuracy in [0, 1]. Intervals
across seeds are the interquartile mean (IQM) with 95% stratified-bootstrap confidence
intervals (Agarwal et al., "Deep RL at the Edge of the Statistical Precipice", NeurIPS 2021:
rliable's IQM, resampled by :func:`stratified_bootstrap` from one seeded generator, so the same
rows always give the same intervals).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def curves(rows: list[dict[str, Any]], agent: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(labeled sizes, values of shape (seeds, rounds)) for one agent and one column."""
    by_seed: dict[float, list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        if row["agent"] == agent:
            by_seed[row["seed"]].append((row["labeled"], row[key]))
    series = [sorted(points) for _, points in sorted(by_seed.items())]
    sizes = np.array([p[0] for p in series[0]])
    for s in series[1:]:
        if not np.array_equal([p[0] for p in s], sizes):
            raise ValueError(f"agent {agent!r}: seeds disagree on the labeled-set sizes")
    return sizes, np.array([[p[1] for p in s] for s in series])


def aulc(sizes, top1):
    """Trapezoidal area under test top-1 (last axis) against labels, divided by the label span:
    the mean top-1 over the campaign, in [0, 1]. ``top1`` is one curve or (seeds, rounds)."""
    x, y = np.asarray(sizes, dtype=float), np.asarray(top1, dtype=float)
    if x.size < 2 or x[-1] == x[0]:
        return y[..., -1]
    return np.trapezoid(y, x, axis=-1) / (x[-1] - x[0])


def stratified_bootstrap(func: Callable[..., float], *scores: np.ndarray, reps: int, seed: int = 0,
                         size: float = 0.95) -> tuple[float, float, float]:
    """``func(*scores)`` and its percentile interval from ``reps`` stratified-bootstrap resamples.

    Each ``scores`` array is ``(runs, tasks)``; a resample redraws the runs of every task (column)
    with replacement, independently per array, as rliable's ``StratifiedBootstrap`` does. It is
    written here because rliable 1.2 draws its indices from NumPy's global generator whatever
    ``random_state`` it is given, so two calls with the same seed gave different intervals; here
    every draw comes from ``np.random.default_rng(seed)``.
    """
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(s, dtype=float) for s in scores]
    stats = np.empty(reps)
    for i in range(reps):
        stats[i] = func(*(np.take_along_axis(a, rng.integers(0, a.shape[0], size=a.shape), axis=0)
                          for a in arrays))
    tail = 100 * (1 - size) / 2
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return float(func(*arrays)), float(lo), float(hi)


def iqm_intervals(scores: dict[str, np.ndarray], reps: int, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """IQM and its 95% stratified-bootstrap interval per agent; scores are ``(seeds,)`` arrays
    (one task) or ``(seeds, tasks)``. The same scores and seed always give the same numbers."""
    from rliable import metrics

    return {k: stratified_bootstrap(metrics.aggregate_iqm, np.asarray(v).reshape(len(v), -1), reps=reps, seed=seed)
            for k, v in scores.items()}


def write_summary(path: Path, rows: list[dict[str, Any]], agents: list[str], modalities: tuple[str, ...],
                  title: str, reps: int = 2000) -> str:
    """Markdown: top-1 at each budget (mean +- std), AULC, final balance and IQM intervals."""
    sizes = curves(rows, agents[0], "test_top1")[0]
    n_seeds = curves(rows, agents[0], "test_top1")[1].shape[0]
    aulcs, finals, balances, tables = {}, {}, {}, {}
    for agent in agents:
        agent_sizes, top1 = curves(rows, agent, "test_top1")
        if not np.array_equal(agent_sizes, sizes):
            raise ValueError(f"agent {agent!r} was evaluated at other budgets than {agents[0]!r}")
        tables[agent] = top1
        aulcs[agent] = aulc(sizes, top1)
        finals[agent] = top1[:, -1]
        balances[agent] = curves(rows, agent, "balance")[1][:, -1]
    iqm_aulc = iqm_intervals(aulcs, reps)
    iqm_final = iqm_intervals(finals, reps)

    lines = [f"# {title}: test top-1 by labeled-set size ({n_seeds} seeds, mean ± std)", ""]
    header = "| agent | " + " | ".join(str(int(s)) for s in sizes) + " |"
    lines += [header, "|---|" + "---|" * len(sizes)]
    for agent in agents:
        t = tables[agent]
        lines.append(f"| {agent} | " + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in zip(t.mean(0), t.std(0))) + " |")
    lines += ["", "| agent | AULC | IQM AULC [95% CI] | final top-1 | IQM final top-1 [95% CI] | final balance |",
              "|---|---|---|---|---|---|"]
    order = sorted(agents, key=lambda a: -aulcs[a].mean())
    for agent in order:
        p, lo, hi = iqm_aulc[agent]
        fp, flo, fhi = iqm_final[agent]
        lines.append(
            f"| {agent} | {aulcs[agent].mean():.3f} ± {aulcs[agent].std():.3f} | {p:.3f} [{lo:.3f}, {hi:.3f}] "
            f"| {finals[agent].mean():.3f} ± {finals[agent].std():.3f} | {fp:.3f} [{flo:.3f}, {fhi:.3f}] "
            f"| {balances[agent].mean():.3f} |"
        )
    per_modality = ["| agent | " + " | ".join(f"final top-1 {m}" for m in modalities) + " |",
                    "|---|" + "---|" * len(modalities)]
    for agent in order:
        cells = []
        for m in modalities:
            final_m = curves(rows, agent, f"test_top1_{m}")[1][:, -1]
            cells.append(f"{final_m.mean():.3f} ± {final_m.std():.3f}")
        per_modality.append(f"| {agent} | " + " | ".join(cells) + " |")
    lines += ["", *per_modality, "",
              "AULC: area under test top-1 vs labels / label range. IQM: interquartile mean across seeds "
              "with 95% stratified-bootstrap intervals (rliable)."]
    text = "\n".join(lines) + "\n"
    Path(path).write_text(text)
    return text


def write_curves(path: Path, rows: list[dict[str, Any]], agents: list[str], modalities: tuple[str, ...],
                 title: str) -> None:
    """Fused and per-modality test top-1 against labels, one line per agent with a ±std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("test_top1", "fused")] + [(f"test_top1_{m}", m) for m in modalities]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4), squeeze=False)
    for ax, (key, label) in zip(axes[0], keys):
        for i, agent in enumerate(agents):
            sizes, values = curves(rows, agent, key)
            mean, std = values.mean(0), values.std(0)
            # tab10 has ten colours; later agents reuse them dashed so no two lines look alike.
            color = plt.get_cmap("tab10")(i % 10)
            ax.plot(sizes, mean, label=agent, linewidth=1.5, color=color, linestyle="-" if i < 10 else "--")
            ax.fill_between(sizes, mean - std, mean + std, alpha=0.12, color=color)
        ax.set_title(f"{title}: {label} top-1")
        ax.set_xlabel("labeled samples")
        ax.set_ylabel("test top-1")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
