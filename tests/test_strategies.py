import dataclasses

import numpy as np
import pytest
import torch

from rlmba_env import MultimodalALEnv
from rlmba_env.data.synthetic import make_synthetic
from rlmba_env.learner.evidential import fuse
from rlmba_env.learner.trainer import EvidentialLearner, LearnerConfig
from rlmba_env.strategies import (
    STRATEGIES,
    BMMALStrategy,
    PoolState,
    make_strategy,
    run_strategy_episode,
)
from rlmba_env.strategies.badge import bmmal_scale, gradient_embedding_factors
from rlmba_env.strategies.common import torch_generator
from rlmba_env.strategies.stochastic import softrank_positions
from rlmba_env.strategies.typiclust import typicality

NAMES = sorted(STRATEGIES)
PROTOCOL = {"initial_labels": 10, "per_round": 4, "rounds": 3}
LEARNER = {"epochs": 30, "hidden": 16}
# interface tests check mechanics, not quality: a short GCN fit keeps them fast
QUICK = {"gcnal": {"epochs": 20}}


def quick(name):
    return make_strategy(name, **QUICK.get(name, {}))


def small_env():
    dataset = make_synthetic(n_samples=400, n_classes=4, dims=(8, 6), val_per_class=10, seed=3)
    return MultimodalALEnv(dataset, PROTOCOL, learner=dict(LEARNER))


@pytest.fixture(scope="module")
def state():
    env = small_env()
    env.reset(seed=0)
    return env.pool_state()


# -- hand-built pool states ---------------------------------------------------------------------
def identity_learner(dim, n_classes, dropout=0.0, encoder=None, head=None):
    """Two modalities whose encoders are ``relu(encoder @ x)`` (identity by default)."""
    learner = EvidentialLearner({"a": dim, "b": dim}, n_classes,
                                LearnerConfig(hidden=dim, dropout=dropout))
    with torch.no_grad():
        for i in range(2):
            lin = learner.net.encoders[i][0]
            lin.weight.copy_(torch.eye(dim) if encoder is None else torch.as_tensor(encoder))
            lin.bias.zero_()
            if head is not None:
                learner.net.heads[i].weight.copy_(torch.as_tensor(head))
                learner.net.heads[i].bias.zero_()
    learner.net.eval()
    return learner


def hand_state(learner, x, labeled, unlabeled, alphas=None, score=None, contributions=(0.3, 0.3)):
    """A PoolState over features ``x`` (both modalities), by default with the learner's opinions."""
    features = {"a": torch.as_tensor(x, dtype=torch.float32), "b": torch.as_tensor(x, dtype=torch.float32)}
    unlabeled = torch.as_tensor(unlabeled)
    labeled = torch.as_tensor(labeled, dtype=torch.long)
    if alphas is None:
        alphas = learner.predict(features, unlabeled)
    alphas = torch.as_tensor(alphas, dtype=torch.float32)
    weights = torch.tensor([0.5, 0.5])
    n = unlabeled.shape[0]
    return PoolState(
        unlabeled=unlabeled,
        labeled=labeled,
        labeled_labels=torch.zeros(labeled.shape[0], dtype=torch.long),
        features=features,
        learner=learner,
        alphas=alphas,
        fused_alpha=fuse(alphas, weights, "efda"),
        weights=weights,
        contributions=torch.tensor(contributions),
        score=torch.zeros(n) if score is None else torch.as_tensor(score, dtype=torch.float32),
        fusion="efda",
    )


def clusters(rng, centres, sizes, spread=0.05):
    """Rows scattered around ``centres`` (positive coordinates survive the ReLU), and their cluster ids."""
    x = np.concatenate([c + spread * np.abs(rng.standard_normal((s, len(c)))) for c, s in zip(centres, sizes)])
    return x.astype(np.float32), np.repeat(np.arange(len(sizes)), sizes)


def unvisited_cluster_state(centres, sizes, labeled_per_cluster, spread=0.05):
    """A pool of three clusters whose first two hold the labeled rows; returns the state and the
    rows of the third (unvisited) cluster."""
    x, group = clusters(np.random.default_rng(0), centres, sizes, spread=spread)
    labeled = np.concatenate([np.flatnonzero(group == g)[:labeled_per_cluster] for g in (0, 1)])
    unlabeled = np.setdiff1d(np.arange(len(x)), labeled)
    state = hand_state(identity_learner(len(centres[0]), 3), x, labeled, unlabeled)
    return state, np.flatnonzero(group == 2)


