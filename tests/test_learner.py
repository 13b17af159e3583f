import pytest
import torch

from rlmba_env.learner import EvidentialLearner, LearnerConfig, fuse

DIMS = {"image": 6, "audio": 9}
N_CLASSES = 3


def toy_problem(n=150, seed=0):
    """Three well-separated classes visible in both modalities."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % N_CLASSES
    features = {}
    for m, d in DIMS.items():
        centers = 3.0 * torch.randn(N_CLASSES, d, generator=g)
        features[m] = centers[labels] + torch.randn(n, d, generator=g)
    return features, labels


@pytest.fixture
def problem():
    return toy_problem()


# the tests that check mechanics rather than accuracy use a short, narrow fit
FAST = {"epochs": 20, "warm_epochs": 10, "hidden": 16}


def make_learner(**config):
    return EvidentialLearner(DIMS, N_CLASSES, LearnerConfig(**config))


def make_fast_learner(**config):
    return make_learner(**{**FAST, **config})


WEIGHTS = torch.tensor([0.5, 0.5])
LABELED = torch.arange(60)


def params(learner):
    return {k: v.clone() for k, v in learner.net.state_dict().items()}


def test_fit_learns_separable_toy_problem(problem):
    features, labels = problem
    learner = make_learner()
    learner.fit(features, labels, LABELED, WEIGHTS, seed=0)
    fused = fuse(learner.predict(features, LABELED), WEIGHTS, "efda")
    assert (fused.argmax(-1) == labels[LABELED]).float().mean() > 0.95


def test_fit_generalises_on_separable_toy_problem(problem):
    features, labels = problem
    learner = make_learner()
    learner.fit(features, labels, LABELED, WEIGHTS, seed=0)
    held_out = torch.arange(60, 150)
    fused = fuse(learner.predict(features, held_out), WEIGHTS, "efda")
    assert (fused.argmax(-1) == labels[held_out]).float().mean() > 0.9


@pytest.mark.parametrize("fusion", ["ds", "geometric"])
def test_fit_with_other_fusion_and_minibatches_learns(problem, fusion):
    features, labels = problem
    learner = make_learner(fusion=fusion, batch_size=32)
    learner.fit(features, labels, LABELED, WEIGHTS, seed=0)
    fused = fuse(learner.predict(features, LABELED), WEIGHTS, fusion)
    assert (fused.argmax(-1) == labels[LABELED]).float().mean() > 0.95


def test_same_seed_gives_identical_predictions(problem):
    features, labels = problem
    predictions = []
    for _ in range(2):
        learner = make_fast_learner(batch_size=16)
        learner.fit(features, labels, LABELED, WEIGHTS, seed=7)
        predictions.append(learner.predict(features))
    assert torch.equal(predictions[0], predictions[1])


def test_learner_leaves_global_rng_untouched(problem):
    features, labels = problem
    state = torch.random.get_rng_state()
    learner = make_fast_learner()
    learner.fit(features, labels, LABELED, WEIGHTS, seed=3)
    learner.reset(4)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_reset_different_seeds_give_different_parameters():
    a, b = make_fast_learner(), make_fast_learner()
    a.reset(0)
    b.reset(1)
    assert any(not torch.equal(pa, pb) for pa, pb in zip(a.net.parameters(), b.net.parameters()))


def test_reset_same_seed_gives_same_parameters():
    a, b = make_fast_learner(), make_fast_learner()
    a.reset(5)
    b.reset(5)
    assert all(torch.equal(pa, pb) for pa, pb in zip(a.net.parameters(), b.net.parameters()))


def test_warm_fit_continues_from_learned_parameters(problem):
    features, labels = problem
    learner = make_fast_learner(dropout=0.0, warm_start=True)
    cold = learner.fit(features, labels, LABELED, WEIGHTS, seed=0)
    warm = learner.fit(features, labels, LABELED, WEIGHTS, seed=1)
    assert cold.epochs == learner.config.epochs
    assert warm.epochs == learner.config.warm_epochs
    # starts where the cold fit ended, not back near a re-initialised network's loss
    assert warm.losses[0] < cold.losses[-1] + 0.1 * (cold.losses[0] - cold.losses[-1])


def test_cold_fit_every_time_when_warm_start_disabled(problem):
    features, labels = problem
    learner = make_fast_learner(warm_start=False)
    learner.fit(features, labels, LABELED, WEIGHTS, seed=0)
    second = learner.fit(features, labels, LABELED, WEIGHTS, seed=1)
    fresh = make_fast_learner(warm_start=False)
    fresh.fit(features, labels, LABELED, WEIGHTS, seed=1)
    assert second.epochs == learner.config.epochs
    assert torch.equal(learner.predict(features), fresh.predict(features))


def test_fit_stats_report_every_epoch(problem):
    features, labels = problem
    stats = make_learner(epochs=12).fit(features, labels, LABELED, WEIGHTS, seed=0)
    assert len(stats.losses) == stats.epochs == 12
    assert stats.grad_norm > 0 and stats.seconds > 0


def test_predict_shape_and_alpha_at_least_one(problem):
    features, labels = problem
    learner = make_fast_learner(epochs=5)
    learner.fit(features, labels, LABELED, WEIGHTS, seed=0)
    alphas = learner.predict(features, torch.tensor([3, 1, 4, 1, 5]), batch_size=2)
    assert alphas.shape == (len(DIMS), 5, N_CLASSES)
    assert (alphas >= 1).all()


def test_predict_all_rows_in_batches_matches_one_batch(problem):
    features, labels = problem
    learner = make_fast_learner(epochs=5)
    learner.fit(features, labels, LABELED, WEIGHTS, seed=0)
    torch.testing.assert_close(learner.predict(features, batch_size=7), learner.predict(features))


def test_state_dict_round_trip_reproduces_predictions(problem):
    features, labels = problem
    learner = make_fast_learner(epochs=5)
    learner.fit(features, labels, LABELED, WEIGHTS, seed=0)
    copy = make_fast_learner()
    copy.load_state_dict(learner.state_dict())
    assert torch.equal(copy.predict(features), learner.predict(features))


def test_unknown_fusion_in_config_raises():
    with pytest.raises(ValueError, match="efda"):
        LearnerConfig(fusion="mean")


def _fused_and_single_top1(dataset, modalities, seed=0):
    """Fused val/test top-1 under the round's weights (``fusion_weights``' default), and
    each modality head's, of a learner fitted on 40 labeled pool rows of ``modalities``."""
    from rlmba_env.config import EnvConfig
    from rlmba_env.round import fusion_weights

    features = {m: torch.as_tensor(dataset.features[m]) for m in modalities}
    labels = torch.as_tensor(dataset.labels)
    learner = EvidentialLearner({m: dataset.feature_dims[m] for m in modalities}, dataset.n_classes,
                                LearnerConfig(epochs=60, hidden=16))
    equal = torch.full((len(modalities),), 1.0 / len(modalities))
    learner.fit(features, labels, torch.as_tensor(dataset.splits["pool"][:40]), equal, seed=seed)
    alphas = learner.predict(features)
    val, test = torch.as_tensor(dataset.splits["val"]), torch.as_tensor(dataset.splits["test"])
    weights = fusion_weights(alphas[:, val], labels[val], equal, learner.config.fusion, tau=EnvConfig.tau,
                             epsilon=EnvConfig.epsilon)
    out = {}
    for split, rows in (("val", val), ("test", test)):
        a, y = alphas[:, rows], labels[rows]
        out[split] = float((fuse(a, weights, learner.config.fusion).argmax(-1) == y).float().mean())
        out[split + "_single"] = [float((am.argmax(-1) == y).float().mean()) for am in a]
    return out


