"""Random cases for the environment's hardening property, shared by ``tests/test_fuzz.py`` (a
few hundred examples) and ``benchmarks/fuzz.py`` (thousands).

The property: every case either fails at construction with a ``ValueError`` (``DatasetError``
is one) whose message names an argument that was drawn invalid, or plays an episode to its end
with finite rewards, finite info metrics and observations inside their spaces; a bad input to
``reset``, ``step`` or ``action_masks`` on a built env raises a ``ValueError``/``RuntimeError``
naming it and leaves the env as it was.

A case is drawn by :func:`cases`: a small random dataset (2-3 modalities of 1-5 columns, 2-4
classes, features across many orders of magnitude, constant columns and duplicated rows, float16
to float64), a protocol up to the edge where it labels the whole pool, env arguments each valid
or (with some probability) invalid, reset arguments and a sequence of actions mixing allowed,
masked, out-of-range and non-integer ones. :func:`run_case` plays it and returns an
:class:`Outcome`: ``ok``/``refused`` pass; ``crash``, ``silent_nan``, ``outside_space``,
``unnamed_error``, ``accepted_invalid`` and ``false_refusal`` are failures.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import strategies as st

import rlmba_env  # noqa: F401  (registers the env ids)
from rlmba_env.data.dataset import MultimodalDataset
from rlmba_env.env import MultimodalALEnv

FAILURES = ("crash", "silent_nan", "outside_space", "unnamed_error", "accepted_invalid", "false_refusal")
NAN = float("nan")
INF = float("inf")

# Per argument: valid values and invalid ones. An argument is drawn invalid with probability
# INVALID_RATE, so most cases reach an episode and many still exercise one bad argument.
INVALID_RATE = 0.03
TINY_LEARNER = {"epochs": st.integers(1, 4), "warm_epochs": st.integers(1, 3), "hidden": st.integers(1, 8),
                "dropout": st.floats(0, 0.9), "lr": st.floats(1e-4, 0.1), "weight_decay": st.floats(0, 0.1),
                "kl_anneal_epochs": st.integers(0, 5), "batch_size": st.none() | st.integers(1, 16),
                "fusion": st.sampled_from(["efda", "ds", "geometric"]), "warm_start": st.booleans(),
                "fused_loss_weight": st.floats(0, 2), "kl_weight": st.floats(0, 2),
                "evidence": st.sampled_from(["exp", "softplus"])}
BAD_LEARNER_FIELDS = {
    "epochs": [0, -5, 1.5, True, None], "warm_epochs": [0, -1, 2.5], "hidden": [0, -3, 2.0],
    "dropout": [-0.1, 1.0, NAN], "lr": [0.0, -1.0, NAN, INF], "weight_decay": [-1.0, NAN],
    "kl_anneal_epochs": [-1], "batch_size": [0, -2, 1.5], "fusion": ["sum", None],
    "warm_start": ["yes", 1], "fused_loss_weight": [-1.0, NAN], "kl_weight": [-0.5, NAN, INF, "1"],
    "evidence": ["relu", None],
}
ENV_ARGS = {
    "reward": (st.sampled_from(["gain", "absolute", "relative"]), ["score", None, 1]),
    "balance_weight": (st.floats(-1, 1), [NAN, INF, "0.1", None]),
    "kappa": (st.integers(1, 4), [0, -1, True, 1.5, "5"]),
    "beta": (st.floats(0, 5), [NAN, -1.0, INF]),
    "tau": (st.floats(1e-3, 10), [0.0, -0.1, NAN, INF]),
    "epsilon": (st.floats(0, 0.99), [1.0, 2.0, -0.1, NAN]),
    "kmeans_iterations": (st.integers(0, 4), [-3, 1.5, True]),
    "device": (st.just("cpu"), ["gpu", 3, "cuda:99"]),
    "precision": (st.sampled_from(["float32", "bfloat16"]), ["float16", "fp32"]),
    "render_mode": (st.sampled_from([None, "ansi"]), ["human", "rgb_array"]),
    "reference_strategies": (st.sampled_from([("random",), ("random", "entropy"), ["margin"]]),
                             ["random", ("nope",), 3]),
}


@dataclass
class Case:
    dataset: dict[str, Any]
    protocol: dict[str, Any]
    env_kwargs: dict[str, Any]
    invalid: set[str]
    """names an error must mention (one of them) when the case is refused at construction"""
    reset_seed: Any
    reset_options: Any
    reset_invalid: str | None
    actions: list[Any] = field(default_factory=list)

    def describe(self) -> str:
        d = self.dataset
        return (f"dataset(n={d['n']}, dims={d['dims']}, classes={d['k']}, dtype={d['dtype']}, "
                f"scale={d['scale']:.3g}, splits={d['sizes']}) protocol={self.protocol} "
                f"kwargs={self.env_kwargs} reset(seed={self.reset_seed!r}, options={self.reset_options!r}) "
                f"actions={self.actions}")


@dataclass
class Outcome:
    kind: str
    detail: str = ""


def rarely(p: float) -> st.SearchStrategy[bool]:
    """True with probability about ``p`` (hypothesis draws a float in [0, 1] near 0 far more often)."""
    return st.integers(0, round(1 / p) - 1).map(lambda v: v == 0)


def _maybe_invalid(draw, name, valid, invalid, bad: set[str]):
    if draw(rarely(INVALID_RATE)):
        bad.add(name)
        return draw(st.sampled_from(invalid))
    return draw(valid)


@st.composite
def cases(draw) -> Case:
    bad: set[str] = set()
    # -- dataset ------------------------------------------------------------------------------
    m = draw(st.integers(2, 3))
    dims = [draw(st.integers(1, 5)) for _ in range(m)]
    k = draw(st.integers(2, 4))
    n_val, n_test = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    n_pool = draw(st.integers(2, 24))
    dataset = {
        "n": n_pool + n_val + n_test, "dims": dims, "k": k, "sizes": (n_pool, n_val, n_test),
        "dtype": (dtype := draw(st.sampled_from(["float16", "float32", "float64"]))),
        "scale": 10.0 ** draw(st.integers(-6, 3 if dtype == "float16" else 12)),  # float16 ends at 65504
        "constant_columns": draw(st.booleans()), "duplicate_rows": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
        "bad_values": None,
    }
    if draw(rarely(INVALID_RATE / 2)):
        dataset["bad_values"] = draw(st.sampled_from(["nan", "inf", "huge"]))
        bad.add("features")
    # -- protocol, up to labelling the whole pool ---------------------------------------------
    rounds = draw(st.integers(1, 3))
    per_round = draw(st.integers(1, max(1, min(4, (n_pool - 1) // rounds))))
    room = n_pool - rounds * per_round
    initial = draw(st.integers(1, max(1, room))) if draw(st.booleans()) else max(1, room)  # the edge, often
    protocol = {"initial_labels": initial, "per_round": per_round, "rounds": rounds}
    if initial + rounds * per_round > n_pool:
        bad.add("initial_labels")  # a tiny pool cannot hold 1 + rounds labels: the protocol check names it
    if draw(rarely(INVALID_RATE)):
        key = draw(st.sampled_from(sorted(protocol)))
        protocol[key] = draw(st.sampled_from([0, -1, 1.5, True, n_pool + 1, None]))
        bad.add(key)
    # -- env arguments ------------------------------------------------------------------------
    kwargs: dict[str, Any] = {}
    for name, (valid, invalid) in ENV_ARGS.items():
        if draw(st.booleans()) or name in ("device",):
            kwargs[name] = _maybe_invalid(draw, name, valid, invalid, bad)
    learner = {name: draw(values) for name, values in TINY_LEARNER.items() if draw(st.booleans())}
    learner.setdefault("epochs", draw(TINY_LEARNER["epochs"]))
    learner.setdefault("hidden", draw(TINY_LEARNER["hidden"]))
    learner.setdefault("warm_epochs", 2)
    learner.setdefault("kl_anneal_epochs", 2)
    if draw(rarely(INVALID_RATE)):
        name = draw(st.sampled_from(sorted(BAD_LEARNER_FIELDS)))
        learner[name] = draw(st.sampled_from(BAD_LEARNER_FIELDS[name]))
        bad.add(name)
    kwargs["learner"] = learner
    if draw(rarely(INVALID_RATE / 2)):
        kwargs["learner"] = draw(st.sampled_from(["ds", 3, ["epochs"]]))
        bad.add("learner")
    # -- reset and actions --------------------------------------------------------------------
    reset_invalid = None
    seed = draw(st.none() | st.integers(0, 2**31))
    options = draw(st.none() | st.fixed_dictionaries({"episode_seed": st.integers(0, 2**62)}))
    if draw(rarely(INVALID_RATE * 2)):
        options = draw(st.sampled_from(["x", {"episode_seed": 1.7}, {"episode_seed": -1},
                                        {"episode_seed": None}, {"episode_seed": "3"}, {"episode_seed": True}]))
        reset_invalid = "options" if not isinstance(options, dict) else "episode_seed"
    k_cand = kwargs.get("kappa", 5) if isinstance(kwargs.get("kappa", 5), int) else 5
    bad_actions = st.sampled_from([-1, 10**9, 1.5, NAN, INF, -INF, "0", None, True, [0, 1], np.array([0, 1]),
                                   np.float64(0.5), np.array(2.7)])
    action = st.one_of(
        st.integers(0, 2 * max(1, k_cand) * 4).map(lambda a: ("pos", a)),   # allowed, masked or past K
        st.integers(0, 3).map(lambda a: ("allowed", a)),                    # the a-th allowed candidate
        bad_actions.map(lambda a: ("raw", a)),
        st.integers(0, 3).map(lambda a: ("float", float(a))),               # integral floats are picks
    )
    actions = draw(st.lists(action, max_size=6))
    return Case(dataset, protocol, kwargs, bad, seed, options, reset_invalid, actions)


def build_dataset(spec: dict[str, Any]) -> MultimodalDataset:
    rng = np.random.default_rng(spec["seed"])
    n, k = spec["n"], spec["k"]
    n_pool, n_val, n_test = spec["sizes"]
    labels = rng.integers(0, k, n)
    features = {}
    for i, d in enumerate(spec["dims"]):
        x = rng.standard_normal((n, d)) * spec["scale"] + rng.standard_normal(d) * spec["scale"] * 3
        if spec["constant_columns"]:
            x[:, 0] = spec["scale"]
        if spec["duplicate_rows"]:
            x[n // 2:] = x[0]
        with np.errstate(over="ignore"):
            features[f"m{i}"] = x.astype(spec["dtype"])
    if spec["bad_values"]:
        features["m0"][rng.integers(n), 0] = {"nan": np.nan, "inf": np.inf, "huge": 3e38}[spec["bad_values"]]
    order = rng.permutation(n)
    splits = {"pool": order[:n_pool], "val": order[n_pool:n_pool + n_val], "test": order[n_pool + n_val:]}
    return MultimodalDataset(features, labels, splits, [f"c{c}" for c in range(k)], name="fuzz")


def _names_one(message: str, names: set[str]) -> bool:
    return any(name in message for name in names)


def _finite_info(info: dict[str, Any]) -> bool:
    for key, value in info.items():
        if isinstance(value, (float, int, np.floating, np.integer)) and not math.isfinite(float(value)):
            return False
        if key == "reward_terms" and not all(math.isfinite(v) for v in value.values()):
            return False
    return True


def _check_obs(env, obs) -> Outcome | None:
    for key, value in obs.items():
        if not np.isfinite(np.asarray(value, dtype=np.float64)).all():
            return Outcome("silent_nan", f"obs[{key!r}] holds a non-finite value")
    if not env.observation_space.contains(obs):
        bad = [key for key in obs if not env.observation_space[key].contains(obs[key])]
        return Outcome("outside_space", f"obs{bad} outside the observation space")
    return None


def _resolve(action, mask: np.ndarray):
    kind, value = action
    allowed = np.flatnonzero(mask)
    if kind == "allowed":
        return int(allowed[value % len(allowed)]) if len(allowed) else 0, True
    if kind == "pos":
        return value, 0 <= value < len(mask) and bool(mask[value])
    if kind == "float":
        return value, 0 <= value < len(mask) and bool(mask[int(value)])
    return value, False


def run_case(case: Case) -> Outcome:
    """Build, reset and play ``case``; the :class:`Outcome` says whether the property held."""
    with tempfile.TemporaryDirectory() as cache, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dataset = build_dataset(case.dataset)
            kwargs = dict(case.env_kwargs)
            if kwargs.get("reward") == "relative":
                kwargs["reference_cache"] = cache  # never the user's data root
            env = MultimodalALEnv(dataset, case.protocol, **kwargs)
        except (ValueError, TypeError) as e:
            # TypeError: a wrong-typed argument is a bad input too, but the error must still name it
            message = f"{type(e).__name__}: {e}"
            if not case.invalid:
                return Outcome("false_refusal", message)
            if not isinstance(e, ValueError):
                return Outcome("crash", message)
            if not _names_one(str(e), case.invalid):
                return Outcome("unnamed_error", f"{message} (drawn invalid: {sorted(case.invalid)})")
            return Outcome("refused")
        except Exception as e:  # noqa: BLE001 - anything else is a crash by definition
            return Outcome("crash", f"construction: {type(e).__name__}: {e}")
        if case.invalid:
            return Outcome("accepted_invalid", f"built an env despite invalid {sorted(case.invalid)}")
        try:
            return _play(env, case)
        except Exception as e:  # noqa: BLE001
            return Outcome("crash", f"{type(e).__name__}: {e}")


def _play(env: MultimodalALEnv, case: Case) -> Outcome:
    try:
        env.action_masks()
        return Outcome("crash", "action_masks() before reset() returned instead of raising")
    except RuntimeError as e:
        if "reset" not in str(e):
            return Outcome("unnamed_error", f"action_masks() before reset: {e}")
    if case.reset_invalid:
        try:
            env.reset(seed=case.reset_seed, options=case.reset_options)
            return Outcome("accepted_invalid", f"reset(options={case.reset_options!r}) was accepted")
        except ValueError as e:
            if case.reset_invalid not in str(e):
                return Outcome("unnamed_error", f"reset(options={case.reset_options!r}): {e}")
        options = None
    else:
        options = case.reset_options
    obs, info = env.reset(seed=case.reset_seed, options=options)
    if (bad := _check_obs(env, obs)) or not _finite_info(info) and (bad := Outcome("silent_nan", "reset info")):
        return bad
    actions = list(case.actions)
    terminated, steps = False, 0
    limit = env.protocol.rounds * env.protocol.per_round
    while not terminated:
        mask = env.action_masks()
        action, allowed = _resolve(actions.pop(0), mask) if actions else (int(np.flatnonzero(mask)[0]), True)
        if not allowed:
            try:
                env.step(action)
                return Outcome("accepted_invalid", f"step({action!r}) with mask {mask.astype(int).tolist()}")
            except ValueError as e:
                if not any(word in str(e) for word in ("action", "candidate")):
                    return Outcome("unnamed_error", f"step({action!r}): {e}")
            if not np.array_equal(env.action_masks(), mask):
                return Outcome("crash", f"a refused step({action!r}) changed the mask")
            continue
        obs, reward, terminated, truncated, info = env.step(action)
        steps += 1
        if not math.isfinite(reward):
            return Outcome("silent_nan", f"reward {reward} at step {steps}")
        if (bad := _check_obs(env, obs)) or not _finite_info(info) and (bad := Outcome("silent_nan", f"info at step {steps}")):
            return bad
        if truncated or steps > limit:
            return Outcome("crash", f"episode did not terminate after {steps} picks")
    if steps != limit or info["labeled"] != env.protocol.total_labels:
        return Outcome("crash", f"episode ended after {steps} picks, {info['labeled']} labels")
    try:
        env.step(0)
        return Outcome("accepted_invalid", "step() after the episode ended")
    except RuntimeError:
        pass
    if env.render_mode == "ansi" and not isinstance(env.render(), str):
        return Outcome("crash", "render() returned no text")
    return Outcome("ok")
