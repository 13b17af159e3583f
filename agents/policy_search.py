"""Direct policy search across datasets: a designed set of linear candidate scores around margin.

RL-MBA (arXiv 2603.25107) learns its selection policy from the round reward; the regressions of
:mod:`agents.lookahead` learn it from a noisy proxy of that reward. Here the objective is the one
the policy is judged on: each candidate policy is a fixed linear score ``w . x`` over the
observation's candidate columns (:data:`rlmba_env.observation.CANDIDATE_COLUMNS`, all in [0, 1]),
written exactly into a :class:`~agents.reinforce.ReinforceAgent` checkpoint with a
:class:`~agents.networks.BilinearScorer` of no state terms (:func:`agents.lookahead.bilinear_agent`;
ranked once per round when its columns do not change with picks) and played greedy and frozen; every candidate plays whole
campaigns on the training datasets and training seeds, and :func:`choose_candidate` takes the one
with the best mean AULC difference to margin over the datasets it may see (zeroth-order search
over a small designed set, so that a handful of episodes per candidate and dataset suffice).

The set (:data:`CANDIDATES`) is margin sampling within the portfolio candidates (``margin_rank``
alone) plus small weights on one or two other columns, each read from the column's meaning: a
weight of 0.1 on a pool-percentile column lets a candidate whose fused margin ranks up to 0.1
lower replace one of margin's picks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

REFERENCE = "margin"
"""the candidate every other is measured against (margin sampling within the candidate set)"""
CANDIDATES: dict[str, dict[str, float]] = {
    REFERENCE: {"margin_rank": 1.0},
    # diversity: far from every labeled row
    "m+dist.1": {"margin_rank": 1.0, "labeled_distance_rank": 0.1},
    "m+dist.3": {"margin_rank": 1.0, "labeled_distance_rank": 0.3},
    # representativeness: close to a k-means centre
    "m+dens.1": {"margin_rank": 1.0, "density_rank": 0.1},
    "m+dens.3": {"margin_rank": 1.0, "density_rank": 0.3},
    "m+dist.1+dens.1": {"margin_rank": 1.0, "labeled_distance_rank": 0.1, "density_rank": 0.1},
    # clusters already labeled or picked this round count against a candidate (coverage is
    # a share of the cluster, a few hundredths, hence the larger weight)
    "m-cov3": {"margin_rank": 1.0, "coverage": -3.0},
    # the paper's score q (uncertainty + diversity)
    "m+score.1": {"margin_rank": 1.0, "score_rank": 0.1},
    "m+score.3": {"margin_rank": 1.0, "score_rank": 0.3},
    "m+score1": {"margin_rank": 1.0, "score_rank": 1.0},
    # other uncertainties: the weakest modality's margin, fused entropy, EFDA U
    "m+weak.2": {"margin_rank": 1.0, "weak_margin": 0.2},
    "m+entropy.3": {"margin_rank": 1.0, "fused_entropy": 0.3},
    "m+efda.3": {"margin_rank": 1.0, "efda_uncertainty": 0.3},
    # the modalities disagree / conflict on the candidate
    "m+disagree.2": {"margin_rank": 1.0, "disagreement": 0.2},
    "m+conflict.3": {"margin_rank": 1.0, "conflict": 0.3},
}
"""candidate name -> weights of the candidate columns it scores (0 for every other column)"""


REFINE_SCALES = (0.5, 2.0)
"""factors a refinement applies to the best candidate's weights beside margin's"""


def candidate_weights(name: str) -> dict[str, float]:
    """The weights of a candidate: a name of :data:`CANDIDATES`, ``A*F`` (margin's weight and
    F times the other weights of A) or ``A&B`` (margin's weight and the other weights of A and
    of B added), A and B names of :data:`CANDIDATES`."""
    def base(part: str) -> dict[str, float]:
        if part not in CANDIDATES:
            raise ValueError(f"candidate {name!r}: {part!r} is not a candidate; choose from {list(CANDIDATES)} "
                             "or combine two as A*FACTOR or A&B")
        return CANDIDATES[part]

    lead = CANDIDATES[REFERENCE]
    if "&" in name:
        first, _, second = name.partition("&")
        out = dict(lead)
        for part in (first, second):
            for column, w in base(part).items():
                if column not in lead:
                    out[column] = out.get(column, 0.0) + w
        return out
    if "*" in name:
        part, _, factor = name.partition("*")
        try:
            scale = float(factor)
        except ValueError:
            raise ValueError(f"candidate {name!r}: the factor {factor!r} after '*' is not a number") from None
        return {**lead, **{c: scale * w for c, w in base(part).items() if c not in lead}}
    return dict(base(name))


def refinements(scores: Mapping[str, float], reference: str = REFERENCE) -> list[str]:
    """A second search round around the first's ``scores`` (candidate -> mean AULC difference to
    ``reference``, of one fold): the best non-reference candidate with its other weights scaled
    by each of :data:`REFINE_SCALES`, and the best two combined."""
    ranked = sorted((c for c in scores if c != reference), key=lambda c: -scores[c])
    if not ranked:
        raise ValueError("refinements() needs the score of at least one candidate besides the reference")
    out = [f"{ranked[0]}*{f:g}" for f in REFINE_SCALES]
    return out + ([f"{ranked[0]}&{ranked[1]}"] if len(ranked) > 1 else [])


def finalists(scores: Mapping[str, float], k: int, reference: str = REFERENCE) -> list[str]:
    """``reference`` and the ``k`` best other candidates by ``scores`` (successive halving: only
    these are played on more seeds before the final choice)."""
    if k < 1:
        raise ValueError(f"finalists() needs k >= 1, got {k}")
    return [reference] + sorted((c for c in scores if c != reference), key=lambda c: -scores[c])[:k]


def weight_vector(weights: Mapping[str, float], columns: Sequence[str]) -> np.ndarray:
    """``weights`` as a vector over ``columns`` (the scored columns of
    :func:`agents.lookahead.scored_columns`, in order), 0 where a column is not named."""
    unknown = sorted(set(weights) - set(columns))
    if unknown:
        raise ValueError(f"candidate weights name {unknown}, which are not scored candidate columns; "
                         f"choose from {list(columns)}")
    return np.array([float(weights.get(c, 0.0)) for c in columns])


def choose_candidate(table: Mapping[str, Mapping[str, np.ndarray]], held_out: str,
                     candidates: Sequence[str], reference: str = REFERENCE) -> tuple[str, dict[str, float]]:
    """The candidate with the best mean, over the datasets of ``table`` except ``held_out``, of
    its mean AULC minus ``reference``'s (``table``: dataset -> candidate -> AULC per training
    seed, the same seeds for every candidate of a dataset), and every candidate's score.
    ``held_out``'s entry is never read. Ties go to the earlier candidate (``reference`` first)."""
    seen = [n for n in table if n != held_out]
    if not seen:
        raise ValueError(f"choose_candidate(): no training dataset besides {held_out!r} in the table")
    order = [reference] + [c for c in candidates if c != reference]
    scores = {}
    for c in order:
        missing = [n for n in seen if c not in table[n] or reference not in table[n]
                   or table[n][c].size != table[n][reference].size or not table[n][c].size]
        if missing:
            raise ValueError(f"choose_candidate(): candidate {c!r} lacks the training-seed episodes of "
                             f"{missing} (or {reference!r} does); run the search stage first")
        scores[c] = float(np.mean([table[n][c].mean() - table[n][reference].mean() for n in seen]))
    best = max(order, key=lambda c: (scores[c], -order.index(c)))
    return best, scores