def random_hits(state, target_rows, budget, seeds=range(20)):
    """Mean number of ``target_rows`` among uniform random picks."""
    random = make_strategy("random")
    return np.mean([np.isin(random.select(state, budget, np.random.default_rng(s)), target_rows).sum()
                    for s in seeds])


# -- the interface ------------------------------------------------------------------------------
@pytest.mark.parametrize("budget", [1, 3, 7])
@pytest.mark.parametrize("name", NAMES)
def test_selects_budget_distinct_unlabeled_rows(state, name, budget):
    rows = quick(name).select(state, budget, np.random.default_rng(0))
    assert isinstance(rows, np.ndarray) and rows.dtype == np.int64
    assert rows.shape == (budget,)
    assert np.unique(rows).size == budget
    assert np.isin(rows, state.unlabeled.numpy()).all()


@pytest.mark.parametrize("name", NAMES)
def test_same_rng_seed_same_selection(state, name):
    first = quick(name).select(state, 5, np.random.default_rng(11))
    second = quick(name).select(state, 5, np.random.default_rng(11))
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("name", NAMES)
def test_budget_larger_than_pool_raises(state, name):
    n = state.unlabeled.shape[0]
    with pytest.raises(ValueError, match=rf"budget {n + 1} .* {n} unlabeled"):
        quick(name).select(state, n + 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="at least 1"):
        quick(name).select(state, 0, np.random.default_rng(0))


def test_unknown_strategy_name_raises_listing_choices():
    with pytest.raises(ValueError, match="choose one of .*'bmmal'.*'rlmba-score'"):
        make_strategy("oracle")


def test_registry_has_the_documented_names():
    assert set(STRATEGIES) == {"random", "entropy", "margin", "least-confidence", "bald", "coreset",
                               "badge", "bmmal", "deepfool", "gcnal", "rlmba-score", "softrank-margin",
                               "softrank-score", "typiclust", "typiclust-margin"}


@pytest.mark.parametrize("name", ["bald", "gcnal", "badge", "random"])
def test_selection_leaves_global_torch_rng_untouched(state, name):
    before = torch.random.get_rng_state()
    quick(name).select(state, 3, np.random.default_rng(0))
    assert torch.equal(before, torch.random.get_rng_state())


def test_bald_leaves_the_network_in_its_mode(state):
    net = state.learner.net
    net.eval()
    make_strategy("bald").select(state, 3, np.random.default_rng(0))
    assert not net.training


# -- each criterion on a case built for it ------------------------------------------------------
@pytest.mark.parametrize("name", ["entropy", "margin", "least-confidence"])
def test_uncertainty_strategies_pick_the_flat_rows(name):
    rng = np.random.default_rng(0)
    n, k = 200, 4
    flat = rng.choice(n, 10, replace=False)
    alphas = np.ones((2, n, k), dtype=np.float32)
    alphas[:, np.arange(n), rng.integers(k, size=n)] = 30.0  # confident everywhere ...
    alphas[:, flat] = 2.0 + 0.3 * rng.random((2, 10, k))  # ... except ten nearly flat rows
    learner = identity_learner(4, k)
    state = hand_state(learner, rng.random((n, 4)), [], np.arange(n), alphas=alphas)
    picks = make_strategy(name).select(state, 10, np.random.default_rng(0))
    assert set(picks) == set(flat)
    assert random_hits(state, flat, 10) < 2


def test_bald_picks_rows_where_dropout_passes_disagree():
    # class k's evidence comes from hidden unit k; dropping one unit of a (2, 2) row flips the
    # prediction (epistemic), while a (0, 0) row is flat under every mask (aleatoric only)
    rng = np.random.default_rng(0)
    learner = identity_learner(2, 2, dropout=0.5, head=3.0 * np.eye(2))
    x, group = clusters(rng, [np.array([2.0, 2.0]), np.array([0.0, 0.0]), np.array([2.0, 0.0])],
                        [20, 20, 40], spread=0.02)
    state = hand_state(learner, x, [], np.arange(len(x)))
    disagree = np.flatnonzero(group == 0)
    picks = make_strategy("bald", mc_samples=20).select(state, 5, np.random.default_rng(0))
    assert np.isin(picks, disagree).all()
    assert random_hits(state, disagree, 5) < 2.5


def test_coreset_covers_the_unvisited_cluster():
    state, far = unvisited_cluster_state(
        [np.array([1.0, 1.0]), np.array([1.0, 6.0]), np.array([8.0, 8.0])], [45, 45, 5], labeled_per_cluster=5)
    picks = make_strategy("coreset").select(state, 2, np.random.default_rng(0))
    assert np.isin(picks, far).sum() >= 1
    assert random_hits(state, far, 2) < 0.5


