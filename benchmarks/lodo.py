"""Leave-one-dataset-out (LODO) evaluation of the learned selection policy on the development suite.

    python benchmarks/lodo.py --stage baselines     # classic strategies x datasets x seeds
    python benchmarks/lodo.py --stage train         # one policy per held-out dataset
    python benchmarks/lodo.py --stage policies      # each policy on the dataset it never saw
    python benchmarks/lodo.py --stage report        # tables and the rliable aggregate
    python benchmarks/lodo.py --stage search        # linear candidate scores on training seeds
    python benchmarks/lodo.py --stage ship          # the search's choice over every env

For each of the nine development datasets a policy is trained without it, on the other eight
plus AV-Digits and Synthetic (``--extra``): behaviour cloning (:mod:`agents.imitation`) of the
teacher rule that scored the best mean normalised AULC over the fold's training development
datasets (among ``--teachers``; measured by the ``baselines`` stage, so the held-out dataset's
results never choose its teacher), optionally followed by REINFORCE episodes over the training
suite. With ``--method lookahead`` the fold's policy is instead the linear candidate scorer
fitted to one-step look-ahead gains on the fold's training datasets (:mod:`agents.lookahead`;
the look-ahead rounds are cached per dataset under ``lookahead/``). With ``--method search``
it is the candidate of :data:`agents.policy_search.CANDIDATES` (linear scores around margin)
with the best mean AULC difference to margin over the fold's training envs, measured by the
``search`` stage on the training seeds ``--search-seeds`` (episodes under
``search/<env>/episodes/``, the candidates' checkpoints under ``search/candidates/``): direct
policy search on the objective itself. With ``--refine`` a second round adds, per fold,
scaled and combined versions of the fold's best first-round candidates
(:func:`agents.policy_search.refinements`). The held-out dataset is
then played by that policy, greedy and frozen, on the same seeds as the strategies.

The report normalises each dataset's AULC between random (0) and the best classic strategy
(1), aggregates across datasets with rliable (IQM with 95% stratified-bootstrap intervals,
Agarwal et al. 2021) and gives the probability of improvement of each agent over margin.
Every stage is resumable: an (agent, dataset, seed) episode already written is never rerun.
Everything lands under ``--out-dir`` (default ``runs/lodo``):
``<dataset>/episodes/<agent>__seed<seed>.csv``, ``policies/<dataset>.pt``, ``lodo.md``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import tyro

import rlmba_env  # noqa: F401  (registers the env ids)
from agents.evaluate import episode_file, load_agent, read_rows, write_rows_atomically
from agents.policy_search import (CANDIDATES, REFERENCE, candidate_weights, choose_candidate, finalists, refinements,
                                  weight_vector)
from agents.summary import aulc
from agents.suite import make_suite_env, parse_spec
from rlmba_env.data.suite import suite_names

TEACHERS = {"margin": "margin_rank", "rlmba-score": "score_rank", "coreset": "proposed_kcenter",
            "random": "proposed_random"}
"""teacher strategy -> the candidate column whose argmax plays it within the portfolio"""


@dataclass
class Args:
    stage: str = "report"
    """``baselines``, ``search``, ``ship`` (the search's choice over every env), ``train``,
    ``policies`` or ``report``"""
    out_dir: str = "runs/lodo"
    """output folder"""
    datasets: tuple[str, ...] = tuple(suite_names())
    """held-out development datasets"""
    extra: tuple[str, ...] = ("RLMBA-AVDigits-v0", "RLMBA-Synthetic-v0")
    """env specs added to every fold's training suite"""
    strategies: tuple[str, ...] = ("random", "margin", "coreset", "rlmba-score-paper=rlmba-score@paper", "rlmba-score")
    """classic strategies run by the ``baselines`` stage: ``[LABEL=]NAME[@SCORE]`` stores NAME
    as LABEL, played in an env with ``score=SCORE`` (e.g. the paper's q for rlmba-score)"""
    seeds: tuple[int, ...] = (20000, 20001, 20002, 20003, 20004)
    """evaluation episode seeds"""
    teachers: tuple[str, ...] = ("margin", "rlmba-score")
    """strategies a fold may clone (see ``TEACHERS``)"""
    teacher_episodes: int = 1
    """teacher episodes per training env spec"""
    bc_epochs: int = 40
    """behaviour-cloning epochs"""
    pg_episodes: int = 0
    """REINFORCE episodes over the training suite after cloning (0: cloning only)"""
    method: str = "clone"
    """``clone``: behaviour cloning of the fold's best teacher rule; ``lookahead``: the linear
    scorer fitted to one-step look-ahead gains on the fold's training datasets
    (:mod:`agents.lookahead`); ``search``: the fold's best linear candidate score of the
    ``search`` stage (:mod:`agents.policy_search`)"""
    lookahead_episodes: int = 2
    """look-ahead episodes per training env spec (seeds 1000, 1001, ...; behaviour margin on
    even, the random proposer on odd episodes)"""
    lookahead_random: int = 10
    """uniform candidate batches per look-ahead round, next to the proposers' batches"""
    ridges: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    """ridge penalties of the look-ahead regression (on standardised columns); each fold takes
    the one with the best leave-one-dataset-out selected gain over its own training datasets"""
    prior: str = ""
    """candidate column the look-ahead regression shrinks towards (e.g. ``margin_rank``: a large
    penalty plays margin sampling); empty: shrink towards zero"""
    interactions: tuple[str, ...] = ()
    """round-state entries (``rlmba_env.observation.STATE_ENTRIES``, e.g. ``val_top1
    class_coverage``) crossed with the candidate columns in the look-ahead regression: the fold's
    scorer is then an :class:`~agents.networks.BilinearScorer` whose rule changes with them"""
    search_seeds: tuple[int, ...] = (1000, 1001)
    """training episode seeds of the ``search`` stage (never the evaluation ``--seeds``)"""
    candidates: tuple[str, ...] = tuple(CANDIDATES)
    """linear candidate scores the ``search`` stage plays and ``--method search`` chooses among
    (see :func:`agents.policy_search.candidate_weights`)"""
    refine: bool = False
    """a second search round: per fold, :func:`agents.policy_search.refinements` of its
    first-round scores over its training envs; the ``search`` stage plays every fold's, and
    ``--method search`` chooses among ``--candidates`` and the fold's own"""
    confirm: int = 0
    """successive halving (0: off): per fold, margin and its ``confirm`` best candidates of the
    rounds before are also played on ``--confirm-seeds``, and the fold chooses among them by
    the mean over every training seed"""
    confirm_seeds: tuple[int, ...] = (1002, 1003)
    """the finalists' extra training seeds (``--confirm``)"""
    policy_name: str = "rl-mba"
    """agent name of the fold policies in the episode files and the report"""
    env_kwargs: str = "{}"
    """keyword arguments for every env, as JSON"""
    reference: str = "margin"
    """agent the probability of improvement is measured against"""
    bootstrap_reps: int = 2000
    """bootstrap resamples of the IQM intervals"""


def _strategy_specs(specs) -> list[tuple[str, str, str | None]]:
    """``(label, strategy, score or None)`` of each ``[LABEL=]NAME[@SCORE]``."""
    out = []
    for spec in specs:
        label, _, rest = spec.rpartition("=") if "=" in spec else ("", "", spec)
        name, _, score = rest.partition("@")
        out.append((label or spec, name, score or None))
    return out


def run_baselines(args: Args, out: Path) -> None:
    """Every strategy on every held-out dataset and seed, seed-major so that partial results
    cover every dataset."""
    kwargs = json.loads(args.env_kwargs)
    for seed in args.seeds:
        for name in args.datasets:
            envs = {}
            for label, strategy, score in _strategy_specs(args.strategies):
                path = episode_file(out / name, label, seed)
                if path.is_file():
                    continue
                if score not in envs:
                    envs[score] = gym.make("RLMBA-DevSuite-v0", name=name,
                                           **{**kwargs, **({"score": score} if score else {})})
                env = envs[score]
                agent = load_agent(strategy, "cpu")
                start = time.perf_counter()
                rows = [{"agent": label, "seed": seed, **r} for r in agent.play(env, seed)]
                write_rows_atomically(path, rows)
                print(f"{name} {label} seed {seed}: AULC {episode_aulc(rows):.3f} "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)


def episode_aulc(rows) -> float:
    return float(aulc([r["labeled"] for r in rows], [r["test_top1"] for r in rows]))


def aulc_table(out: Path, datasets, seeds) -> dict[str, dict[str, np.ndarray]]:
    """dataset -> agent -> AULC per seed, for the (agent, seed) pairs present on every seed."""
    table = {}
    for name in datasets:
        found = {}
        for path in sorted((out / name / "episodes").glob("*__seed*.csv")):
            agent, _, seed = path.stem.rpartition("__seed")
            if int(seed) in seeds:
                found.setdefault(agent, {})[int(seed)] = episode_aulc(read_rows(path))
        table[name] = {a: np.array([v[s] for s in seeds if s in v]) for a, v in found.items()}
    return table


def normalised(table, strategies) -> dict[str, dict[str, np.ndarray]]:
    """AULC scaled per dataset: random's mean -> 0, the best strategy's mean -> 1."""
    result = {}
    for name, agents in table.items():
        present = [s for s in strategies if s in agents and agents[s].size]
        if "random" not in present:
            continue
        lo = agents["random"].mean()
        hi = max(agents[s].mean() for s in present)
        span = hi - lo if hi > lo else 1.0
        result[name] = {a: (v - lo) / span for a, v in agents.items()}
    return result


def choose_teacher(args: Args, held_out: str, table) -> str:
    """The teacher with the best mean normalised AULC over the fold's training datasets."""
    labels = [label for label, _, _ in _strategy_specs(args.strategies)]
    norm = normalised({n: t for n, t in table.items() if n != held_out}, labels)
    scores = {t: np.mean([norm[n][t].mean() for n in norm if t in norm[n]]) for t in args.teachers}
    return max(scores, key=lambda t: (scores[t], -args.teachers.index(t)))


def train_fold(args: Args, held_out: str, teacher: str, out: Path) -> Path:
    """Clone ``teacher`` over the fold's training suite (and run REINFORCE episodes); save."""
    from agents.imitation import clone, collect
    from agents.reinforce import ReinforceAgent

    kwargs = json.loads(args.env_kwargs)
    specs = [parse_spec(f"RLMBA-DevSuite-v0:{n}") for n in suite_names() if n != held_out]
    specs += [parse_spec(s) for s in args.extra]
    samples = []
    for i, spec in enumerate(specs):
        cache = out / "teacher" / f"{spec.label}__{teacher}.pt"
        if cache.is_file():
            part = torch.load(cache, weights_only=False)
        else:
            env = make_suite_env(spec, **kwargs)
            part = collect(env, TEACHERS[teacher], [1000 + k for k in range(args.teacher_episodes)])
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save(part, cache)
        samples += part
    env = make_suite_env(specs[0], **kwargs)
    agent = ReinforceAgent.from_env(env, seed=0)
    losses = clone(agent, samples, epochs=args.bc_epochs)
    if args.pg_episodes:
        rng = np.random.default_rng(0)
        for e in range(args.pg_episodes):
            spec = specs[int(rng.integers(len(specs)))]
            agent.run_episode(make_suite_env(spec, **kwargs), learn=True, seed=2000 + e)
    path = out / "policies" / f"{held_out}.pt"
    agent.save(path)
    (path.with_suffix(".json")).write_text(json.dumps(
        {"held_out": held_out, "teacher": teacher, "bc_loss": losses[-1], "samples": len(samples),
         "suite": [s.label for s in specs], "pg_episodes": args.pg_episodes}, indent=1))
    print(f"fold {held_out}: teacher {teacher}, {len(samples)} picks, BC loss {losses[-1]:.3f}", flush=True)
    return path


def lookahead_samples(args: Args, spec, out: Path) -> list:
    """The look-ahead rounds of one training env spec (cached: they do not depend on the fold)."""
    from agents.lookahead import collect, load_samples, save_samples

    kwargs = json.loads(args.env_kwargs)
    samples = []
    for k in range(args.lookahead_episodes):
        seed = 1000 + k
        cache = out / "lookahead" / f"{spec.label}__{seed}.npz"
        if not cache.is_file():
            env = make_suite_env(spec, **kwargs)
            start = time.perf_counter()
            part = collect(env, [seed], n_random=args.lookahead_random,
                           behaviour="margin_rank" if k % 2 == 0 else "proposed_random", rng_seed=seed)
            cache.parent.mkdir(parents=True, exist_ok=True)
            save_samples(cache, part)
            print(f"look-ahead {spec.label} seed {seed}: {len(part)} rounds "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
        samples += load_samples(cache)
    return samples


def train_lookahead_fold(args: Args, held_out: str, out: Path) -> Path:
    """Fit the linear look-ahead scorer on the fold's training suite (never ``held_out``) and
    save it as a REINFORCE checkpoint."""
    from agents.lookahead import (bilinear_agent, choose_ridge, fit_linear, linear_agent, scored_columns,
                                  with_interactions)
    from rlmba_env.observation import STATE_ENTRIES

    kwargs = json.loads(args.env_kwargs)
    specs = [parse_spec(f"RLMBA-DevSuite-v0:{n}") for n in suite_names() if n != held_out]
    specs += [parse_spec(s) for s in args.extra]
    samples = [r for spec in specs for r in lookahead_samples(args, spec, out)]
    env = make_suite_env(specs[0], **kwargs)
    all_columns, keep = scored_columns(env)
    columns = [all_columns[j] for j in keep]
    terms = [STATE_ENTRIES.index(e) for e in args.interactions]
    width = 1 + len(terms)
    if terms:
        samples = with_interactions(samples, terms)
        columns = [f"{c}*{t}" for c in columns for t in ("1", *args.interactions)]
    prior = columns.index(args.prior if not terms else f"{args.prior}*1") if args.prior else None
    ridge, cv = choose_ridge(samples, args.ridges, prior)
    weights = fit_linear(samples, ridge, prior)
    agent = bilinear_agent(env, weights, terms) if terms else linear_agent(env, weights)
    path = out / "policies" / f"{held_out}.pt"
    agent.save(path)
    (path.with_suffix(".json")).write_text(json.dumps(
        {"held_out": held_out, "teacher": "lookahead", "rounds": len(samples), "ridge": ridge, "prior": args.prior,
         "interactions": list(args.interactions), "width": width,
         "ridge_cv": {str(k): v for k, v in cv.items()},
         "weights": dict(zip(columns, map(float, weights))), "suite": [s.label for s in specs]}, indent=1))
    print(f"fold {held_out}: look-ahead scorer from {len(samples)} rounds, ridge {ridge}", flush=True)
    return path


SHIP = "all-datasets"
"""fold name of the search over every search env (no dataset held out): ``--stage ship`` writes
its choice to ``policies/all-datasets.pt``, the policy to ship"""


def _search_specs(args: Args) -> list:
    """The env specs the search plays: every development dataset and ``--extra``."""
    return [parse_spec(f"RLMBA-DevSuite-v0:{n}") for n in suite_names()] + [parse_spec(s) for s in args.extra]


def _search_folder(out: Path, spec) -> Path:
    return out / "search" / (spec.name or spec.env_id)


def candidate_checkpoint(out: Path, name: str, env) -> Path:
    """The checkpoint of candidate ``name`` (:func:`agents.policy_search.candidate_weights`),
    written once, with its weights in a ``.json`` next to it; a candidate whose weights changed
    since is refused, so that its cached episodes are never mixed with another rule's."""
    from agents.lookahead import bilinear_agent, scored_columns

    weights = candidate_weights(name)
    path = out / "search" / "candidates" / f"{name}.pt"
    meta = path.with_suffix(".json")
    if path.is_file():
        written = json.loads(meta.read_text())["weights"]
        if written != weights:
            raise ValueError(f"candidate {name!r} now has weights {weights}, but {meta} was written with "
                             f"{written}; rename the candidate or use another --out-dir")
        return path
    all_columns, keep = scored_columns(env)
    # a BilinearScorer with no state terms: logit = w . x exactly, ranked once per round
    bilinear_agent(env, weight_vector(weights, [all_columns[j] for j in keep]), ()).save(path)
    meta.write_text(json.dumps({"name": name, "weights": weights}, indent=1))
    return path


def play_candidates(args: Args, out: Path, names, seeds) -> None:
    """Candidates ``names`` on every search env and training seed of ``seeds``, seed-major
    (partial results cover every env); episodes already written are kept."""
    kwargs = json.loads(args.env_kwargs)
    for seed in seeds:
        for spec in _search_specs(args):
            env = None
            for name in names:
                path = episode_file(_search_folder(out, spec), name, seed)
                if path.is_file():
                    continue
                env = env or make_suite_env(spec, **kwargs)
                agent = load_agent(f"{name}={candidate_checkpoint(out, name, env)}", "cpu")
                start = time.perf_counter()
                rows = [{"agent": name, "seed": seed, **r} for r in agent.play(env, seed)]
                write_rows_atomically(path, rows)
                print(f"search {spec.label} {name} seed {seed}: AULC {episode_aulc(rows):.3f} "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)


def fold_refinements(args: Args, out: Path, held_out: str) -> list[str]:
    """The second-round candidates of ``held_out``'s fold (none without ``--refine``), from the
    first round's scores over the fold's training envs."""
    if not args.refine:
        return []
    _, scores = choose_candidate(search_table(args, out, held_out, args.candidates), held_out, args.candidates)
    return refinements(scores)


def fold_candidates(args: Args, out: Path, held_out: str) -> list[str]:
    """The candidates of ``held_out``'s fold before ``--confirm``: ``--candidates`` and its
    ``--refine`` ones."""
    return list(args.candidates) + [c for c in fold_refinements(args, out, held_out) if c not in args.candidates]


def fold_scores(args: Args, out: Path, held_out: str) -> dict[str, float]:
    """Mean AULC difference to margin over ``held_out``'s training envs and the search seeds of
    every candidate of :func:`fold_candidates`."""
    candidates = fold_candidates(args, out, held_out)
    return choose_candidate(search_table(args, out, held_out, candidates), held_out, candidates)[1]


def run_search(args: Args, out: Path) -> None:
    """Every candidate of ``--candidates`` on every development dataset and ``--extra`` env, on
    the training seeds ``--search-seeds``; with ``--refine`` then every fold's second-round
    candidates (:func:`agents.policy_search.refinements`) on the same envs and seeds."""
    for flag, seeds in (("--search-seeds", args.search_seeds), ("--confirm-seeds", args.confirm_seeds)):
        overlap = sorted(set(seeds) & set(args.seeds))
        if overlap:
            raise ValueError(f"{flag} {list(seeds)} share {overlap} with the evaluation --seeds {list(args.seeds)}; "
                             "the search must not see evaluation episodes")
    if args.confirm and set(args.confirm_seeds) & set(args.search_seeds):
        raise ValueError(f"--confirm-seeds {list(args.confirm_seeds)} must be seeds besides --search-seeds "
                         f"{list(args.search_seeds)}")
    for name in args.candidates:
        candidate_weights(name)  # one clear error for an unknown name before any episode
    play_candidates(args, out, args.candidates, args.search_seeds)
    folds = (*args.datasets, SHIP)
    if args.refine:
        second = [c for name in folds for c in fold_refinements(args, out, name)]
        play_candidates(args, out, [c for c in dict.fromkeys(second) if c not in args.candidates], args.search_seeds)
    if args.confirm:
        last = [c for name in folds for c in finalists(fold_scores(args, out, name), args.confirm)]
        play_candidates(args, out, list(dict.fromkeys(last)), args.confirm_seeds)


def search_table(args: Args, out: Path, held_out: str, candidates, seeds=None) -> dict[str, dict[str, np.ndarray]]:
    """Training env -> candidate -> AULC per training seed (``seeds``, default the search seeds),
    over the search envs except ``held_out`` (whose episodes are never opened); every episode
    must be there."""
    seeds = args.search_seeds if seeds is None else seeds
    folders = [_search_folder(out, s) for s in _search_specs(args) if (s.name or s.env_id) != held_out]
    missing = [str(episode_file(f, c, seed)) for f in folders for c in candidates for seed in seeds
               if not episode_file(f, c, seed).is_file()]
    if missing:
        raise FileNotFoundError(f"--method search: {len(missing)} search episodes are missing (e.g. {missing[0]}); "
                                "run --stage search with the same --candidates, --search-seeds, --extra and "
                                "--refine first")
    table = {}
    for folder in folders:
        table[folder.name] = {c: np.array([episode_aulc(read_rows(episode_file(folder, c, seed)))
                                           for seed in seeds]) for c in candidates}
    return table


def train_search_fold(args: Args, held_out: str, out: Path) -> Path:
    """The fold's policy: the candidate (of :func:`fold_candidates`, or with ``--confirm`` of
    their finalists, scored on the confirmation seeds too) with the best mean AULC difference to
    margin over the search envs except ``held_out``
    (:func:`agents.policy_search.choose_candidate`), its checkpoint copied to
    ``policies/<held_out>.pt``."""
    candidates, seeds = fold_candidates(args, out, held_out), list(args.search_seeds)
    if args.confirm:
        candidates = finalists(fold_scores(args, out, held_out), args.confirm)
        seeds += list(args.confirm_seeds)
    table = search_table(args, out, held_out, candidates, seeds)
    best, scores = choose_candidate(table, held_out, candidates)
    path = out / "policies" / f"{held_out}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "search" / "candidates" / f"{best}.pt", path)
    path.with_suffix(".json").write_text(json.dumps(
        {"held_out": held_out, "teacher": f"search:{best}", "weights": candidate_weights(best),
         "mean_aulc_minus_" + REFERENCE: scores, "suite": sorted(table), "search_seeds": seeds},
        indent=1))
    print(f"fold {held_out}: {best} ({scores[best]:+.4f} AULC over {REFERENCE} on {len(table)} envs)", flush=True)
    return path


def run_policies(args: Args, out: Path) -> None:
    kwargs = json.loads(args.env_kwargs)
    for seed in args.seeds:
        for name in args.datasets:
            path = episode_file(out / name, args.policy_name, seed)
            policy = out / "policies" / f"{name}.pt"
            if path.is_file() or not policy.is_file():
                continue
            env = gym.make("RLMBA-DevSuite-v0", name=name, **kwargs)
            agent = load_agent(f"{args.policy_name}={policy}", "cpu")
            rows = [{"agent": args.policy_name, "seed": seed, **r} for r in agent.play(env, seed)]
            write_rows_atomically(path, rows)
            print(f"{name} {args.policy_name} seed {seed}: AULC {episode_aulc(rows):.3f}", flush=True)


def report(args: Args, out: Path) -> str:
    from rliable import library as rly
    from rliable import metrics

    table = aulc_table(out, args.datasets, args.seeds)
    labels = [label for label, _, _ in _strategy_specs(args.strategies)]
    agents = labels + [args.policy_name]
    lines = ["| dataset | " + " | ".join(agents) + " |", "|---|" + "---|" * len(agents)]
    for name in args.datasets:
        row = table.get(name, {})
        best = max((row[a].mean() for a in agents if a in row and row[a].size), default=np.nan)
        cells = []
        for a in agents:
            v = row.get(a)
            if v is None or not v.size:
                cells.append("-")
            else:
                text = f"{v.mean():.3f} ±{v.std():.3f} ({v.size})"
                cells.append(f"**{text}**" if v.mean() == best else text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    norm = normalised(table, labels)
    complete = [n for n in norm if all(a in norm[n] and norm[n][a].size == len(args.seeds) for a in agents)]
    lines += ["", f"Aggregate over the {len(complete)} datasets with every agent on all {len(args.seeds)} "
              f"seeds: {', '.join(complete) or 'none'}", ""]
    if complete:
        scores = {a: np.stack([norm[n][a] for n in complete], axis=1) for a in agents}  # (seeds, tasks)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            point, ci = rly.get_interval_estimates(
                scores, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=args.bootstrap_reps,
                random_state=np.random.RandomState(0))
        lines += ["| agent | IQM normalised AULC [95% CI] | P(improvement over " + args.reference + ") | "
                  f"datasets >= {args.reference} |", "|---|---|---|---|"]
        for a in agents:
            p = metrics.probability_of_improvement(scores[a], scores[args.reference])
            wins = sum(norm[n][a].mean() >= norm[n][args.reference].mean() for n in complete)
            lines.append(f"| {a} | {point[a][0]:.3f} [{ci[a][0, 0]:.3f}, {ci[a][1, 0]:.3f}] | {p:.3f} | "
                         f"{wins}/{len(complete)} |")
    teachers = {}
    for name in args.datasets:
        meta = out / "policies" / f"{name}.json"
        if meta.is_file():
            teachers[name] = json.loads(meta.read_text())["teacher"]
    if teachers:
        lines += ["", "Teacher of each fold: " + ", ".join(f"{n}: {t}" for n, t in teachers.items())]
    text = "\n".join(lines) + "\n"
    (out / "lodo.md").write_text(text)
    print(text)
    return text


def main(args: Args) -> None:
    torch.set_num_threads(1)
    out = Path(args.out_dir)
    if args.stage == "baselines":
        run_baselines(args, out)
    elif args.stage == "train":
        if args.method not in ("clone", "lookahead", "search"):
            raise ValueError(f"--method {args.method!r} is not allowed; choose clone, lookahead or search")
        from agents.lookahead import IGNORED_COLUMNS
        from rlmba_env.observation import CANDIDATE_COLUMNS
        scored = [c for c in CANDIDATE_COLUMNS if c not in IGNORED_COLUMNS]
        if args.prior and args.prior not in scored:
            raise ValueError(f"--prior {args.prior!r} is not a scored candidate column; choose one of {scored}")
        from rlmba_env.observation import STATE_ENTRIES
        unknown = [e for e in args.interactions if e not in STATE_ENTRIES]
        if unknown:
            raise ValueError(f"--interactions {unknown} are not state entries; choose from {list(STATE_ENTRIES)}")
        # the clone method's teachers are chosen on the evaluation episodes of the strategies
        table = aulc_table(out, args.datasets, args.seeds) if args.method == "clone" else {}
        for name in args.datasets:
            if not (out / "policies" / f"{name}.pt").is_file():
                if args.method == "lookahead":
                    train_lookahead_fold(args, name, out)
                elif args.method == "search":
                    train_search_fold(args, name, out)
                else:
                    train_fold(args, name, choose_teacher(args, name, table), out)
    elif args.stage == "search":
        run_search(args, out)
    elif args.stage == "ship":
        train_search_fold(args, SHIP, out)
    elif args.stage == "policies":
        run_policies(args, out)
    elif args.stage == "report":
        report(args, out)
    else:
        raise ValueError(f"--stage {args.stage!r} is not allowed; choose baselines, search, ship, train, policies or report")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main(tyro.cli(Args))
