import math

import pytest
import torch

from rlmba_env.learner import EvidentialLearner, LearnerConfig, fuse
from rlmba_env.selection.metrics import balance_score, ece, nll, shapley_contributions, top1

N_CLASSES = 4


def random_alphas(m=3, n=50, k=N_CLASSES, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 1.0 + 5.0 * torch.rand(m, n, k, generator=g), torch.randint(0, k, (n,), generator=g)


@pytest.fixture(scope="module")
def informative_and_noise():
    """Contributions and fused top-1 of a learner where modality A is informative and B is noise."""
    g = torch.Generator().manual_seed(0)
    n = 500
    labels = torch.arange(n) % N_CLASSES
    centers = 3.0 * torch.randn(N_CLASSES, 8, generator=g)
    features = {
        "a": centers[labels] + torch.randn(n, 8, generator=g),
        "b": torch.randn(n, 8, generator=g),  # independent of the label
    }
    learner = EvidentialLearner({"a": 8, "b": 8}, N_CLASSES, LearnerConfig(epochs=60, hidden=32))
    weights = torch.tensor([0.5, 0.5])
    learner.fit(features, labels, torch.arange(100), weights, seed=0)
    held_out = torch.arange(100, n)
    alphas = learner.predict(features, held_out)
    return shapley_contributions(alphas, labels[held_out], weights, "efda")


def test_shapley_of_pure_noise_modality_is_near_zero(informative_and_noise):
    assert abs(float(informative_and_noise[1])) < 0.05
    assert float(informative_and_noise[0]) > 0.5


def test_balance_is_near_zero_when_one_modality_carries_everything(informative_and_noise):
    assert balance_score(informative_and_noise) < 0.2


@pytest.mark.parametrize("fusion", ["efda", "ds", "geometric"])
def test_shapley_sums_to_full_value_minus_chance(fusion):
    alphas, labels = random_alphas(m=3)
    weights = torch.tensor([0.2, 0.3, 0.5])
    contributions = shapley_contributions(alphas, labels, weights, fusion)
    full = top1(fuse(alphas, weights, fusion), labels)
    assert contributions.shape == (3,)
    assert float(contributions.sum()) == pytest.approx(full - 1 / N_CLASSES, abs=1e-6)


def test_shapley_two_modalities_hand_value():
    # K = 2, two samples with label 0. A alone: alpha (3, 1), (1, 2) -> right, wrong: v(A) = 1/2.
    # B alone: alpha (1, 1.5), (3, 1) -> wrong, right: v(B) = 1/2. Equal-weight EFDA fusion:
    # (2, 1.25), (2, 1.5) -> both right: v(AB) = 1. v(empty) = 1/2.
    # phi_A = 1/2 (v(A) - v(0)) + 1/2 (v(AB) - v(B)) = 1/2 * 0 + 1/2 * 1/2 = 1/4 = phi_B.
    alphas = torch.tensor([[[3.0, 1.0], [1.0, 2.0]], [[1.0, 1.5], [3.0, 1.0]]])
    contributions = shapley_contributions(alphas, torch.tensor([0, 0]), torch.tensor([0.5, 0.5]), "efda")
    torch.testing.assert_close(contributions, torch.tensor([0.25, 0.25]))


def test_balance_score_of_equal_contributions_is_one():
    assert balance_score(torch.tensor([0.2, 0.2, 0.2])) == pytest.approx(1.0)


def test_balance_score_clips_negative_contributions():
    assert balance_score(torch.tensor([0.4, -0.1])) == pytest.approx(0.0)


def test_balance_score_without_positive_contribution_is_zero():
    assert balance_score(torch.tensor([-0.1, 0.0])) == 0.0


def test_top1_hand_value():
    alpha = torch.tensor([[3.0, 1.0], [1.0, 2.0], [2.0, 1.0]])
    assert top1(alpha, torch.tensor([0, 0, 0])) == pytest.approx(2 / 3)


def test_ece_of_perfectly_calibrated_case_is_zero():
    # every prediction says class 0 with probability 3/4, and 3 of 4 are class 0
    alpha = torch.tensor([[3.0, 1.0]]).repeat(4, 1)
    assert ece(alpha, torch.tensor([0, 0, 0, 1])) == pytest.approx(0.0, abs=1e-7)


def test_ece_of_overconfident_case_hand_value():
    # confidence 3/4 but only half right: |1/2 - 3/4| = 1/4
    alpha = torch.tensor([[3.0, 1.0]]).repeat(4, 1)
    assert ece(alpha, torch.tensor([0, 0, 1, 1])) == pytest.approx(0.25)


def test_nll_hand_value():
    # expected probs (3/4, 1/4): -(log 3/4 + log 1/4) / 2
    alpha = torch.tensor([[3.0, 1.0], [3.0, 1.0]])
    assert nll(alpha, torch.tensor([0, 1])) == pytest.approx(-(math.log(0.75) + math.log(0.25)) / 2)