def test_rlmba_score_takes_the_top_q_rows():
    rng = np.random.default_rng(0)
    score = rng.random(50)
    state = hand_state(identity_learner(2, 3), rng.random((60, 2)), [], np.arange(10, 60), score=score)
    picks = make_strategy("rlmba-score").select(state, 6, np.random.default_rng(0))
    assert set(picks) == set(10 + np.argsort(-score)[:6])


def test_softrank_draws_rows_with_probability_proportional_to_inverse_rank():
    scores = torch.linspace(1.0, 0.0, 8)  # rank r+1 at position r
    rng = np.random.default_rng(0)
    counts = np.bincount([int(softrank_positions(scores, 1, 1.0, rng)[0]) for _ in range(20000)], minlength=8)
    expected = (1.0 / np.arange(1, 9)) / (1.0 / np.arange(1, 9)).sum()
    np.testing.assert_allclose(counts / 20000, expected, atol=0.01)


def test_softrank_interpolates_between_uniform_and_top_b():
    scores = torch.from_numpy(np.random.default_rng(1).random(40))
    top = set(torch.argsort(scores, descending=True)[:5].tolist())
    assert set(softrank_positions(scores, 5, 1e3, np.random.default_rng(0)).tolist()) == top
    rng = np.random.default_rng(0)
    hits = np.mean([len(top & set(softrank_positions(scores, 5, 0.0, rng).tolist())) for _ in range(2000)])
    assert abs(hits - 5 * 5 / 40) < 0.1  # beta = 0: uniform without replacement


@pytest.mark.parametrize("name, top", [("softrank-margin", "margin"), ("softrank-score", "rlmba-score")])
def test_softrank_strategy_samples_its_rankings_top_rows_most_often(state, name, top):
    best = make_strategy(top).select(state, 1, np.random.default_rng(0))[0]
    picks = [make_strategy(name).select(state, 1, np.random.default_rng(s))[0] for s in range(300)]
    assert np.mean(np.array(picks) == best) > 0.1  # p(rank 1) = 1 / H(n) ~ .17 for n ~ 350
    assert make_strategy(name, beta=1e3).select(state, 4, np.random.default_rng(0)).tolist() == \
        make_strategy(top).select(state, 4, np.random.default_rng(0)).tolist()


@pytest.mark.parametrize("beta", [-1.0, float("nan"), "1"])
def test_softrank_rejects_a_bad_beta(beta):
    with pytest.raises(ValueError, match=r"beta=.* is not allowed; beta must be a finite real number >= 0"):
        make_strategy("softrank-margin", beta=beta)


def test_typicality_is_the_inverse_mean_distance_to_the_nearest_neighbours():
    x = torch.from_numpy(np.random.default_rng(0).random((30, 3)).astype(np.float32))
    d = torch.cdist(x, x) + torch.diag(torch.full((30,), float("inf")))
    expected = 1.0 / d.topk(5, dim=1, largest=False).values.mean(1)
    torch.testing.assert_close(typicality(x, neighbours=5, chunk_elements=7 * 30), expected)
    assert typicality(x[:1]).tolist() == [0.0]


def test_typiclust_takes_the_densest_row_of_each_uncovered_cluster():
    # three far-apart blobs, each a tight core plus a few outliers; nothing labeled yet
    rng = np.random.default_rng(0)
    centres = [np.array([1.0, 1.0]), np.array([1.0, 9.0]), np.array([9.0, 5.0])]
    x = np.concatenate([np.concatenate([c + 0.05 * rng.standard_normal((25, 2)), c + 0.8 * rng.standard_normal((5, 2))])
                        for c in centres]).astype(np.float32)
    group = np.repeat(np.arange(3), 30)
    state = hand_state(identity_learner(2, 3), x, [], np.arange(90))
    picks = make_strategy("typiclust").select(state, 3, np.random.default_rng(0))
    assert sorted(group[picks]) == [0, 1, 2]
    typical = typicality(torch.from_numpy(x[:30])).numpy()
    first = picks[group[picks] == 0][0]
    assert typical[first] >= np.sort(typical)[-3]  # among the blob's most typical rows
    assert first % 30 < 25  # a core row, not an outlier


def test_typiclust_margin_switches_at_the_labels_per_class_threshold(state):
    classes = int(state.fused_alpha.shape[1])
    per_class = state.labeled.shape[0] / classes
    for switch, plays in ((per_class + 1, "typiclust"), (per_class, "margin"), (0.0, "margin")):
        picks = make_strategy("typiclust-margin", switch_per_class=switch).select(state, 4, np.random.default_rng(3))
        np.testing.assert_array_equal(picks, make_strategy(plays).select(state, 4, np.random.default_rng(3)))


