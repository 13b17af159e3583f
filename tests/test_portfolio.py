import pytest
import torch

from rlmba_env.learner.evidential import expected_probs
from rlmba_env.selection.portfolio import (
    PROPOSERS,
    candidate_set,
    candidate_set_size,
    cluster_representatives,
    proposals,
    union_with_flags,
)
from rlmba_env.selection.score import top2_margin

N, K, M, B = 120, 5, 3, 6


def gap(fused_alpha):
    """The fused prediction's top-two gap, as the round computes it."""
    return top2_margin(expected_probs(fused_alpha.float()))


@pytest.fixture(scope="module")
def proposed():
    g = torch.Generator().manual_seed(0)
    alphas = torch.rand(M, N, K, generator=g) * 5 + 1
    x = torch.randn(N, 4, generator=g)
    assign = torch.randint(0, 8, (N,), generator=g)
    return proposals(B, torch.rand(N, generator=g), gap(alphas.mean(0)), alphas, torch.tensor([0.5, 0.3, 0.2]),
                     x, torch.randn(7, 4, generator=g), torch.rand(N, generator=g), assign, g)


def test_every_proposer_proposes_budget_distinct_pool_positions(proposed):
    assert set(proposed) == set(PROPOSERS)
    for p in proposed.values():
        assert p.shape == (B,) and p.unique().numel() == B and 0 <= p.min() and p.max() < N


def test_portfolio_candidates_are_distinct_and_flagged_by_every_proposer_that_proposed_them(proposed):
    positions, flags = union_with_flags(proposed)
    assert positions.unique().numel() == positions.numel()
    assert set(positions.tolist()) == set(torch.cat(list(proposed.values())).tolist())
    for j, p in enumerate(PROPOSERS):
        expected = torch.isin(positions, proposed[p]).float()
        assert torch.equal(flags[:, j], expected)
    assert (flags.sum(1) >= 1).all()


def test_portfolio_fits_its_declared_size(proposed):
    positions, _ = candidate_set("portfolio", candidate_set_size("portfolio", 5, B), torch.rand(N), proposed)
    assert positions.numel() <= len(PROPOSERS) * B


def test_score_candidates_are_the_top_kappa_b_by_q_and_flag_membership(proposed):
    q = torch.rand(N, generator=torch.Generator().manual_seed(1))
    positions, flags = candidate_set("score", 15, q, proposed)
    assert torch.equal(positions, torch.sort(q, descending=True).indices[:15])
    assert torch.equal(flags[:, PROPOSERS.index("score")], torch.isin(positions, proposed["score"]).float())


def test_unknown_candidate_set_is_rejected_with_the_allowed_values(proposed):
    with pytest.raises(ValueError, match="portfolio"):
        candidate_set_size("topq", 5, B)


def test_cluster_representatives_are_the_nearest_member_of_the_largest_clusters():
    assign = torch.tensor([0, 0, 0, 1, 1, 2])
    distance = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.2, 0.0])
    assert cluster_representatives(distance, assign, 2).tolist() == [1, 4]


def test_k_center_on_a_large_pool_proposes_distinct_rows_of_its_uniform_sample(monkeypatch):
    import rlmba_env.selection.portfolio as portfolio

    monkeypatch.setattr(portfolio, "KCENTER_MAX_ROWS", 30)
    g = torch.Generator().manual_seed(0)
    alphas = torch.rand(M, N, K, generator=g) * 5 + 1
    proposed = proposals(B, torch.rand(N, generator=g), gap(alphas.mean(0)), alphas, torch.tensor([0.5, 0.3, 0.2]),
                         torch.randn(N, 4, generator=g), torch.randn(7, 4, generator=g), torch.rand(N, generator=g),
                         torch.randint(0, 8, (N,), generator=g), torch.Generator().manual_seed(5))
    kcenter = proposed["kcenter"]
    sample = torch.randperm(N, generator=torch.Generator().manual_seed(5))[:30]  # the proposers' first draw
    assert kcenter.unique().numel() == B and torch.isin(kcenter, sample).all()
