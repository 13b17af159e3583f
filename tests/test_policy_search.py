"""Direct policy search over linear candidate scores (agents/policy_search.py, lodo.py --method search)."""

import json

import numpy as np
import pytest

from agents.evaluate import episode_file, write_rows_atomically
from agents.lookahead import linear_agent, scored_columns
from agents.policy_search import (CANDIDATES, REFERENCE, candidate_weights, choose_candidate, finalists, refinements,
                                  weight_vector)
from rlmba_env import MultimodalALEnv
from rlmba_env.data.suite import suite_names
from rlmba_env.data.synthetic import make_synthetic

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_env():
    dataset = make_synthetic(n_samples=240, n_classes=3, dims=4, val_per_class=5, seed=1)
    return MultimodalALEnv(dataset, {"initial_labels": 8, "per_round": 3, "rounds": 2},
                           learner={"epochs": 8, "hidden": 8})


def scored(env):
    columns, keep = scored_columns(env)
    return [columns[j] for j in keep]


def test_every_candidate_weighs_only_scored_columns_and_margin_is_margin_rank_alone():
    columns = scored(tiny_env())
    vectors = {name: weight_vector(w, columns) for name, w in CANDIDATES.items()}
    assert np.count_nonzero(vectors[REFERENCE]) == 1 and vectors[REFERENCE][columns.index("margin_rank")] == 1.0
    assert len({tuple(v) for v in vectors.values()}) == len(CANDIDATES)


def test_weight_vector_rejects_a_column_the_observation_does_not_score():
    with pytest.raises(ValueError, match=r"\['picked'\].*not scored candidate columns"):
        weight_vector({"picked": 1.0}, scored(tiny_env()))


def test_the_margin_candidate_picks_the_candidate_with_the_largest_margin_rank():
    env = tiny_env()
    obs, _ = env.reset(seed=0)
    agent = linear_agent(env, weight_vector(CANDIDATES[REFERENCE], scored(env)))
    logits = agent.logits(obs).numpy()
    allowed = obs["action_mask"].astype(bool)
    margin_rank = obs["candidates"][:, env.candidate_columns.index("margin_rank")]
    assert np.argmax(np.where(allowed, logits, -np.inf)) == np.argmax(np.where(allowed, margin_rank, -np.inf))


def test_choose_candidate_takes_the_best_mean_aulc_difference_to_margin_and_margin_on_ties():
    table = {"a": {"margin": np.array([0.5, 0.6]), "x": np.array([0.6, 0.7]), "y": np.array([0.5, 0.6])},
             "b": {"margin": np.array([0.4, 0.4]), "x": np.array([0.35, 0.35]), "y": np.array([0.4, 0.4])}}
    best, scores = choose_candidate(table, "none", ["x", "y", "margin"])
    assert best == "x" and scores["x"] == pytest.approx(0.025) and scores["margin"] == 0.0
    assert choose_candidate(table, "a", ["y", "margin"])[0] == "margin"


def test_choose_candidate_never_reads_the_held_out_entry():
    class Unreadable(dict):
        def __getitem__(self, key):
            raise AssertionError("the held-out dataset's results were read")

        __contains__ = __getitem__

    table = {"a": {"margin": np.array([0.5]), "x": np.array([0.4])}, "held": Unreadable()}
    assert choose_candidate(table, "held", ["x"])[0] == "margin"


def test_choose_candidate_rejects_a_candidate_without_episodes_on_a_training_dataset():
    table = {"a": {"margin": np.array([0.5])}, "b": {"margin": np.array([0.5]), "x": np.array([0.6])}}
    with pytest.raises(ValueError, match=r"'x' lacks the training-seed episodes of \['a'\]"):
        choose_candidate(table, "b", ["x"])


def write_episode(folder, agent, seed, top1):
    rows = [{"agent": agent, "seed": seed, "round": r, "labeled": 10 * (r + 1), "test_top1": top1} for r in range(2)]
    write_rows_atomically(episode_file(folder, agent, seed), rows)


def test_search_fold_chooses_on_the_other_datasets_without_opening_the_held_out_episodes(tmp_path):
    from benchmarks.lodo import Args, candidate_checkpoint, train_search_fold

    args = Args(out_dir=str(tmp_path), extra=(), candidates=("margin", "m+dist.1"), search_seeds=(1000,))
    env = tiny_env()
    for name in args.candidates:
        candidate_checkpoint(tmp_path, name, env)
    held_out = suite_names()[0]
    for name in suite_names()[1:]:
        write_episode(tmp_path / "search" / name, "margin", 1000, 0.6)
        write_episode(tmp_path / "search" / name, "m+dist.1", 1000, 0.5)
    for agent in args.candidates:  # unreadable as episodes: opening one fails
        path = episode_file(tmp_path / "search" / held_out, agent, 1000)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("agent,labeled,test_top1\nx,not a number,9\n")
    policy = train_search_fold(args, held_out, tmp_path)
    meta = json.loads(policy.with_suffix(".json").read_text())
    assert meta["teacher"] == "search:margin" and held_out not in meta["suite"]
    assert policy.read_bytes() == (tmp_path / "search" / "candidates" / "margin.pt").read_bytes()