@pytest.fixture
def signal_and_noise():
    """m0 carries all the class signal, m1 is pure noise."""
    from rlmba_env.data.synthetic import make_synthetic

    return make_synthetic(n_samples=500, n_classes=4, dims=(8, 8), informativeness=(1.0, 0.0),
                          val_per_class=25, seed=1)


def test_adding_a_pure_noise_modality_does_not_lower_fused_top1(signal_and_noise, one_torch_thread):
    # mean over seeds: adding a modality changes the random draws (initialisation, dropout)
    # of m0's own head, whose top-1 on this problem moves by several samples from seed to seed
    # with or without the noise modality (EFDA and geometric fusion alike)
    seeds = (0, 1, 2)
    alone = [_fused_and_single_top1(signal_and_noise, ("m0",), seed) for seed in seeds]
    with_noise = [_fused_and_single_top1(signal_and_noise, ("m0", "m1"), seed) for seed in seeds]
    for split in ("val", "test"):
        one_sample = 1.0 / len(signal_and_noise.splits[split])
        mean_alone = sum(o[split] for o in alone) / len(seeds)
        mean_with_noise = sum(o[split] for o in with_noise) / len(seeds)
        assert mean_with_noise >= mean_alone - one_sample - 1e-9, (split, with_noise, alone)


