"""A leaderboard of agents across datasets, from the per-round rows of every (dataset, agent, seed).

Per dataset: AULC (``agents.summary.aulc``) and final test top-1, mean ± std over seeds, and the
agents' rank by mean AULC (1 = best, ties share the mean rank). Across datasets:

- mean rank;
- normalised AULC: per dataset, ``(AULC - mean AULC of the baseline) / (best mean AULC - mean AULC
  of the baseline)``, so the baseline (random) scores 0 and the best agent 1 on average; a
  dataset on which no agent beats the baseline has no scale and is left out of it (and named);
- its interquartile mean (IQM) over datasets x seeds with a 95% stratified-bootstrap interval,
  and the probability of improvement ``P(X > Y)`` of each agent X over a chosen one Y (per
  dataset, the Mann-Whitney U statistic over seed pairs / pairs, averaged over datasets), as
  recommended by Agarwal et al., "Deep RL at the Edge of the Statistical Precipice"
  (NeurIPS 2021), with rliable's ``aggregate_iqm``, :func:`probability_of_improvement` (rliable's,
  vectorised) and ``agents.summary.stratified_bootstrap`` (seeded: the same results give the same
  intervals).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata

from agents.summary import aulc, curves, stratified_bootstrap


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """``P(X > Y)`` averaged over tasks, for ``(runs, tasks)`` scores: per task the Mann-Whitney U
    statistic over all run pairs divided by the pairs (a tie counts half). Equal to rliable's
    ``metrics.probability_of_improvement``, whose one SciPy call per task made the bootstrap of
    a full leaderboard take minutes."""
    x, y = np.asarray(x, dtype=float)[:, None, :], np.asarray(y, dtype=float)[None, :, :]
    return float(((x > y) + 0.5 * (x == y)).mean(axis=(0, 1)).mean())


def scores(rows_by_dataset: dict[str, list[dict[str, Any]]], agents: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """``{"aulc" | "final": {agent: (seeds, datasets) array}}``, seeds in ascending order."""
    out: dict[str, dict[str, list]] = {"aulc": {a: [] for a in agents}, "final": {a: [] for a in agents}}
    for rows in rows_by_dataset.values():
        for agent in agents:
            sizes, top1 = curves(rows, agent, "test_top1")
            out["aulc"][agent].append(aulc(sizes, top1))
            out["final"][agent].append(top1[:, -1])
    return {k: {a: np.stack(v, axis=1) for a, v in by_agent.items()} for k, by_agent in out.items()}


def leaderboard(rows_by_dataset: dict[str, list[dict[str, Any]]], agents: list[str], baseline: str = "random",
                compare_to: str = "margin", reps: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Every number of the leaderboard; see the module docstring for the definitions."""
    from rliable import metrics

    datasets = list(rows_by_dataset)
    s = scores(rows_by_dataset, agents)
    mean_aulc = np.array([s["aulc"][a].mean(0) for a in agents])  # (agents, datasets)
    ranks = np.stack([rankdata(-mean_aulc[:, j], method="average") for j in range(len(datasets))], axis=1)
    base = mean_aulc[agents.index(baseline)]
    span = mean_aulc.max(0) - base
    scaled = span > 1e-6  # below that the best agent ties the baseline: no scale to normalise by
    normalised = {a: (s["aulc"][a] - base) / np.where(scaled, span, 1.0) for a in agents}
    iqm = {a: stratified_bootstrap(metrics.aggregate_iqm, normalised[a][:, scaled], reps=reps, seed=seed)
           if scaled.any() else (np.nan, np.nan, np.nan) for a in agents}
    poi = {a: stratified_bootstrap(probability_of_improvement, s["aulc"][a], s["aulc"][compare_to],
                                   reps=reps, seed=seed) for a in agents if a != compare_to}
    return {"datasets": datasets, "agents": agents, "baseline": baseline, "compare_to": compare_to,
            "aulc": s["aulc"], "final": s["final"], "ranks": ranks, "mean_rank": ranks.mean(1),
            "normalised": normalised, "scaled": scaled, "iqm": iqm, "poi": poi}


