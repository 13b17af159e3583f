import math

import pytest
import torch

from rlmba_env.learner.evidential import (
    dirichlet_mean_variance,
    ds_combine,
    ds_conflict,
    edl_loss,
    evidence,
    expected_probs,
    fuse,
    fuse_dempster_shafer,
    fuse_geometric,
    fuse_weighted,
    kl_to_uniform_dirichlet,
    opinion,
)


def random_alphas(m=3, n=5, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 1.0 + 3.0 * torch.rand(m, n, k, generator=g, dtype=torch.float64)


def test_opinion_belief_and_uncertainty_sum_to_one():
    b, u = opinion(random_alphas())
    torch.testing.assert_close(b.sum(-1) + u, torch.ones_like(u))


def test_expected_probs_hand_value():
    torch.testing.assert_close(expected_probs(torch.tensor([3.0, 1.0])), torch.tensor([0.75, 0.25]))


def test_ds_combine_matches_hand_computation():
    # K = 2. a: alpha (3, 2) -> e (2, 1), S 5, b (2/5, 1/5), u 2/5.
    #        b: alpha (2, 1) -> e (1, 0), S 3, b (1/3, 0),   u 2/3.
    # C = b_a1 b_b2 + b_a2 b_b1 = 2/5 * 0 + 1/5 * 1/3 = 1/15, 1 - C = 14/15.
    # b_1 = (2/5 * 1/3 + 2/5 * 2/3 + 1/3 * 2/5) / (14/15) = (8/15) / (14/15) = 4/7
    # b_2 = (1/5 * 0   + 1/5 * 2/3 + 0   * 2/5) / (14/15) = (2/15) / (14/15) = 1/7
    # u   = (2/5 * 2/3) / (14/15) = 2/7          (4/7 + 1/7 + 2/7 = 1)
    # S = K / u = 7, e = b S = (4, 1), alpha = (5, 2).
    a = torch.tensor([[3.0, 2.0]], dtype=torch.float64)
    b = torch.tensor([[2.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(ds_combine(a, b), torch.tensor([[5.0, 2.0]], dtype=torch.float64))


def test_ds_conflict_matches_hand_computation():
    # same opinions as above: C = 1/15
    a = torch.tensor([[3.0, 2.0]], dtype=torch.float64)
    b = torch.tensor([[2.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(ds_conflict(a, b), torch.tensor([1 / 15], dtype=torch.float64))


def test_ds_combine_equals_tmc_ratio_form():
    # the closed form e_a + e_b + e_a e_b / K against TMC's formula written out literally
    alphas = random_alphas(m=2, n=7, k=5)
    (b_a, u_a), (b_b, u_b) = opinion(alphas[0]), opinion(alphas[1])
    c = ds_conflict(alphas[0], alphas[1])
    belief = (b_a * b_b + b_a * u_b[:, None] + b_b * u_a[:, None]) / (1 - c)[:, None]
    u = u_a * u_b / (1 - c)
    expected = belief * (5 / u)[:, None] + 1.0
    torch.testing.assert_close(ds_combine(alphas[0], alphas[1]), expected)


def test_vacuous_opinion_is_identity_for_ds():
    alpha = random_alphas(m=1)[0]
    torch.testing.assert_close(ds_combine(alpha, torch.ones_like(alpha)), alpha)
    torch.testing.assert_close(ds_combine(torch.ones_like(alpha), alpha), alpha)


def test_fuse_dempster_shafer_reduces_left_to_right():
    alphas = random_alphas(m=3)
    expected = ds_combine(ds_combine(alphas[0], alphas[1]), alphas[2])
    torch.testing.assert_close(fuse_dempster_shafer(alphas), expected)


def test_fuse_weighted_with_weights_one_zero_is_first_opinion():
    alphas = random_alphas(m=2)
    torch.testing.assert_close(fuse_weighted(alphas, torch.tensor([1.0, 0.0])), alphas[0])


def test_fuse_weighted_hand_value():
    # 1 + 0.25 * (4 - 1) + 0.75 * (2 - 1) = 2.5 ; 1 + 0.25 * 0 + 0.75 * 4 = 4
    alphas = torch.tensor([[[4.0, 1.0]], [[2.0, 5.0]]])
    torch.testing.assert_close(fuse_weighted(alphas, torch.tensor([0.25, 0.75])), torch.tensor([[2.5, 4.0]]))


def test_fuse_ds_with_equal_weights_is_plain_ds():
    alphas = random_alphas(m=3)
    torch.testing.assert_close(fuse(alphas, torch.full((3,), 1 / 3), "ds"), fuse_dempster_shafer(alphas))


def test_fuse_ds_with_zero_weight_ignores_that_modality():
    alphas = random_alphas(m=2)
    torch.testing.assert_close(fuse(alphas, torch.tensor([1.0, 0.0]), "ds"), alphas[0])


def test_fuse_geometric_hand_value():
    # r = (0.8, 0.2) / 0.8 = (1, 1/4): (2 * 3^(1/4), 4 * 1^(1/4)) = (2.632148, 4)
    alphas = torch.tensor([[[2.0, 4.0]], [[3.0, 1.0]]], dtype=torch.float64)
    expected = torch.tensor([[2.0 * 3.0**0.25, 4.0]], dtype=torch.float64)
    torch.testing.assert_close(fuse_geometric(alphas, torch.tensor([0.8, 0.2])), expected)


def test_fuse_geometric_with_equal_weights_multiplies_the_expected_probabilities():
    alphas = random_alphas(m=3)
    fused = fuse(alphas, torch.full((3,), 1 / 3), "geometric")
    torch.testing.assert_close(fused, alphas.prod(0))
    product = expected_probs(alphas).prod(0)
    torch.testing.assert_close(expected_probs(fused), product / product.sum(-1, keepdim=True))


def test_fuse_geometric_with_weights_one_zero_is_first_opinion():
    alphas = random_alphas(m=2)
    torch.testing.assert_close(fuse(alphas, torch.tensor([1.0, 0.0]), "geometric"), alphas[0])


def test_fuse_geometric_ignores_a_vacuous_opinion():
    alphas = random_alphas(m=2)
    with_vacuous = torch.cat([alphas, torch.ones_like(alphas[:1])])
    w = torch.tensor([0.5, 0.3, 0.2])
    torch.testing.assert_close(fuse(with_vacuous, w, "geometric"), fuse(alphas, w[:2], "geometric"))


def test_fuse_geometric_of_many_confident_opinions_stays_finite():
    alphas = torch.full((12, 2, 100), 1e6)
    assert torch.isfinite(fuse(alphas, torch.full((12,), 1 / 12), "geometric").sum(-1)).all()


def test_fuse_efda_is_fuse_weighted():
    alphas = random_alphas(m=2)
    w = torch.tensor([0.3, 0.7])
    torch.testing.assert_close(fuse(alphas, w, "efda"), fuse_weighted(alphas, w))


def test_fuse_unknown_method_raises_with_choices():
    with pytest.raises(ValueError, match="efda"):
        fuse(random_alphas(m=2), torch.tensor([0.5, 0.5]), "product")


def test_dirichlet_mean_variance_hand_value():
    # alpha (2, 1, 1), S = 4: Var = alpha_c (S - alpha_c) / (S^2 (S + 1)) = (4, 3, 3) / 80, mean 1/24
    value = dirichlet_mean_variance(torch.tensor([[2.0, 1.0, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(value, torch.tensor([1 / 24], dtype=torch.float64))


def test_kl_to_uniform_dirichlet_hand_value():
    # Dir(3, 1) = Beta(3, 1), density 3 x^2: KL = log 3 + 2 E[log x] = log 3 + 2 (psi(3) - psi(4)) = log 3 - 2/3
    value = kl_to_uniform_dirichlet(torch.tensor([3.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(value, torch.tensor(math.log(3) - 2 / 3, dtype=torch.float64))


def test_kl_to_uniform_dirichlet_is_zero_at_uniform():
    torch.testing.assert_close(kl_to_uniform_dirichlet(torch.ones(4, 6)), torch.zeros(4))


def test_edl_loss_matches_hand_computation():
    # Two samples, K = 2, alpha (3, 1) for both, kl_coef 0.5; psi(n + 1) - psi(n) = 1/n.
    # target 0: psi(4) - psi(3) = 1/3; alpha~ = (1, 1), KL 0            -> 1/3
    # target 1: psi(4) - psi(1) = 1 + 1/2 + 1/3 = 11/6; alpha~ = (3, 1),
    #           KL = log 3 - 2/3 (see above)                            -> 11/6 + 0.5 (log 3 - 2/3)
    alpha = torch.tensor([[3.0, 1.0], [3.0, 1.0]], dtype=torch.float64)
    expected = (1 / 3 + 11 / 6 + 0.5 * (math.log(3) - 2 / 3)) / 2
    value = edl_loss(alpha, torch.tensor([0, 1]), kl_coef=0.5)
    torch.testing.assert_close(value, torch.tensor(expected, dtype=torch.float64))


def test_edl_loss_is_differentiable():
    evidence = torch.rand(4, 3, requires_grad=True)
    edl_loss(evidence + 1.0, torch.tensor([0, 1, 2, 0]), kl_coef=1.0).backward()
    assert torch.isfinite(evidence.grad).all()


def test_edl_loss_per_row_terms_average_to_the_mean_loss():
    alpha = torch.tensor([[[2.0, 1.0, 3.0], [1.5, 4.0, 1.0]], [[1.0, 1.0, 9.0], [2.0, 2.0, 2.0]]])
    targets = torch.tensor([[0, 1], [2, 0]])
    rows = edl_loss(alpha, targets, kl_coef=0.5, reduction="none")
    assert rows.shape == (2, 2)
    for e in range(2):
        torch.testing.assert_close(rows[e].mean(), edl_loss(alpha[e], targets[e], kl_coef=0.5))


def test_evidence_functions_hand_values_and_clamp():
    z = torch.tensor([-20.0, -1.0, 0.0, 2.0, 20.0], dtype=torch.float64)
    torch.testing.assert_close(evidence(z, "softplus"), torch.log1p(torch.exp(z)))
    expected = torch.exp(torch.tensor([-10.0, -1.0, 0.0, 2.0, 10.0], dtype=torch.float64))
    torch.testing.assert_close(evidence(z, "exp"), expected)


def test_unknown_evidence_function_raises_with_choices():
    with pytest.raises(ValueError, match="softplus"):
        evidence(torch.zeros(3), "relu")
