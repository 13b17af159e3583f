"""Speed of rlmba on this machine: rounds from AV-Digits to a million-row pool, selection
strategies, vectorised envs and peak memory, measured in one run.

    python benchmarks/speed.py                          # everything (see the sizes below)
    python benchmarks/speed.py --sizes 1e3 1e4          # a quick run
    python benchmarks/speed.py --skip-vector --episodes 1

Prints these tables (2 also has a seeding comparison for the scalable k-means):

1. **AV-Digits**: one round of the default env split into train (fitting the evidential
   learner), score (AMCB, EFDA, k-means diversity, candidate features) and select (the b picks
   of a random agent: mask checks and observation building), and whole episodes.
2. **One round at pool size N** (synthetic: 2 modalities of 512 float32 features, 10 classes,
   pool exactly N rows plus 300 val and 2,000 test rows, generated in chunks). Budget
   b = 1% of N, at least 10 and at most 1,000; b initial labels; kappa = 5, so K = 5b
   candidates; the default learner (100 full-batch epochs, cold fit every round). Rounds 1 and
   2 of an episode are timed (labeled sets of 2b and 3b rows) and their median reported, split
   into train / infer (the learner over every row) / cluster (k-means and the assignment of
   every pool row) / score (q, candidate set and its columns) / select (b picks). "overhead"
   is everything but train, as a share of the round. The random agent draws its b picks from
   the round's first mask before the round's clock starts, so "select" is the env's own cost
   of b ``step`` calls. Each N runs in its own process, on the CPU and, when
   ``torch.cuda.is_available()``, on CUDA, at each ``--precision`` (the env's ``precision``
   argument; "val top-1" after the timed rounds shows what rounding changes); peak memory is
   that process's maximum resident set size (``resource``) and
   ``torch.cuda.max_memory_allocated``. For the scalable k-means a second small table compares
   its batched k-means++ seeding with one-centre-at-a-time seeding on the same coreset: time,
   and the k-means cost on the whole pool after the same Lloyd iterations.
3. **Selection at pool size N**, after the timed rounds: ``rlmba-score`` (top b by the score q
   the env already computed; also shown with the env's cluster + score phases added), the
   RL-MBA policy's forward passes (an untrained ``agents.policies.SetScorer`` scoring the K
   candidates once per pick, b picks), the shipped policy (``agents.pretrained``, the agent
   ``rl-mba``: its ``act`` calls over the next round's b greedy picks in the env loop, and
   their share of the timed rounds' training time), BADGE and BMMAL
   (``rlmba_env.strategies``), and their time as a multiple of ``rlmba-score``'s.
4. **Vectorised envs on AV-Digits**: env steps per second and episodes per hour for one env,
   for n envs in ``gymnasium.vector.SyncVectorEnv`` and ``AsyncVectorEnv`` (one process per
   env, each with cores / n torch threads, at least one) and for ``rlmba_env.vector.BatchedMultimodalALVectorEnv``, random agents, one
   episode per env after a warm-up episode.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import torch

import rlmba_env  # noqa: F401
from rlmba_env.data.dataset import MultimodalDataset

DEFAULT_SIZES = ("1e3", "1e4", "1e5", "1e6")


# -- AV-Digits round and episode -----------------------------------------------------------------
def timed_episode(env, seed: int) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    timings = {"train": [], "score": [], "select": [], "episode": []}
    start = time.perf_counter()
    obs, _ = env.reset(seed=seed)
    terminated = False
    while not terminated:
        picks_start = time.perf_counter()
        for _ in range(env.unwrapped.budget):
            obs, _, terminated, _, _ = env.step(int(rng.choice(np.flatnonzero(obs["action_mask"]))))
        round_total = time.perf_counter() - picks_start
        t = env.unwrapped.last_timings
        timings["train"].append(t["train_s"])
        timings["score"].append(t["score_s"])
        timings["select"].append(round_total - t["train_s"] - t["score_s"])
    timings["episode"].append(time.perf_counter() - start)
    return timings


def avdigits_table(env_id: str, episodes: int, device: str) -> None:
    env = gym.make(env_id, device=device)
    timed_episode(env, seed=10_000)  # warm-up: torch's one-off start-up costs are not the env's
    all_timings: dict[str, list[float]] = {"train": [], "score": [], "select": [], "episode": []}
    for seed in range(episodes):
        for key, values in timed_episode(env, seed).items():
            all_timings[key] += values

    p = env.unwrapped.protocol
    print(f"\n## {env_id} on {device}: {p.initial_labels} initial labels, {p.per_round} per round, "
          f"{p.rounds} rounds, pool {len(env.unwrapped.dataset.splits['pool'])}, {episodes} episodes\n")
    print(f"| {'part of one round':<18} | {'median ms':>9} | {'max ms':>7} |")
    print(f"|{'-' * 20}|{'-' * 10}:|{'-' * 8}:|")
    for key in ("train", "score", "select"):
        values = all_timings[key]
        print(f"| {key:<18} | {1000 * statistics.median(values):>9.1f} | {1000 * max(values):>7.1f} |")
    round_ms = sum(1000 * statistics.median(all_timings[k]) for k in ("train", "score", "select"))
    print(f"| {'round (sum)':<18} | {round_ms:>9.1f} | {'':>7} |")
    episodes_s = all_timings["episode"]
    print(f"\nepisode: median {statistics.median(episodes_s):.2f} s, max {max(episodes_s):.2f} s")


# -- pool-size worker ------------------------------------------------------------------------------
def synthetic_pool(n_pool: int, n_classes: int = 10, dims: tuple[int, ...] = (512, 512),
                   informativeness: tuple[float, ...] = (1.0, 0.4), difficulty_spread: float = 0.5,
                   noise: float = 1.0, val_per_class: int = 30, test_per_class: int = 200, seed: int = 0,
                   dtype=np.float32, chunk: int = 65536) -> MultimodalDataset:
    """``make_synthetic``'s model (class prototypes scaled by informativeness, a per-sample pull
    towards a confusable class, Gaussian noise) generated in float32 chunks, so a million rows
    need only the final arrays in memory; the pool holds exactly ``n_pool`` rows."""
    rng = np.random.default_rng(seed)
    per_class = -(-n_pool // n_classes) + val_per_class + test_per_class
    n = per_class * n_classes
    labels = np.arange(n) % n_classes
    rng.shuffle(labels)
    confusable = (labels + rng.integers(1, n_classes, size=n)) % n_classes
    difficulty = rng.uniform(0.0, difficulty_spread, size=n).astype(np.float32)
    features = {}
    for m, (d, scale) in enumerate(zip(dims, informativeness)):
        protos = rng.standard_normal((n_classes, d))
        protos *= np.sqrt(d) / np.linalg.norm(protos, axis=1, keepdims=True) / 2.0
        protos = (scale * protos).astype(np.float32)
        x = np.empty((n, d), dtype=dtype)
        for lo in range(0, n, chunk):
            rows = slice(lo, min(n, lo + chunk))
            t = difficulty[rows, None]
            block = (1.0 - t) * protos[labels[rows]] + t * protos[confusable[rows]]
            block += noise * rng.standard_normal(block.shape, dtype=np.float32)
            x[rows] = block
        features[f"m{m}"] = x
    by_class = np.argsort(labels, kind="stable").reshape(n_classes, per_class)
    splits = {
        "val": np.sort(by_class[:, :val_per_class].ravel()),
        "test": np.sort(by_class[:, val_per_class : val_per_class + test_per_class].ravel()),
        "pool": np.sort(by_class[:, val_per_class + test_per_class :].ravel()[:n_pool]),
    }
    return MultimodalDataset(features=features, labels=labels, splits=splits,
                             classes=[f"class_{c}" for c in range(n_classes)], name=f"synthetic-{n_pool}")


def budget_for(n: int) -> int:
    return int(min(1000, max(10, n // 100)))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def seeding_comparison(env) -> dict:
    """Batched against sequential k-means++ seeding on the env's last round pool (scalable
    variant): seeding time and whole-pool k-means cost after the env's Lloyd iterations."""
    from rlmba_env.selection import diversity as div

    space, r = env.data.diversity, env._result
    x = space.fused(r.weights, r.pool_rows)
    k = min(env.budget, x.shape[0])
    rows, weight = div.lightweight_coreset(x, div.coreset_size(x.shape[0], k), torch.Generator().manual_seed(0))
    xs = x[rows]
    out = {}
    for name, seed_fn in (("batched", div.weighted_kmeans_plus_plus),
                          ("sequential", div.sequential_weighted_kmeans_plus_plus)):
        seconds, chosen = timed(x.device, lambda: seed_fn(xs, weight, k, torch.Generator().manual_seed(1)))
        centroids = div.weighted_lloyd(xs, weight, xs[chosen], env.config.kmeans_iterations, space.gemm_dtype)
        distance, _ = div.assign_to_centroids(x, centroids)
        out[name] = {"seconds": seconds, "cost": float(distance.square().sum())}
    return out


