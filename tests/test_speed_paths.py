"""The fast paths of a round: scalable k-means, chunked statistics, folded inference, shared
device data, float16 storage and per-pick observation updates."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rlmba_env import chunked
from rlmba_env.chunked import column_stats
from rlmba_env.data.synthetic import make_synthetic
from rlmba_env.env import MultimodalALEnv
from rlmba_env.learner.trainer import EvidentialLearner, LearnerConfig
from rlmba_env.selection import diversity
from rlmba_env.selection.diversity import (
    DiversitySpace,
    assign_to_centroids,
    coreset_kmeans,
    lightweight_coreset,
    nearest_centroid,
    random_projection,
    weighted_kmeans_plus_plus,
)

PROTOCOL = {"initial_labels": 10, "per_round": 4, "rounds": 2}
LEARNER = {"epochs": 10, "warm_epochs": 4, "hidden": 16}


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic(n_samples=400, n_classes=4, dims=(8, 6), val_per_class=10, seed=3)


def blobs(per_blob=200, seed=0):
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    g = torch.Generator().manual_seed(seed)
    return torch.cat([c + 0.1 * torch.randn(per_blob, 2, generator=g) for c in centres])


def test_small_pools_use_exact_kmeans_and_large_ones_the_scalable_variant(dataset):
    assert DiversitySpace.is_exact(2820, 10)  # AV-Digits: results unchanged
    assert not DiversitySpace.is_exact(100_000, 1000)
    assert not DiversitySpace.is_exact(10_000, 100)
    assert not MultimodalALEnv(dataset, PROTOCOL, learner=LEARNER).data.diversity.scalable


def test_coreset_kmeans_recovers_separated_blobs():
    x = blobs()
    _, distance, assign = coreset_kmeans(x, 4, torch.Generator().manual_seed(1), coreset_rows=100)
    assert distance.max() < 1.0
    assert all(block.unique().numel() == 1 for block in assign.view(4, -1))
    assert assign.view(4, -1)[:, 0].unique().numel() == 4


def test_lightweight_coreset_weights_estimate_the_row_count():
    x = torch.randn(5000, 3, generator=torch.Generator().manual_seed(0))
    rows, weight = lightweight_coreset(x, 800, torch.Generator().manual_seed(0))
    assert torch.equal(rows, rows.unique()) and rows.max() < 5000
    assert float(weight.sum()) == pytest.approx(5000, rel=0.15)


def test_weighted_kmeans_plus_plus_picks_distinct_rows_with_weight():
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    weight = torch.ones(50)
    weight[:10] = 0
    chosen = weighted_kmeans_plus_plus(x, weight, 20, torch.Generator().manual_seed(0))
    assert chosen.unique().numel() == 20 and chosen.min() >= 10


def test_chunked_assignment_matches_one_block(monkeypatch):
    x, c = torch.randn(1000, 5), torch.randn(7, 5)
    d_ref, a_ref = nearest_centroid(x, c)
    d_fast, a_fast = assign_to_centroids(x, c)
    torch.testing.assert_close(d_fast, d_ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(a_fast, a_ref)
    monkeypatch.setattr(diversity, "ASSIGN_BLOCK_ELEMENTS", 7)
    monkeypatch.setattr(chunked, "CHUNK_ELEMENTS", 7 * 33)
    assert torch.equal(assign_to_centroids(x, c)[1], a_ref)
    d_chunked, a_chunked = nearest_centroid(x, c)
    assert torch.equal(a_chunked, a_ref) and torch.equal(d_chunked, d_ref)


def test_nearest_sq_chunked_over_centres_matches_brute_force():
    x, c = torch.randn(50, 4), torch.randn(11, 4)
    brute = torch.cdist(x, c).square()
    d2, index = chunked.nearest_sq(x, c, chunk_elements=3)  # 3 centres, 1 row per block
    assert torch.equal(index, brute.argmin(1))
    torch.testing.assert_close(d2, brute.min(1).values, atol=1e-4, rtol=1e-4)
    empty_d2, empty_index = chunked.nearest_sq(x, c[:0])
    assert torch.isinf(empty_d2).all() and (empty_index == -1).all()


def test_random_projection_keeps_squared_distances_on_average():
    x = torch.randn(400, 256, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.5, 3, 256)
    p = random_projection(x, 128, torch.Generator().manual_seed(0), chunk=64)
    z = diversity.standardise(x)
    i, j = torch.arange(0, 200), torch.arange(200, 400)
    ratio = (p[i] - p[j]).square().sum(1) / (z[i] - z[j]).square().sum(1)
    assert float(ratio.mean()) == pytest.approx(1.0, abs=0.05)
    assert float(ratio.std()) < 0.25


def test_random_projection_centres_columns_with_a_large_offset():
    x = torch.randn(300, 16, generator=torch.Generator().manual_seed(0)).double()
    p = random_projection((x + 3e4).float(), 8, torch.Generator().manual_seed(0))  # |mean| / std ~ 3e4
    q = random_projection(x.float(), 8, torch.Generator().manual_seed(0))
    torch.testing.assert_close(p, q, atol=3e-3, rtol=0)  # folding the mean in: 5e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_column_stats_in_chunks_match_torch(dtype):
    x = (torch.randn(1000, 6) * 3 + 5).to(dtype)
    mean, std = column_stats(x, chunk=97)
    torch.testing.assert_close(mean, x.float().mean(0), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(std, x.float().std(0, unbiased=False), atol=1e-4, rtol=1e-4)


def test_scalable_path_runs_an_episode(dataset, monkeypatch, one_torch_thread):
    monkeypatch.setattr(diversity, "EXACT_MAX_ROWS", 10)
    monkeypatch.setattr(diversity, "CORESET_MIN_ROWS", 50)
    env = MultimodalALEnv(dataset, PROTOCOL, learner=LEARNER)
    assert env.data.diversity.scalable
    assert next(iter(env.data.diversity.blocks.values())).shape[1] == diversity.PROJECTION_DIMS
    obs, _ = env.reset(seed=0)
    terminated = False
    while not terminated:
        assert env.observation_space.contains(obs)
        obs, _, terminated, _, info = env.step(int(np.flatnonzero(obs["action_mask"])[0]))
    assert info["labeled"] == PROTOCOL["initial_labels"] + PROTOCOL["rounds"] * PROTOCOL["per_round"]


def test_envs_on_one_dataset_share_the_device_data(dataset):
    a = MultimodalALEnv(dataset, PROTOCOL, learner=LEARNER)
    b = MultimodalALEnv(dataset, PROTOCOL, learner=LEARNER)
    assert a.data.features is b.data.features and a.data.diversity is b.data.diversity


def test_float16_features_stay_float16_and_score_like_float32(dataset, one_torch_thread):
    half = make_synthetic(n_samples=400, n_classes=4, dims=(8, 6), val_per_class=10, seed=3)
    half.features = {m: x.astype(np.float16) for m, x in half.features.items()}
    env16 = MultimodalALEnv(half, PROTOCOL, learner=LEARNER)
    assert all(x.dtype == torch.float16 for x in env16.data.features.values())
    obs16, info16 = env16.reset(seed=1)
    env32 = MultimodalALEnv(dataset, PROTOCOL, learner=LEARNER)
    obs32, info32 = env32.reset(seed=1)
    assert info16["top1"] == pytest.approx(info32["top1"], abs=0.1)
    assert obs16["candidates"].shape == obs32["candidates"].shape


def test_input_statistics_are_computed_once_per_features_tensor(dataset, monkeypatch):
    x = {m: torch.as_tensor(v) for m, v in dataset.features.items()}
    y = torch.as_tensor(dataset.labels)
    learner = EvidentialLearner(dataset.feature_dims, dataset.n_classes, LearnerConfig(**LEARNER))
    calls = []
    original = learner.net.set_input_stats
    monkeypatch.setattr(learner.net, "set_input_stats", lambda f: (calls.append(1), original(f)))
    rows, w = torch.arange(20), torch.tensor([0.5, 0.5])
    learner.fit(x, y, rows, w, seed=0)
    learner.fit(x, y, rows, w, seed=1)
    assert len(calls) == 1
    x["m0"].mul_(2.0)  # modified in place: the statistics are stale
    learner.fit(x, y, rows, w, seed=2)
    assert len(calls) == 2
    torch.testing.assert_close(learner.net.input_mean_0, x["m0"].mean(0))


def test_large_input_statistics_are_chunked_and_match(dataset, monkeypatch):
    monkeypatch.setattr(EvidentialLearner, "STATS_CHUNK_ROWS", 64)
    x = {m: torch.as_tensor(v) for m, v in dataset.features.items()}
    learner = EvidentialLearner(dataset.feature_dims, dataset.n_classes, LearnerConfig(**LEARNER))
    learner.fit(x, torch.as_tensor(dataset.labels), torch.arange(20), torch.tensor([0.5, 0.5]), seed=0)
    torch.testing.assert_close(learner.net.input_mean_1, x["m1"].mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(learner.net.input_std_1, x["m1"].std(0, unbiased=False), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("offset", [0.0, 1e5])
def test_folded_inference_matches_the_network(dataset, offset):
    """Inference folds the standardisation into the first layer; a column whose mean is huge
    next to its spread is centred first instead, so float32 does not cancel."""
    x = {m: torch.as_tensor(v) + offset for m, v in dataset.features.items()}
    learner = EvidentialLearner(dataset.feature_dims, dataset.n_classes, LearnerConfig(**LEARNER))
    learner.fit(x, torch.as_tensor(dataset.labels), torch.arange(40), torch.tensor([0.5, 0.5]), seed=0)
    layers = learner._inference_layers()
    assert all((centre is not None) == (offset > 0) for _, _, centre, _, _ in layers)
    learner.net.eval()
    with torch.no_grad():
        expected = learner.net(x)
    torch.testing.assert_close(learner.predict(x), expected, atol=1e-4, rtol=1e-4)
    rows = torch.tensor([5, 3, 99])
    torch.testing.assert_close(learner.predict(x, rows), expected[:, rows], atol=1e-4, rtol=1e-4)


def test_per_pick_observation_updates_match_a_full_recomputation(dataset, one_torch_thread):
    env = MultimodalALEnv(dataset, {"initial_labels": 10, "per_round": 6, "rounds": 1}, learner=LEARNER)
    obs, _ = env.reset(seed=2)
    for pos in (0, 3, 4):
        obs, *_ = env.step(pos)
    r = env._result
    picked = torch.tensor(env._picks)
    per_cluster = torch.bincount(r.candidate_cluster[picked], minlength=r.cluster_size.shape[0])
    coverage = ((r.cluster_labeled + per_cluster) / (r.cluster_labeled + r.cluster_size).clamp_min(1)).clamp(0, 1)
    cols = env.candidate_columns
    n = r.candidates.shape[0]
    np.testing.assert_array_equal(obs["candidates"][:n, cols.index("coverage")], coverage[r.candidate_cluster].numpy())
    np.testing.assert_array_equal(np.flatnonzero(obs["candidates"][:, cols.index("picked")]), [0, 3, 4])


def test_profile_reports_the_phases_of_a_round(dataset, one_torch_thread):
    env = MultimodalALEnv(dataset, PROTOCOL, learner=LEARNER)
    env.profile = True
    env.reset(seed=0)
    assert {"train_s", "score_s", "infer_s", "cluster_s", "candidates_s"} <= set(env.last_timings)


def test_speed_benchmark_runs_as_a_script():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"
    out = subprocess.run([sys.executable, str(script), "--sizes", "1e3", "--skip-avdigits", "--skip-vector",
                          "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "One round at pool size N" in out.stdout and "BADGE / rlmba-score" in out.stdout


def test_batched_seeding_is_deterministic_and_sequential_with_one_centre_a_round():
    x = torch.randn(300, 4, generator=torch.Generator().manual_seed(0))
    weight = torch.rand(300, generator=torch.Generator().manual_seed(1)) + 0.1
    a = weighted_kmeans_plus_plus(x, weight, 40, torch.Generator().manual_seed(2))
    b = weighted_kmeans_plus_plus(x, weight, 40, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and a.unique().numel() == 40
    # rounds = k - 1 draws every centre after the first alone: classic k-means++
    seq = diversity.sequential_weighted_kmeans_plus_plus(x, weight, 40, torch.Generator().manual_seed(2))
    assert torch.equal(seq, weighted_kmeans_plus_plus(x, weight, 40, torch.Generator().manual_seed(2), rounds=39))
    with pytest.raises(ValueError, match="rounds"):
        weighted_kmeans_plus_plus(x, weight, 4, torch.Generator(), rounds=0)


def test_batched_seeding_finds_separated_blobs_as_often_as_sequential_seeding():
    # 64 tight, well-separated blobs: a batch of 8 unfiltered draws would often put two
    # centres in one blob; the rejection step keeps seeding as good as one-at-a-time k-means++
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(64, 8, generator=g) * 20
    x = centres.repeat_interleave(30, 0) + 0.1 * torch.randn(64 * 30, 8, generator=g)
    weight = torch.ones(x.shape[0])

    def cost(chosen):
        return float(nearest_centroid(x, x[chosen])[0].square().sum())

    seeds = range(10)
    batched = [cost(weighted_kmeans_plus_plus(x, weight, 64, torch.Generator().manual_seed(s), rounds=8))
               for s in seeds]
    sequential = [cost(diversity.sequential_weighted_kmeans_plus_plus(x, weight, 64, torch.Generator().manual_seed(s)))
                  for s in seeds]
    random_rows = [cost(torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(s))[:64]) for s in seeds]
    assert np.median(batched) < 1.2 * np.median(sequential)
    assert np.median(sequential) < np.median(random_rows) / 5


def test_bfloat16_assignment_chooses_a_nearest_centroid_and_measures_it_exactly():
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(5000, 16, generator=g), torch.randn(50, 16, generator=g)
    d_ref, a_ref = assign_to_centroids(x, c)
    d_low, a_low = assign_to_centroids(x, c, torch.bfloat16)
    assert d_low.dtype == torch.float32
    assert float((a_low == a_ref).float().mean()) > 0.95
    # the distance returned is the exact distance to the centroid chosen, and that centroid
    # is never more than rounding farther than the nearest one
    torch.testing.assert_close(d_low, (x - c[a_low]).norm(dim=1), atol=1e-4, rtol=1e-4)
    assert float((d_low - d_ref).max()) < 0.05 and float((d_low - d_ref).min()) > -1e-4


def test_bfloat16_precision_centres_features_and_runs_like_float32(dataset, monkeypatch, one_torch_thread):
    monkeypatch.setattr(diversity, "EXACT_MAX_ROWS", 10)
    monkeypatch.setattr(diversity, "CORESET_MIN_ROWS", 50)
    env16 = MultimodalALEnv(dataset, PROTOCOL, learner=LEARNER, precision="bfloat16")
    assert all(x.dtype == torch.bfloat16 for x in env16.data.features.values())
    for m, x in env16.data.features.items():
        raw = torch.as_tensor(dataset.features[m]).float()
        torch.testing.assert_close(x.float(), raw - raw.mean(0), atol=0.02, rtol=0.01)
    assert env16.data.diversity.scalable and env16.data.diversity.gemm_dtype == torch.bfloat16
    assert env16.describe()["precision"] == "bfloat16"
    env32 = MultimodalALEnv(dataset, PROTOCOL, learner=LEARNER)
    assert env16.data.features is not env32.data.features  # device data is kept per precision
    obs16, info16 = env16.reset(seed=1)
    obs32, info32 = env32.reset(seed=1)
    assert env16.observation_space.contains(obs16)
    assert info16["top1"] == pytest.approx(info32["top1"], abs=0.1)
    terminated = False
    while not terminated:
        obs16, _, terminated, _, info16 = env16.step(int(np.flatnonzero(obs16["action_mask"])[0]))
    assert info16["labeled"] == PROTOCOL["initial_labels"] + PROTOCOL["rounds"] * PROTOCOL["per_round"]


def test_bfloat16_inference_matches_float32_up_to_rounding(dataset, one_torch_thread):
    learner = EvidentialLearner(dataset.feature_dims, dataset.n_classes, LearnerConfig(**LEARNER), torch.device("cpu"))
    features = {m: torch.as_tensor(x).float() for m, x in dataset.features.items()}
    centred = {m: (x - x.mean(0)).bfloat16() for m, x in features.items()}
    labels = torch.as_tensor(dataset.labels)
    rows = torch.as_tensor(dataset.splits["pool"][:40])
    learner.fit(centred, labels, rows, torch.tensor([0.5, 0.5]), seed=0)
    low = learner.predict(centred)
    reference = learner.predict({m: x.float() for m, x in centred.items()})
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, reference, rtol=0.03, atol=0.03)


def test_unknown_precision_is_rejected(dataset):
    with pytest.raises(ValueError, match="precision must be one of"):
        MultimodalALEnv(dataset, PROTOCOL, learner=LEARNER, precision="float16")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scalable_fused_features_are_the_weighted_sum_of_the_blocks(dtype, monkeypatch):
    monkeypatch.setattr(diversity, "CHUNK_ROWS", 7)  # several chunks
    g = torch.Generator().manual_seed(0)
    blocks = {m: torch.randn(40, 5, generator=g).to(dtype) for m in ("a", "b")}
    before = {m: b.clone() for m, b in blocks.items()}
    space = DiversitySpace(blocks, scalable=True, gemm_dtype=dtype)
    weights = torch.tensor([0.7, 0.3])
    rows = torch.tensor([3, 0, 39, 12, 5, 6, 7, 8, 20])
    for r in (None, rows):
        expected = sum(b.float()[r if r is not None else slice(None)] * w.sqrt()
                       for w, b in zip(weights, blocks.values()))
        torch.testing.assert_close(space.fused(weights, r), expected)
    assert all(torch.equal(blocks[m], before[m]) for m in blocks)  # the stored blocks are untouched


def test_bfloat16_on_a_cpu_without_it_warns(monkeypatch, tmp_path):
    from rlmba_env import device as env_module

    no_bf16, bf16 = tmp_path / "old", tmp_path / "new"
    no_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    bf16.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert env_module.cpu_has_bfloat16(str(no_bf16)) is False
    assert env_module.cpu_has_bfloat16(str(bf16)) is True
    assert env_module.cpu_has_bfloat16(str(tmp_path / "missing")) is None
    monkeypatch.setattr(env_module, "cpu_has_bfloat16", lambda: False)
    fresh = make_synthetic(n_samples=120, n_classes=3, dims=(4, 3), val_per_class=5, seed=0)  # no cached device data
    with pytest.warns(UserWarning, match="emulated"):
        MultimodalALEnv(fresh, PROTOCOL, learner=LEARNER, precision="bfloat16")


def test_column_stats_are_recomputed_after_the_tensor_changes():
    x = torch.randn(300, 5)
    first = column_stats(x, chunk=64)
    assert all(torch.equal(a, b) for a, b in zip(first, column_stats(x, chunk=64)))  # remembered
    x.add_(10.0)  # bumps the tensor's version: the remembered statistics are stale
    mean, _ = column_stats(x, chunk=64)
    torch.testing.assert_close(mean, first[0] + 10.0, atol=1e-4, rtol=0)


def test_float_chunks_convert_every_row_and_reuse_one_buffer():
    x = torch.randn(10, 3).half()
    blocks = [(lo, block.data_ptr(), block.clone()) for lo, block in chunked.float_chunks(x, chunk=4)]
    assert [lo for lo, _, _ in blocks] == [0, 4, 8]
    assert len({ptr for _, ptr, _ in blocks}) == 1
    assert torch.equal(torch.cat([b for _, _, b in blocks]), x.float())
