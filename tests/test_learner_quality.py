"""benchmarks/learner_quality.py: the table's numbers from hand-made rounds (no training)."""

import pytest

from benchmarks.learner_quality import summarise


def _rows(top1: dict[tuple[str, str], list[float]]) -> list[dict]:
    """One seed, two rounds; ``top1[(model, view)]`` is the test top-1 of each round."""
    return [{"dataset": "d", "seed": 0, "round": r, "labeled": 10 * (r + 1), "model": model, "view": view,
             "val_top1": acc, "test_top1": acc, "weight": "", "fit_s": 0.1}
            for (model, view), curve in top1.items() for r, acc in enumerate(curve)]


def test_worst_gap_compares_each_fusion_rule_with_its_own_modality_heads():
    rows = _rows({
        ("geometric", "fused"): [0.5, 0.6], ("geometric", "a"): [0.4, 0.7], ("geometric", "b"): [0.3, 0.3],
        ("efda", "fused"): [0.8, 0.8], ("efda", "a"): [0.9, 0.8], ("efda", "b"): [0.2, 0.2],
        ("lr", "fused"): [0.5, 0.5], ("lr", "a"): [0.5, 0.5], ("lr", "b"): [0.5, 0.5],
    })
    gaps = summarise(rows)["d"]["worst_gap"]
    assert gaps["geometric"] == pytest.approx(-0.1)  # 0.6 - 0.7 at the second budget
    assert gaps["efda"] == pytest.approx(-0.1)  # 0.8 - 0.9 at the first budget, not against geometric's heads