def pool_worker(n: int, device_name: str, dtype: str, precision: str) -> dict:
    from agents.policies import SetScorer
    from agents.pretrained import load_pretrained
    from rlmba_env.env import MultimodalALEnv
    from rlmba_env.strategies import make_strategy

    device = torch.device(device_name)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    b = budget_for(n)
    gen_s, ds = timed(torch.device("cpu"), lambda: synthetic_pool(n, dtype=np.dtype(dtype)))
    protocol = {"initial_labels": b, "per_round": b, "rounds": 3}
    setup_s, env = timed(device, lambda: MultimodalALEnv(ds, protocol, device=device, precision=precision))
    env.profile = True
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)  # round 0: also pays one-off costs (input statistics, allocator)
    rounds = []
    for _ in range(2):
        # the random agent's b picks, drawn before the clock starts: "select" is the env's cost
        picks = rng.permutation(np.flatnonzero(obs["action_mask"]))[:b].tolist()
        start = time.perf_counter()
        for pick in picks:
            obs, _, _, _, info = env.step(pick)
        total = time.perf_counter() - start
        t = env.last_timings
        rounds.append({"train": t["train_s"], "infer": t["infer_s"], "cluster": t["cluster_s"],
                       "score": t["candidates_s"], "select": total - t["train_s"] - t["score_s"],
                       "round": total, "labeled": int(env._labeled.sum())})
    result = {"n": n, "device": device_name, "precision": precision, "b": b, "gen_s": gen_s,
              "setup_s": setup_s, "exact_kmeans": not env.data.diversity.scalable, "val_top1": info["top1"]}
    for key in ("train", "infer", "cluster", "score", "select", "round"):
        result[key] = statistics.median(r[key] for r in rounds)
    result["labeled"] = [r["labeled"] for r in rounds]  # rows the timed fits trained on

    result["peak_rss_env_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux
    result["seeding"] = None if result["exact_kmeans"] else seeding_comparison(env)

    # Selection after the timed rounds, on the round's pool state.
    state = env.pool_state()
    sel = {}
    for name in ("rlmba-score", "badge", "bmmal"):
        strategy = make_strategy(name)
        sel[name], _ = timed(device, lambda: strategy.select(state, b, np.random.default_rng(1)))
    sel["rlmba-score+scoring"] = sel["rlmba-score"] + result["cluster"] + result["score"]
    # The policy: one forward over the K candidates per pick, b picks.
    obs = env.observation()
    with torch.no_grad():
        scorer = SetScorer(obs["candidates"].shape[1], obs["state"].shape[0]).to(device).eval()
        cands = torch.as_tensor(obs["candidates"], device=device)[None]
        st = torch.as_tensor(obs["state"], device=device)[None]
        mask = torch.as_tensor(obs["action_mask"], device=device, dtype=torch.float32)[None]

        def policy_round():
            m = mask.clone()
            for _ in range(b):
                logits = scorer(cands, st, m)[0]
                m[0, logits[0].argmax()] = 0.0  # stays on the device, as an agent's sampling would
            return m

        sel["policy"], _ = timed(device, policy_round)
    # The shipped policy (agents/pretrained) plays the next round greedy in the env loop; only
    # its act() calls are timed, the env's steps are not.
    shipped = load_pretrained(device_name)
    sel["shipped"] = 0.0
    for _ in range(b):
        start = time.perf_counter()
        pick = shipped.act(obs, deterministic=True)
        sel["shipped"] += time.perf_counter() - start
        obs, *_ = env.step(pick)
    result["selection"] = sel
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux
    result["peak_cuda_gb"] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return result


def run_pool_worker(n: int, device: str, dtype: str, precision: str, threads: int | None) -> dict | None:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(n), "--device", device, "--dtype", dtype,
           "--precision", precision]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    print(f"worker N={n} on {device} at {precision} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}", file=sys.stderr)
    return None


