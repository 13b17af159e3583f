"""Active-learning quality, paper style: rows are strategies, columns labeled-set sizes.

    python benchmarks/al_quality.py                                  # AV-Digits, all strategies, 5 seeds
    python benchmarks/al_quality.py --env-id RLMBA-Synthetic-v0 --seeds 0 1 2
    python benchmarks/al_quality.py --agents coreset margin ppo=runs/<run>/model.zip

Runs (or resumes) the evaluation harness, then writes ``al_quality.md`` beside its outputs:
fused (multimodal) test top-1 at each budget, as in the RL-MBA paper's tables, followed by
the same table for each modality's own head (unimodal top-1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from agents.evaluate import DEFAULT_AGENTS, Args, evaluate, read_rows
from agents.summary import curves


@dataclass
class BenchArgs:
    env_id: str = "RLMBA-AVDigits-v0"
    """Gymnasium id of the environment"""
    env_kwargs: str = "{}"
    """keyword arguments for gym.make, as JSON"""
    agents: tuple[str, ...] = DEFAULT_AGENTS
    """strategies (or trained policies) to compare"""
    seeds: tuple[int, ...] = (20000, 20001, 20002, 20003, 20004)
    """episode seeds"""
    out_dir: str = ""
    """output folder (default runs/eval/<env_id>)"""


def paper_table(rows, agents, key: str, title: str) -> list[str]:
    sizes = curves(rows, agents[0], key)[0]
    lines = [f"### {title}", "", "| strategy | " + " | ".join(str(int(s)) for s in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    best = np.max([curves(rows, a, key)[1].mean(0) for a in agents], axis=0)
    for agent in agents:
        mean = curves(rows, agent, key)[1].mean(0)
        cells = [f"**{100 * m:.1f}**" if m == b else f"{100 * m:.1f}" for m, b in zip(mean, best)]
        lines.append(f"| {agent} | " + " | ".join(cells) + " |")
    return lines + [""]


def main(args: BenchArgs) -> Path:
    out = evaluate(Args(env_id=args.env_id, env_kwargs=args.env_kwargs, agents=args.agents,
                        seeds=args.seeds, out_dir=args.out_dir))
    rows = read_rows(out / "results.csv")
    names = list(dict.fromkeys(r["agent"] for r in rows))
    modalities = [k.removeprefix("test_top1_") for k in rows[0] if k.startswith("test_top1_")]
    lines = [f"## {args.env_id}: test top-1 (%) by labeled-set size, mean of {len(args.seeds)} seeds", ""]
    lines += paper_table(rows, names, "test_top1", "multimodal (fused)")
    for m in modalities:
        lines += paper_table(rows, names, f"test_top1_{m}", f"unimodal: {m}")
    text = "\n".join(lines)
    (out / "al_quality.md").write_text(text)
    print(text)
    return out


if __name__ == "__main__":
    main(tyro.cli(BenchArgs))
