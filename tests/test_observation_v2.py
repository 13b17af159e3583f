import torch

from rlmba_env.learner.evidential import expected_probs
from rlmba_env.selection.score import top2_margin

from rlmba_env.observation import CANDIDATE_COLUMNS, STATE_ENTRIES, candidate_features, percentile_rank, round_state
from rlmba_env.selection.portfolio import PROPOSERS


def gap(fused_alpha):
    """The fused prediction's top-two gap, as the round computes it."""
    return top2_margin(expected_probs(fused_alpha.float()))


def columns_for(m_count, n=40, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    alphas = torch.rand(m_count, n, k, generator=g) * 4 + 1
    weights = torch.softmax(torch.randn(m_count, generator=g), 0)
    positions = torch.arange(0, n, 3)
    flags = torch.zeros(positions.numel(), len(PROPOSERS))
    return candidate_features(positions, flags, alphas, alphas.mean(0), gap(alphas.mean(0)), weights, torch.rand(n, generator=g),
                              torch.rand(n, generator=g), torch.rand(n, generator=g)), alphas, weights


def test_candidate_columns_do_not_depend_on_the_number_of_modalities():
    for m_count in (1, 2, 3, 12):
        cols, _, _ = columns_for(m_count)
        assert cols.shape[1] == len(CANDIDATE_COLUMNS)
        assert torch.isfinite(cols).all() and cols.min() >= 0 and cols.max() <= 1


def test_candidate_columns_do_not_depend_on_the_order_of_modalities():
    g = torch.Generator().manual_seed(3)
    n, k = 30, 4
    alphas = torch.rand(3, n, k, generator=g) * 4 + 1
    weights = torch.tensor([0.5, 0.3, 0.2])
    args = (torch.rand(n, generator=g), torch.rand(n, generator=g), torch.rand(n, generator=g))
    positions, flags = torch.arange(10), torch.zeros(10, len(PROPOSERS))
    perm = torch.tensor([2, 0, 1])
    a = candidate_features(positions, flags, alphas, alphas.mean(0), gap(alphas.mean(0)), weights, *args)
    b = candidate_features(positions, flags, alphas[perm], alphas.mean(0), gap(alphas.mean(0)), weights[perm], *args)
    assert torch.allclose(a, b, atol=1e-6)


def test_state_entries_do_not_depend_on_the_number_of_modalities():
    for m_count in (1, 2, 12):
        fused = torch.rand(20, 4) + 1
        state = round_state(0.5, 1.2, 0.1, 0.8, torch.full((m_count,), 1 / m_count), torch.zeros(m_count),
                            torch.zeros(m_count), torch.tensor([0, 1, 1]), 4, 3, 100,
                            fused, gap(fused), -0.1, 2.0)
        assert state.shape == (len(STATE_ENTRIES),) and torch.isfinite(state).all()


def test_percentile_rank_spans_zero_to_one_in_order():
    assert percentile_rank(torch.tensor([3.0, 1.0, 2.0])).tolist() == [1.0, 0.0, 0.5]