@pytest.mark.parametrize("name, kwargs, message", [
    ("typiclust-margin", {"switch_per_class": -1.0}, "switch_per_class=-1.0 is not allowed"),
    ("typiclust-margin", {"switch_per_class": "4"}, "switch_per_class='4' is not allowed"),
    ("typiclust", {"max_clusters": 0}, "max_clusters=0 is not allowed"),
])
def test_typiclust_rejects_bad_settings(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_strategy(name, **kwargs)


def badge_case():
    """Three orthogonal clusters of 20 rows; in each, four uncertain rows and 16 confident ones."""
    rng = np.random.default_rng(0)
    x, group = clusters(rng, list(3.0 * np.eye(3)), [20, 20, 20])
    alphas = np.ones((2, 60, 3), dtype=np.float32)
    alphas[:, np.arange(60), group] = 60.0
    uncertain = np.concatenate([np.flatnonzero(group == g)[:4] for g in range(3)])
    alphas[:, uncertain] = 1.5
    alphas[:, uncertain, group[uncertain]] = 1.8  # keeps the cluster's class as the prediction
    state = hand_state(identity_learner(3, 3), x, [], np.arange(60), alphas=alphas)
    return state, group, uncertain


@pytest.mark.parametrize("name", ["badge", "bmmal"])
def test_badge_prefers_uncertain_rows_and_spreads_over_clusters(name):
    state, group, uncertain = badge_case()
    strategy = make_strategy(name)
    hits, spread = [], []
    for seed in range(20):
        picks = strategy.select(state, 3, np.random.default_rng(seed))
        hits.append(np.isin(picks, uncertain).sum())
        spread.append(np.unique(group[picks]).size)
    random = make_strategy("random")
    random_spread = np.mean([np.unique(group[random.select(state, 3, np.random.default_rng(s))]).size
                             for s in range(20)])
    assert np.mean(hits) > 2 * random_hits(state, uncertain, 3)
    assert np.mean(spread) > random_spread


def explicit_gradient_embeddings(state, scale):
    """Per-row last-layer gradients of -log p_m[yhat] with logits log(alpha_m), by autograd."""
    net = state.learner.net
    net.eval()
    with torch.no_grad():
        h = net.embed({m: x[state.unlabeled] for m, x in state.features.items()})
    yhat = state.fused_alpha.argmax(-1)
    blocks = []
    for i, m in enumerate(state.modalities):
        n, k = state.alphas.shape[1:]
        w = torch.zeros(n, k, h[m].shape[1], requires_grad=True)  # one copy of the layer per row
        logits = state.alphas[i].log() + torch.einsum("nkd,nd->nk", w, h[m])
        loss = torch.nn.functional.cross_entropy(logits, yhat, reduction="sum")
        (grad,) = torch.autograd.grad(loss, w)
        blocks.append(scale[i] * grad.reshape(n, -1))
    return torch.cat(blocks, dim=1)


def explicit_kmeans_plus_plus(g, budget, generator):
    d2_to = lambda c: ((g - g[c]) ** 2).sum(1)  # noqa: E731
    first = (g * g).sum(1).argmax()
    chosen, available = [first.view(1)], torch.ones(g.shape[0])
    available[first] = 0
    d2 = d2_to(first)
    for _ in range(budget - 1):
        nxt = torch.multinomial((d2 + 1e-12) * available, 1, generator=generator)
        chosen.append(nxt)
        available[nxt] = 0
        d2 = torch.minimum(d2, d2_to(nxt[0]))
    return torch.cat(chosen)


def test_badge_embeddings_match_explicit_autograd_gradients(state):
    g = explicit_gradient_embeddings(state, [1.0, 1.0])
    v, h = gradient_embedding_factors(state)
    outer = torch.cat([torch.einsum("nk,nd->nkd", v[i], h[i]).reshape(v.shape[1], -1)
                       for i in range(v.shape[0])], dim=1)
    torch.testing.assert_close(outer, g, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("contributions", [(0.3, 0.3), (0.45, 0.15), (0.05, 0.4)])
@pytest.mark.parametrize("name", ["badge", "bmmal"])
def test_badge_and_bmmal_selections_match_explicit_kmeans_plus_plus(state, name, contributions):
    state = dataclasses.replace(state, contributions=torch.tensor(contributions))
    scale = [1.0, 1.0] if name == "badge" else bmmal_scale(state.contributions).tolist()
    g = explicit_gradient_embeddings(state, scale)
    expected = explicit_kmeans_plus_plus(g, 7, torch_generator(np.random.default_rng(5), "cpu"))
    picks = make_strategy(name).select(state, 7, np.random.default_rng(5))
    np.testing.assert_array_equal(picks, state.unlabeled[expected].numpy())


def test_bmmal_keeps_the_stronger_block_and_damps_the_weaker():
    torch.testing.assert_close(bmmal_scale(torch.tensor([0.5, 0.2])), torch.tensor([1.0, 0.7]))
    torch.testing.assert_close(bmmal_scale(torch.tensor([0.1, 0.4])), torch.tensor([0.7, 1.0]))
    torch.testing.assert_close(bmmal_scale(torch.tensor([0.5, 0.2]), "dominant"), torch.tensor([0.7, 1.0]))
    with pytest.raises(ValueError, match="damp"):
        BMMALStrategy(damp="both")


def test_bmmal_with_equal_contributions_is_badge(state):
    state = dataclasses.replace(state, contributions=torch.tensor([0.2, 0.2]))
    np.testing.assert_array_equal(make_strategy("bmmal").select(state, 7, np.random.default_rng(3)),
                                  make_strategy("badge").select(state, 7, np.random.default_rng(3)))


def test_deepfool_picks_rows_nearest_the_decision_boundary():
    # hidden = (relu(x0), relu(-x0)), class 0 evidence from the first unit: the boundary is x0 = 0
    rng = np.random.default_rng(0)
    encoder = np.array([[1.0, 0.0], [-1.0, 0.0]])
    head = 2.0 * np.array([[1.0, -1.0], [-1.0, 1.0]])
    learner = identity_learner(2, 2, encoder=encoder, head=head)
    x0 = rng.permutation(np.linspace(-3.0, 3.0, 40))
    x = np.stack([x0, rng.standard_normal(40)], axis=1)
    state = hand_state(learner, x, [], np.arange(40))
    picks = make_strategy("deepfool").select(state, 4, np.random.default_rng(0))
    assert set(picks) == set(np.argsort(np.abs(x0))[:4])
    assert random_hits(state, np.argsort(np.abs(x0))[:4], 4) < 1


def test_gcnal_picks_rows_unlike_the_labeled_set():
    centres = [np.array([3.0, 0.0, 0.0, 0.0]), np.array([0.0, 3.0, 0.0, 0.0]), np.array([0.0, 0.0, 3.0, 0.0])]
    state, unlike = unvisited_cluster_state(centres, [40, 40, 8], labeled_per_cluster=10, spread=0.3)
    picks = make_strategy("gcnal").select(state, 4, np.random.default_rng(0))
    assert np.isin(picks, unlike).sum() >= 3
    assert random_hits(state, unlike, 4) < 1


# -- episodes -----------------------------------------------------------------------------------
def test_episode_ends_with_initial_plus_rounds_times_per_round_labels():
    curve = run_strategy_episode(small_env(), make_strategy("entropy"), seed=0, rng_seed=0)
    assert [r["round"] for r in curve] == [0, 1, 2, 3]
    assert [r["labeled"] for r in curve] == [10, 14, 18, 22]
    assert curve[0]["select_s"] == 0.0 and all(r["select_s"] > 0 for r in curve[1:])
    for key in ("test_top1", "val_top1", "balance", "test_top1_m0", "test_top1_m1",
                "contribution_m0", "contribution_m1"):
        assert all(np.isfinite(r[key]) for r in curve)


def test_same_seed_same_curve():
    env = small_env()
    first = run_strategy_episode(env, make_strategy("random"), seed=4, rng_seed=1)
    second = run_strategy_episode(env, make_strategy("random"), seed=4, rng_seed=1)
    drop_time = lambda curve: [{k: v for k, v in r.items() if k != "select_s"} for r in curve]  # noqa: E731
    assert drop_time(first) == drop_time(second)


def test_gcn_sparse_graph_product_and_gradient_match_dense():
    from rlmba_env.strategies.gcnal import SparseGraph, knn_graph

    x = torch.randn(30, 5)
    ids, weights = knn_graph(x, 4)
    dense = torch.zeros(30, 30).scatter_(1, ids, weights)
    y = torch.randn(30, 3, requires_grad=True)
    (grad,) = torch.autograd.grad(((SparseGraph(ids, weights) @ y) ** 2).sum(), y)
    (expected,) = torch.autograd.grad(((dense @ y) ** 2).sum(), y)
    torch.testing.assert_close(SparseGraph(ids, weights) @ y, dense @ y)
    torch.testing.assert_close(grad, expected)
    torch.testing.assert_close(dense.sum(1), torch.ones(30))