def pool_tables(results: list[dict]) -> None:
    print("\n## One round at pool size N (median of rounds 1 and 2; seconds)\n")
    print("| N | device | precision | b | labeled | k-means | train | infer | cluster | score | select | round "
          "| overhead | val top-1 | env setup | peak RSS GB (env / + strategies) | peak CUDA GB |")
    print("|---:|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        overhead = (r["round"] - r["train"]) / r["round"]
        cuda = f"{r['peak_cuda_gb']:.2f}" if r["peak_cuda_gb"] is not None else "-"
        print(f"| {r['n']:.0e} | {r['device']} | {r['precision']} | {r['b']} | {'/'.join(map(str, r['labeled']))} "
              f"| {'exact' if r['exact_kmeans'] else 'scalable'} | {r['train']:.3f} | {r['infer']:.3f} "
              f"| {r['cluster']:.3f} | {r['score']:.3f} | {r['select']:.3f} | {r['round']:.3f} "
              f"| {100 * overhead:.0f}% | {r['val_top1']:.3f} | {r['setup_s']:.2f} | {r['peak_rss_env_gb']:.2f} / {r['peak_rss_gb']:.2f} | {cuda} |")
    by_device: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        by_device.setdefault((r["device"], r["precision"]), []).append(r)
    for (device, precision), rs in by_device.items():
        rs = sorted(rs, key=lambda r: r["n"])
        growth = ", ".join(f"{b['n']:.0e}->{a['n']:.0e}: x{a['round'] / b['round']:.1f} time for "
                           f"x{a['n'] / b['n']:.0f} rows" for b, a in zip(rs, rs[1:]))
        if growth:
            print(f"\nround time growth on {device} at {precision}: {growth}")

    seeded = [r for r in results if r["seeding"]]
    if seeded:
        print("\n## Scalable k-means: batched against sequential k-means++ seeding (same coreset)\n")
        print("| N | device | precision | k | batched s | sequential s | speed-up | cost after Lloyd, batched / sequential |")
        print("|---:|---|---|---:|---:|---:|---:|---:|")
        for r in seeded:
            bat, seq = r["seeding"]["batched"], r["seeding"]["sequential"]
            print(f"| {r['n']:.0e} | {r['device']} | {r['precision']} | {r['b']} | {bat['seconds']:.4f} "
                  f"| {seq['seconds']:.4f} | {seq['seconds'] / bat['seconds']:.1f}x | {bat['cost'] / seq['cost']:.4f} |")

    print("\n## Selection at pool size N (seconds; ratio = time / rlmba-score's)\n")
    print("| N | device | precision | b | rlmba-score | + env cluster & score | policy (b forwards) "
          "| shipped policy (b acts) | shipped / train | BADGE | BMMAL "
          "| BADGE / rlmba-score | BADGE / (rlmba-score + scoring) | BADGE / policy | BMMAL / rlmba-score |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        s = r["selection"]
        print(f"| {r['n']:.0e} | {r['device']} | {r['precision']} | {r['b']} | {s['rlmba-score']:.4f} | {s['rlmba-score+scoring']:.3f} "
              f"| {s['policy']:.3f} | {s['shipped']:.3f} | {100 * s['shipped'] / r['train']:.1f}% "
              f"| {s['badge']:.3f} | {s['bmmal']:.3f} "
              f"| {s['badge'] / s['rlmba-score']:.0f}x | {s['badge'] / s['rlmba-score+scoring']:.1f}x "
              f"| {s['badge'] / s['policy']:.1f}x | {s['bmmal'] / s['rlmba-score']:.0f}x |")


# -- vectorised envs -------------------------------------------------------------------------------
def play(envs, vector: bool, episodes: int, seed: int) -> tuple[int, float]:
    """Steps and seconds for ``episodes`` episodes of every env with a random agent (after reset)."""
    rng = np.random.default_rng(seed)
    obs, _ = envs.reset(seed=seed)
    steps = 0
    start = time.perf_counter()
    if not vector:
        for episode in range(episodes):
            terminated = False
            while not terminated:
                obs, _, terminated, _, _ = envs.step(int(rng.choice(np.flatnonzero(obs["action_mask"]))))
                steps += 1
            if episode < episodes - 1:
                obs, _ = envs.reset()
        return steps, time.perf_counter() - start
    done = np.zeros(envs.num_envs, dtype=int)
    while done.min() < episodes:
        masks = obs["action_mask"]
        actions = np.array([rng.choice(np.flatnonzero(m)) for m in masks])
        obs, _, terminated, truncated, _ = envs.step(actions)
        steps += envs.num_envs
        done += terminated | truncated
    return steps, time.perf_counter() - start


def make_in_worker(env_id: str, device: str, threads: int):
    """An env for an ``AsyncVectorEnv`` worker process, using its share of the CPU cores."""
    torch.set_num_threads(threads)
    return gym.make(env_id, device=device)


def vector_table(env_id: str, n_envs: int, device: str, episodes: int) -> None:
    from rlmba_env.vector import BatchedMultimodalALVectorEnv

    make = functools.partial(gym.make, env_id, device=device)
    rows = []
    single = make()
    play(single, False, 1, 10_000)  # warm-up
    rows.append(("1 env", 1, *play(single, False, episodes, 0)))
    single.close()
    sync_env = gym.vector.SyncVectorEnv([make] * n_envs)
    play(sync_env, True, 1, 10_000)
    rows.append((f"SyncVectorEnv x{n_envs}", n_envs, *play(sync_env, True, episodes, 0)))
    sync_env.close()
    threads = max(1, (os.cpu_count() or 1) // n_envs)  # n_envs processes of torch's default threads oversubscribe
    async_env = gym.vector.AsyncVectorEnv([functools.partial(make_in_worker, env_id, device, threads)] * n_envs,
                                          context="spawn")
    play(async_env, True, 1, 10_000)
    rows.append((f"AsyncVectorEnv x{n_envs}", n_envs, *play(async_env, True, episodes, 0)))
    async_env.close()
    batched = BatchedMultimodalALVectorEnv.from_env_id(env_id, n_envs, device=device)
    play(batched, True, 1, 10_000)
    rows.append((f"BatchedMultimodalALVectorEnv x{n_envs}", n_envs, *play(batched, True, episodes, 0)))
    batched.close()

    print(f"\n## Vectorised {env_id} on {device} (random agents, {episodes} episode(s) per env)\n")
    print("| envs | env steps / s | episodes / hour | x one env |")
    print("|---|---:|---:|---:|")
    base = rows[0][2] / rows[0][3]
    steps_per_episode = rows[0][2] / episodes
    for name, n, steps, seconds in rows:
        rate = steps / seconds
        print(f"| {name} | {rate:.1f} | {3600 * rate / steps_per_episode:.0f} | {rate / base:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="RLMBA-AVDigits-v0")
    parser.add_argument("--episodes", type=int, default=3, help="timed AV-Digits episodes (table 1)")
    parser.add_argument("--device", default=None, help="only this device (default: cpu, and cuda when present)")
    parser.add_argument("--sizes", nargs="*", default=list(DEFAULT_SIZES), help="pool sizes N (tables 2, 3)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16"),
                        help="storage dtype of the synthetic features")
    parser.add_argument("--precision", nargs="*", default=["float32", "bfloat16"],
                        choices=("float32", "bfloat16"), help="env precision(s) of tables 2 and 3")
    parser.add_argument("--n-envs", type=int, default=8, help="envs of the vectorised runs (table 4)")
    parser.add_argument("--vector-episodes", type=int, default=1)
    parser.add_argument("--skip-avdigits", action="store_true")
    parser.add_argument("--skip-vector", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--worker", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.worker is not None:
        print("RESULT " + json.dumps(pool_worker(int(args.worker), args.device or "cpu", args.dtype,
                                                 args.precision[0])))
        return

    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"# rlmba speed: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, devices {devices}")
    started = time.perf_counter()
    if not args.skip_avdigits:
        for device in devices:
            avdigits_table(args.env_id, args.episodes, device)
    results = []
    for size in args.sizes:
        for device in devices:
            for precision in args.precision:
                r = run_pool_worker(int(float(size)), device, args.dtype, precision, args.threads)
                if r is not None:
                    results.append(r)
    if results:
        pool_tables(results)
    if not args.skip_vector:
        for device in devices:
            vector_table(args.env_id, args.n_envs, device, args.vector_episodes)
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