def test_fused_matches_the_modality_that_carries_all_the_signal(signal_and_noise, one_torch_thread):
    # mean over seeds: the weights fitted on 100 validation rows give the noise modality some
    # weight on some draws, which moves fused test top-1 by several samples either way (seed 0:
    # 5 below m0 alone, seed 1: 4 above)
    outs = [_fused_and_single_top1(signal_and_noise, ("m0", "m1"), seed) for seed in (0, 1, 2)]
    for split in ("val", "test"):
        one_sample = 1.0 / len(signal_and_noise.splits[split])
        fused = sum(o[split] for o in outs) / len(outs)
        single = sum(o[split + "_single"][0] for o in outs) / len(outs)
        assert fused >= single - one_sample - 1e-9, (split, outs)


def test_trainer_adam_matches_torch_optim_adam_bit_for_bit():
    from rlmba_env.learner.trainer import _Adam

    g = torch.Generator().manual_seed(0)
    ours = [torch.randn(2, 4, 3, generator=g).requires_grad_(True), torch.randn(2, 3, generator=g).requires_grad_(True)]
    theirs = [p.detach().clone().requires_grad_(True) for p in ours]
    optimizers = [(ours, _Adam(ours, lr=1e-2, weight_decay=1e-3)),
                  (theirs, torch.optim.Adam(theirs, lr=1e-2, weight_decay=1e-3))]
    x = torch.randn(3, 4, generator=g)
    for _ in range(5):
        for params, optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
            ((params[0] @ x).tanh().sum() + params[1].pow(3).sum()).backward()
            optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_fit_does_not_import_torch_dynamo():
    import subprocess
    import sys

    code = ("import sys, torch\nfrom rlmba_env.learner import EvidentialLearner, LearnerConfig\n"
            "x = {'a': torch.randn(30, 4), 'b': torch.randn(30, 3)}\n"
            "learner = EvidentialLearner({'a': 4, 'b': 3}, 3, LearnerConfig(epochs=2))\n"
            "learner.fit(x, torch.arange(30) % 3, torch.arange(30), torch.tensor([0.5, 0.5]), seed=0)\n"
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_kl_weight_out_of_range_raises_naming_the_field():
    with pytest.raises(ValueError, match="kl_weight"):
        LearnerConfig(kl_weight=-0.5)


def test_a_smaller_kl_weight_keeps_more_wrong_class_evidence(problem):
    features, labels = problem
    wrong = []
    for kl_weight in (1.0, 0.0):
        learner = make_fast_learner(kl_weight=kl_weight, kl_anneal_epochs=0)
        learner.fit(features, labels, LABELED, WEIGHTS, seed=0)
        alphas = learner.predict(features)[:, LABELED]  # (M, n, K)
        not_true = torch.ones_like(alphas, dtype=torch.bool).scatter_(-1, labels[LABELED][None, :, None].expand(
            alphas.shape[0], -1, 1), False)
        wrong.append(float((alphas - 1)[not_true].mean()))
    assert wrong[1] > wrong[0], wrong


def test_unknown_evidence_function_raises_naming_the_field():
    with pytest.raises(ValueError, match="LearnerConfig.evidence"):
        LearnerConfig(evidence="relu")


def test_exp_evidence_learns_and_its_fast_inference_matches_the_network(problem):
    features, labels = problem
    learner = make_learner(evidence="exp", kl_weight=0.0)
    learner.fit(features, labels, LABELED, WEIGHTS, seed=0)
    held_out = torch.arange(60, 150)
    fused = fuse(learner.predict(features, held_out), WEIGHTS, "geometric")
    assert (fused.argmax(-1) == labels[held_out]).float().mean() > 0.9
    learner.net.eval()
    with torch.no_grad():
        expected = learner.net(features)
    torch.testing.assert_close(learner.predict(features), expected, atol=1e-4, rtol=1e-4)
    softplus = make_learner(evidence="softplus", kl_weight=0.0)
    softplus.load_state_dict(learner.state_dict())  # same parameters, the other evidence function
    assert not torch.allclose(softplus.predict(features), learner.predict(features))