def test_search_fold_refuses_missing_search_episodes_naming_the_stage_to_run(tmp_path):
    from benchmarks.lodo import Args, train_search_fold

    args = Args(out_dir=str(tmp_path), extra=(), candidates=("margin",), search_seeds=(1000,))
    with pytest.raises(FileNotFoundError, match="run --stage search"):
        train_search_fold(args, suite_names()[0], tmp_path)


def test_search_stage_refuses_training_seeds_that_are_evaluation_seeds(tmp_path):
    from benchmarks.lodo import Args, main

    with pytest.raises(ValueError, match=r"share \[20000\] with the evaluation"):
        main(Args(stage="search", out_dir=str(tmp_path), search_seeds=(1000, 20000)))


def test_a_candidate_whose_weights_changed_since_its_checkpoint_is_refused(tmp_path):
    from benchmarks.lodo import candidate_checkpoint

    env = tiny_env()
    path = candidate_checkpoint(tmp_path, "margin", env)
    path.with_suffix(".json").write_text(json.dumps({"name": "margin", "weights": {"margin_rank": 2.0}}))
    with pytest.raises(ValueError, match="rename the candidate or use another --out-dir"):
        candidate_checkpoint(tmp_path, "margin", env)


def test_candidate_weights_scale_or_add_the_weights_beside_margin():
    assert candidate_weights("m+dist.3*0.5") == {"margin_rank": 1.0, "labeled_distance_rank": 0.15}
    assert candidate_weights("m+dist.1&m+dens.1") == CANDIDATES["m+dist.1+dens.1"]
    with pytest.raises(ValueError, match="'nope' is not a candidate"):
        candidate_weights("m+dist.1&nope")


def test_refinements_scale_the_best_non_margin_candidate_and_combine_the_best_two():
    scores = {"margin": 0.0, "m+dist.1": -0.01, "m+score.3": 0.02, "m+dens.1": 0.01}
    assert refinements(scores) == ["m+score.3*0.5", "m+score.3*2", "m+score.3&m+dens.1"]


def test_refined_search_fold_chooses_among_its_own_second_round_candidates(tmp_path):
    from benchmarks.lodo import Args, candidate_checkpoint, train_search_fold

    args = Args(out_dir=str(tmp_path), extra=(), candidates=("margin", "m+dist.1", "m+dens.1"),
                search_seeds=(1000,), refine=True)
    aulcs = {"margin": 0.5, "m+dist.1": 0.55, "m+dens.1": 0.52, "m+dist.1*0.5": 0.53, "m+dist.1*2": 0.6,
             "m+dist.1&m+dens.1": 0.54}
    env = tiny_env()
    for name, top1 in aulcs.items():
        candidate_checkpoint(tmp_path, name, env)
        for dataset in suite_names()[1:]:
            write_episode(tmp_path / "search" / dataset, name, 1000, top1)
    meta = json.loads(train_search_fold(args, suite_names()[0], tmp_path).with_suffix(".json").read_text())
    assert meta["teacher"] == "search:m+dist.1*2" and set(meta["mean_aulc_minus_margin"]) == set(aulcs)


def test_ship_stage_chooses_over_every_search_env(tmp_path):
    from benchmarks.lodo import Args, candidate_checkpoint, main

    env = tiny_env()
    for name in ("margin", "m+dist.1"):
        candidate_checkpoint(tmp_path, name, env)
    for i, dataset in enumerate(suite_names()):
        write_episode(tmp_path / "search" / dataset, "margin", 1000, 0.5)
        # better than margin only on the first dataset, which a fold holding it out never sees
        write_episode(tmp_path / "search" / dataset, "m+dist.1", 1000, 0.9 if i == 0 else 0.49)
    main(Args(stage="ship", out_dir=str(tmp_path), extra=(), candidates=("margin", "m+dist.1"), search_seeds=(1000,)))
    meta = json.loads((tmp_path / "policies" / "all-datasets.json").read_text())
    assert meta["teacher"] == "search:m+dist.1" and meta["suite"] == sorted(suite_names())


def test_finalists_are_margin_and_the_k_best_others():
    assert finalists({"margin": 0.0, "a": 0.01, "b": 0.03, "c": -0.02}, 2) == ["margin", "b", "a"]


def test_confirmed_search_fold_chooses_among_its_finalists_by_every_training_seed(tmp_path):
    from benchmarks.lodo import Args, candidate_checkpoint, train_search_fold

    args = Args(out_dir=str(tmp_path), extra=(), candidates=("margin", "m+dist.1", "m+dens.1"),
                search_seeds=(1000,), confirm=1, confirm_seeds=(1002,))
    # m+dist.1 leads on the search seed, but not over both seeds; m+dens.1 is no finalist
    aulcs = {("margin", 1000): 0.5, ("m+dist.1", 1000): 0.6, ("m+dens.1", 1000): 0.55,
             ("margin", 1002): 0.5, ("m+dist.1", 1002): 0.3}
    env = tiny_env()
    for (name, seed), top1 in aulcs.items():
        candidate_checkpoint(tmp_path, name, env)
        for dataset in suite_names()[1:]:
            write_episode(tmp_path / "search" / dataset, name, seed, top1)
    meta = json.loads(train_search_fold(args, suite_names()[0], tmp_path).with_suffix(".json").read_text())
    assert meta["teacher"] == "search:margin" and meta["search_seeds"] == [1000, 1002]
    assert set(meta["mean_aulc_minus_margin"]) == {"margin", "m+dist.1"}
