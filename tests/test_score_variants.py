import pytest
import torch

from rlmba_env.selection.efda import selection_score
from rlmba_env.selection.score import modality_uncertainty, parse_score, variant_score


def test_paper_variant_is_the_papers_score():
    g = torch.Generator().manual_seed(0)
    alphas = torch.rand(2, 50, 4, generator=g) * 3 + 1
    w, d = torch.tensor([0.7, 0.3]), torch.rand(50, generator=g)
    expected = selection_score(alphas.shape[-1] / alphas.sum(-1), w, d, 1.0)
    assert torch.allclose(variant_score("paper", alphas, w, 1.0, d), expected)


def test_margin_uncertainty_is_largest_for_a_tie():
    alphas = torch.tensor([[[5.0, 5.0, 1.0], [9.0, 1.0, 1.0]]])
    u = modality_uncertainty(alphas, "margin")[0]
    assert u[0] == pytest.approx(1.0) and u[1] < u[0]


def test_density_ranks_rows_near_a_centre_first_and_outlier_last():
    alphas = torch.ones(1, 3, 2)  # no uncertainty differences
    d = torch.tensor([0.1, 1.0, 5.0])
    dense = variant_score("margin-density", alphas, torch.ones(1), 1.0, d)
    outlier = variant_score("margin-outlier", alphas, torch.ones(1), 1.0, d)
    assert dense.argmax() == 0 and outlier.argmax() == 2


def test_labeled_variant_needs_the_distance_to_the_labeled_rows():
    with pytest.raises(ValueError, match="labeled"):
        variant_score("margin-labeled", torch.ones(1, 3, 2), torch.ones(1), 1.0, torch.rand(3))


def test_unknown_variant_names_the_allowed_ones():
    with pytest.raises(ValueError, match="vacuity-outlier"):
        parse_score("entropy-outlier")