def write_leaderboard(out_dir: Path, rows_by_dataset: dict[str, list[dict[str, Any]]], agents: list[str],
                      baseline: str = "random", compare_to: str = "margin", reps: int = 2000) -> dict[str, Any]:
    """``leaderboard.md``, ``leaderboard.csv`` (one row per agent) and ``curves.png`` in ``out_dir``."""
    b = leaderboard(rows_by_dataset, agents, baseline, compare_to, reps)
    datasets, n_seeds = b["datasets"], b["aulc"][agents[0]].shape[0]
    order = sorted(range(len(agents)), key=lambda i: (b["mean_rank"][i], agents[i]))
    dropped = [d for d, ok in zip(datasets, b["scaled"]) if not ok]

    table = []
    for i in order:
        a = agents[i]
        row = {"agent": a, "mean_rank": b["mean_rank"][i], "iqm_norm_aulc": b["iqm"][a][0],
               "iqm_norm_aulc_lo": b["iqm"][a][1], "iqm_norm_aulc_hi": b["iqm"][a][2]}
        p = b["poi"].get(a, (np.nan, np.nan, np.nan))
        row |= {f"p_improve_{compare_to}": p[0], f"p_improve_{compare_to}_lo": p[1], f"p_improve_{compare_to}_hi": p[2]}
        for j, d in enumerate(datasets):
            row |= {f"{d}/aulc_mean": b["aulc"][a][:, j].mean(), f"{d}/aulc_std": b["aulc"][a][:, j].std(),
                    f"{d}/final_top1_mean": b["final"][a][:, j].mean(), f"{d}/final_top1_std": b["final"][a][:, j].std(),
                    f"{d}/norm_aulc_mean": b["normalised"][a][:, j].mean() if b["scaled"][j] else np.nan,
                    f"{d}/rank": b["ranks"][i, j]}
        table.append(row)
    with open(out_dir / "leaderboard.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows({k: float(v) if isinstance(v, (float, np.floating)) else v for k, v in r.items()}
                         for r in table)

    lines = [f"# Leaderboard: {len(datasets)} datasets x {len(agents)} agents x {n_seeds} seed{'s' * (n_seeds != 1)}", "",
             f"| agent | mean rank | IQM normalised AULC [95% CI] | P(agent > {compare_to}) [95% CI] |",
             "|---|---|---|---|"]
    for r in table:
        p = "—" if r["agent"] == compare_to else (f"{r[f'p_improve_{compare_to}']:.2f} [{r[f'p_improve_{compare_to}_lo']:.2f}, "
                                                  f"{r[f'p_improve_{compare_to}_hi']:.2f}]")
        lines.append(f"| {r['agent']} | {r['mean_rank']:.2f} | {r['iqm_norm_aulc']:.3f} [{r['iqm_norm_aulc_lo']:.3f}, "
                     f"{r['iqm_norm_aulc_hi']:.3f}] | {p} |")
    for key, title in (("aulc", "AULC"), ("final_top1", "final test top-1")):
        lines += ["", f"## {title} per dataset (mean ± std over {n_seeds} seeds)", "",
                  "| agent | " + " | ".join(datasets) + " |", "|---|" + "---|" * len(datasets)]
        for r in table:
            lines.append(f"| {r['agent']} | " + " | ".join(f"{r[f'{d}/{key}_mean']:.3f} ± {r[f'{d}/{key}_std']:.3f}"
                                                          for d in datasets) + " |")
    lines += ["", f"AULC: area under test top-1 vs labels / label range. Rank: by mean AULC per dataset (1 = best). "
              f"Normalised AULC: {baseline} = 0, the dataset's best agent = 1"
              + (f" (left out: {', '.join(dropped)}, where no agent beats {baseline})" if dropped else "")
              + f". IQM over datasets x seeds and P(agent > {compare_to}) on AULC (Mann-Whitney over seed pairs, "
              f"averaged over datasets), with 95% stratified-bootstrap intervals ({reps} resamples, seed 0)."]
    (out_dir / "leaderboard.md").write_text("\n".join(lines) + "\n")
    write_curve_grid(out_dir / "curves.png", rows_by_dataset, agents)
    return b


def write_curve_grid(path: Path, rows_by_dataset: dict[str, list[dict[str, Any]]], agents: list[str]) -> None:
    """Fused test top-1 against labels, one panel per dataset, one line per agent with a ±std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(rows_by_dataset)
    cols = min(n, 4)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(4.2 * cols, 3.4 * ((n + cols - 1) // cols)),
                             squeeze=False)
    for ax, (dataset, rows) in zip(axes.flat, rows_by_dataset.items()):
        for i, agent in enumerate(agents):
            sizes, values = curves(rows, agent, "test_top1")
            color = plt.get_cmap("tab10")(i % 10)
            ax.plot(sizes, values.mean(0), label=agent, color=color, linewidth=1.3, linestyle="-" if i < 10 else "--")
            ax.fill_between(sizes, values.mean(0) - values.std(0), values.mean(0) + values.std(0), color=color, alpha=0.1)
        ax.set_title(dataset)
        ax.set_xlabel("labeled samples")
        ax.set_ylabel("test top-1")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(agents), 6), fontsize=8)
    fig.tight_layout(rect=(0, 0.04 + 0.02 * ((len(agents) - 1) // 6), 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
