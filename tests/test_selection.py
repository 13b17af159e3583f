import numpy as np
import pytest
import torch

from rlmba_env.data.avdigits import load_avdigits
from rlmba_env.learner.evidential import fuse
from rlmba_env.learner.trainer import EvidentialLearner
from rlmba_env.selection.amcb import amcb_weights, stacked_weights
from rlmba_env.chunked import top_positions
from rlmba_env.selection.diversity import kmeans, kmeans_plus_plus
from rlmba_env.selection.efda import fused_uncertainty, minmax, selection_score
from rlmba_env.selection.metrics import top1


def test_amcb_equal_modalities_get_equal_weights():
    w = amcb_weights(torch.tensor([0.7, 0.7]), fused_top1=0.8)
    torch.testing.assert_close(w, torch.tensor([0.5, 0.5]))


def test_amcb_moves_weight_to_the_stronger_modality_and_keeps_the_floor():
    w = amcb_weights(torch.tensor([0.3, 0.9]), fused_top1=0.6, tau=0.1, epsilon=0.05)
    assert w[1] > 0.9 and w[0] > 0
    assert float(w.sum()) == pytest.approx(1.0)
    raw = torch.softmax(torch.tensor([-0.3, 0.3]) / 0.1, dim=0)
    assert float(w[0]) == pytest.approx(0.05 / (0.05 + float(raw[1])), rel=1e-4)


def test_amcb_rejects_non_positive_temperature():
    with pytest.raises(ValueError, match="tau"):
        amcb_weights(torch.tensor([0.5, 0.5]), 0.5, tau=0.0)


def test_fusion_with_amcb_weights_is_not_worse_than_the_best_modality():
    """docs/design.md: with a near-useless image modality (noise 1.0), equal-weight fusion can fall
    below audio alone; the AMCB-weighted fused opinion must not."""
    ds = load_avdigits(image_noise=1.0)
    x = {m: torch.as_tensor(v) for m, v in ds.features.items()}
    y = torch.as_tensor(ds.labels)
    rng = np.random.default_rng(0)
    labeled = torch.as_tensor(rng.choice(ds.splits["pool"], 60, replace=False))
    learner = EvidentialLearner(ds.feature_dims, ds.n_classes)
    learner.reset(0)
    learner.fit(x, y, labeled, torch.tensor([0.5, 0.5]), seed=0)
    val, test = (torch.as_tensor(ds.splits[s]) for s in ("val", "test"))
    val_alphas, test_alphas = learner.predict(x, val), learner.predict(x, test)
    unimodal_val = torch.tensor([top1(a, y[val]) for a in val_alphas])
    equal = torch.tensor([0.5, 0.5])
    w = amcb_weights(unimodal_val, top1(fuse(val_alphas, equal, "efda"), y[val]))
    best_single = max(top1(a, y[test]) for a in test_alphas)
    assert top1(fuse(test_alphas, w, "efda"), y[test]) >= best_single - 0.01
    assert top1(fuse(test_alphas, w, "ds"), y[test]) >= best_single - 0.01


def _opinions(labels: torch.Tensor, n_classes: int, accuracy: float, evidence: float, seed: int) -> torch.Tensor:
    """Dirichlet alphas ``(n, K)`` that put ``evidence`` on the true class for a share ``accuracy``
    of the rows and on a random wrong class otherwise."""
    g = torch.Generator().manual_seed(seed)
    right = torch.rand(labels.shape, generator=g) < accuracy
    wrong = (labels + torch.randint(1, n_classes, labels.shape, generator=g)) % n_classes
    alphas = torch.ones(labels.shape[0], n_classes)
    alphas[torch.arange(labels.shape[0]), torch.where(right, labels, wrong)] += evidence
    return alphas


def test_stacked_weights_drop_an_overconfident_view_that_is_at_chance():
    y = torch.arange(400) % 4
    alphas = torch.stack([_opinions(y, 4, 0.8, 5.0, seed=0), _opinions(y, 4, 0.25, 50.0, seed=1)])
    w = stacked_weights(alphas, y, torch.tensor([0.5, 0.5]))
    assert w[1] < 0.05 * w[0]
    assert top1(fuse(alphas, w, "geometric"), y) == top1(alphas[0], y)


def test_stacked_weights_keep_two_equally_good_views_with_equal_weight():
    y = torch.arange(400) % 4
    alphas = torch.stack([_opinions(y, 4, 0.7, 5.0, seed=2), _opinions(y, 4, 0.7, 5.0, seed=3)])
    w = stacked_weights(alphas, y, torch.tensor([0.5, 0.5]))
    assert abs(float(w[0] - w[1])) < 0.1
    assert top1(fuse(alphas, w, "geometric"), y) >= max(top1(a, y) for a in alphas)


def test_stacked_weights_without_validation_rows_are_the_amcb_weights_on_the_grid():
    weights = torch.tensor([0.333, 0.667], dtype=torch.float32)
    w = stacked_weights(torch.ones(2, 0, 4), torch.zeros(0, dtype=torch.long), weights)
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, torch.tensor([0.33, 0.67]))


def test_kmeans_plus_plus_returns_distinct_rows():
    x = torch.randn(50, 3)
    gen = torch.Generator().manual_seed(0)
    idx = kmeans_plus_plus(x, 10, gen)
    assert idx.unique().numel() == 10


def test_kmeans_plus_plus_works_when_rows_coincide():
    x = torch.zeros(8, 2)
    idx = kmeans_plus_plus(x, 8, torch.Generator().manual_seed(0))
    assert sorted(idx.tolist()) == list(range(8))


def test_kmeans_recovers_separated_blobs():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(30, 2, generator=torch.Generator().manual_seed(i))
                   for i, c in enumerate(centres)])
    found, distance, assign = kmeans(x, 3, torch.Generator().manual_seed(1))
    assert distance.max() < 1.0
    for block in assign.view(3, 30):
        assert block.unique().numel() == 1
    assert assign.view(3, 30)[:, 0].unique().numel() == 3


def test_top_positions_are_the_highest_scores_in_order_and_stable_on_ties():
    q = torch.tensor([0.1, 0.9, 0.5, 0.9, 0.3])
    assert top_positions(q, 3).tolist() == [1, 3, 2]
    assert top_positions(q, 10).tolist() == [1, 3, 2, 4, 0]


def test_minmax_maps_to_unit_interval_and_constant_to_zero():
    torch.testing.assert_close(minmax(torch.tensor([2.0, 4.0, 3.0])), torch.tensor([0.0, 1.0, 0.5]))
    torch.testing.assert_close(minmax(torch.tensor([3.0, 3.0])), torch.tensor([0.0, 0.0]))


def test_selection_score_weights_modalities_and_adds_diversity():
    u = torch.tensor([[0.0, 1.0, 0.5], [1.0, 0.0, 0.5]])
    d = torch.tensor([0.0, 0.0, 2.0])
    q = selection_score(u, torch.tensor([0.8, 0.2]), d, beta=1.0)
    torch.testing.assert_close(q, torch.tensor([0.2, 0.8, 1.5]))


def test_fused_uncertainty_is_one_for_vacuous_and_small_for_confident_opinions():
    alpha = torch.tensor([[1.0, 1.0, 1.0], [100.0, 1.0, 1.0]])
    U = fused_uncertainty(alpha)
    assert float(U[0]) == pytest.approx(1.0)
    assert float(U[1]) < 0.05
