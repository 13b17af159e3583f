"""The labeling loop: label store, bad inputs, crash safety, concurrency, Label Studio, and the
simulated annotator against the env."""

import csv
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from rlmba_env.data.dataset import DatasetError, MultimodalDataset
from rlmba_env.env import MultimodalALEnv
from rlmba_env.labeling import LabelingError, LabelingProject, LabelStore, PolicyChooser
from rlmba_env.labeling.simulate import SimulatedAnnotator, hide_labels
from rlmba_env.strategies import make_strategy, run_strategy_episode
from conftest import FAST_LEARNER, SMALL_PROTOCOL

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def hidden(tmp_path, small_dataset):
    cache, answers = hide_labels(small_dataset, tmp_path / "data")
    return cache, SimulatedAnnotator(answers)


def make_project(tmp_path, cache, seed=7, **kwargs):
    settings = dict(audit_split="val", initial_labels=SMALL_PROTOCOL["initial_labels"],
                    per_round=SMALL_PROTOCOL["per_round"], rounds=SMALL_PROTOCOL["rounds"], seed=seed,
                    learner=FAST_LEARNER)
    return LabelingProject.init(tmp_path / "project", cache, **{**settings, **kwargs})


def answer(project, annotator, batch, tmp_path):
    report = project.import_labels(annotator.answer_csv(batch.csv, tmp_path / f"answers-{batch.id}.csv"))
    assert report.committed == len(batch.rows) and not report.errors
    return report


def labeled_project(tmp_path, hidden):
    """A project whose audit and initial batches are labeled and whose first round batch is pending."""
    cache, annotator = hidden
    project = make_project(tmp_path, cache)
    for _ in range(2):
        answer(project, annotator, project.next(), tmp_path)
    return project, annotator, project.next("random")


def snapshot(project):
    return (project.store.labels(), project.store.pending(), len(project.store.batches()))


# -- cache format ----------------------------------------------------------------------------
def test_cache_accepts_unlabeled_rows_and_rejects_other_negative_labels(tmp_path, small_dataset):
    labels = small_dataset.labels.copy()
    labels[small_dataset.splits["pool"]] = -1
    ds = MultimodalDataset(small_dataset.features, labels, small_dataset.splits, small_dataset.classes)
    ds.save(tmp_path / "c")
    assert MultimodalDataset.load(tmp_path / "c").n_unlabeled == len(small_dataset.splits["pool"])
    labels[0] = -2
    with pytest.raises(DatasetError, match=r"labels\[0\] = -2 is out of range .* or -1 for unlabeled"):
        MultimodalDataset(small_dataset.features, labels, small_dataset.splits, small_dataset.classes)


@pytest.mark.parametrize("split", ["val", "test"])
def test_env_refuses_unlabeled_val_or_test_rows(small_dataset, split):
    labels = small_dataset.labels.copy()
    row = int(small_dataset.splits[split][3])
    labels[row] = -1
    ds = MultimodalDataset(small_dataset.features, labels, small_dataset.splits, small_dataset.classes)
    with pytest.raises(ValueError, match=f"{split} row {row} has no label"):
        MultimodalALEnv(ds, SMALL_PROTOCOL, learner=FAST_LEARNER)


def test_env_refuses_to_label_an_unlabeled_pool_row(small_dataset, one_torch_thread):
    env = MultimodalALEnv(small_dataset, SMALL_PROTOCOL, learner=FAST_LEARNER)
    env.reset(seed=0)
    rows = [int(r) for r in small_dataset.splits["pool"] if r not in env.labeled_rows][: env.budget]
    labels = small_dataset.labels.copy()
    labels[rows[0]] = -1
    ds = MultimodalDataset(small_dataset.features, labels, small_dataset.splits, small_dataset.classes)
    env = MultimodalALEnv(ds, SMALL_PROTOCOL, learner=FAST_LEARNER)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=f"row {rows[0]} has no label"):
        env.label(rows)


# -- reproducing the env ---------------------------------------------------------------------------
@pytest.mark.parametrize("agent", ["random", "margin"])
def test_simulated_annotator_reproduces_the_env_curve(tmp_path, hidden, small_dataset, agent, one_torch_thread):
    cache, annotator = hidden
    project = make_project(tmp_path, cache, seed=11)
    for _ in range(2 + SMALL_PROTOCOL["rounds"]):
        answer(project, annotator, project.next(agent), tmp_path)
    project.measure()
    curve = [(r["labeled"], r["test_top1"], r["audit_top1"]) for r in project.status()["rounds"]]
    env = MultimodalALEnv(small_dataset, SMALL_PROTOCOL, learner=FAST_LEARNER)
    episode = run_strategy_episode(env, make_strategy(agent), 11, rng_seed=11)
    assert curve == [(r["labeled"], r["test_top1"], r["val_top1"]) for r in episode]


def test_policy_batch_equals_the_env_steps_of_the_same_policy(tmp_path, hidden, small_dataset, one_torch_thread):
    def act(obs):  # a deterministic policy of the observation: the allowed candidate of least coverage
        score = obs["candidates"][:, -3] - 1e-3 * np.arange(len(obs["action_mask"]))
        return int(np.argmin(np.where(obs["action_mask"] == 1, score, np.inf)))

    cache, annotator = hidden
    project = make_project(tmp_path, cache, seed=4)
    for _ in range(2 + SMALL_PROTOCOL["rounds"]):
        answer(project, annotator, project.next(PolicyChooser("coverage", act)), tmp_path)
    project.measure()
    env = MultimodalALEnv(small_dataset, SMALL_PROTOCOL, learner=FAST_LEARNER)
    obs, info = env.reset(seed=4)
    curve, done = [info["test_top1"]], False
    while not done:
        obs, _, done, _, info = env.step(act(obs))
        if info["reward_terms"]:
            curve.append(info["test_top1"])
    assert [r["test_top1"] for r in project.status()["rounds"]] == curve


# -- bad inputs: one clear line each, nothing changed ----------------------------------------------
def write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", ["unknown id", "unknown class", "not pending", "already labeled", "conflict"])
def test_each_bad_answer_gives_one_line_and_changes_nothing(tmp_path, hidden, case, one_torch_thread):
    project, annotator, batch = labeled_project(tmp_path, hidden)
    pending_id = batch.item_ids[0]
    labeled_id = project._item_id[next(iter(project.store.labels()))]
    never = next(i for r, i in project._item_id.items() if r not in project.store.labels()
                 and r not in project.store.pending())
    c0, c1 = project.config.classes[:2]
    rows = {"unknown id": f"no-such-item,{c0}", "unknown class": f"{pending_id},zebra",
            "not pending": f"{never},{c0}", "already labeled": f"{labeled_id},{c0}",
            "conflict": f"{pending_id},{c0}\n{pending_id},{c1}"}[case]
    before = snapshot(project)
    report = project.import_labels(write(tmp_path / "bad.csv", "id,label\n" + rows + "\n"))
    assert report.committed == 0 and len(report.errors) == 1
    expected = {"unknown id": "unknown item id 'no-such-item'", "unknown class": "unknown class 'zebra'",
                "not pending": "not in a pending batch", "already labeled": "is already labeled",
                "conflict": "conflicting answers"}[case]
    assert expected in report.errors[0] and "line " in report.errors[0]
    assert snapshot(project) == before


@pytest.mark.parametrize("content,message", [
    ("item,answer\n1,0\n", "header with columns id,label"),
    ("[not json", "not valid JSON"),
    ('{"data": 1}', "JSON list of tasks"),
])
def test_unreadable_answer_file_is_one_error_and_changes_nothing(tmp_path, hidden, content, message, one_torch_thread):
    from rlmba_env.labeling import AnswerFileError

    project, _, _ = labeled_project(tmp_path, hidden)
    before = snapshot(project)
    path = write(tmp_path / ("bad.json" if "json" in message.lower() or "JSON" in message else "bad.csv"), content)
    with pytest.raises(AnswerFileError, match=message):
        project.import_labels(path)
    assert snapshot(project) == before


def test_strict_import_commits_nothing_when_one_row_is_invalid(tmp_path, hidden, one_torch_thread):
    project, annotator, batch = labeled_project(tmp_path, hidden)
    good = annotator.key[batch.item_ids[0]]
    text = f"id,label\n{batch.item_ids[0]},{good}\nno-such-item,{good}\n"
    before = snapshot(project)
    report = project.import_labels(write(tmp_path / "a.csv", text), strict=True)
    assert (report.committed, len(report.errors)) == (0, 1) and snapshot(project) == before
    report = project.import_labels(tmp_path / "a.csv")
    assert (report.committed, len(report.errors)) == (1, 1)
    assert project.store.labels()[batch.rows[0]] == project.config.classes.index(good)


def test_cli_prints_one_line_per_bad_row_and_exits_1(tmp_path, hidden, capsys, one_torch_thread):
    from agents.cli import main

    project, _, batch = labeled_project(tmp_path, hidden)
    before = snapshot(project)
    bad = write(tmp_path / "bad.csv", f"id,label\nnope,{project.config.classes[0]}\n{batch.item_ids[0]},zebra\n")
    assert main(["label", "import", str(project.dir), str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "'nope'" in err[0] and "'zebra'" in err[1]
    assert main(["label", "next", str(project.dir), "--agent", "no-such-agent"]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    assert snapshot(project) == before


def test_first_round_waits_for_the_audit_and_initial_labels(tmp_path, hidden):
    cache, _ = hidden
    project = make_project(tmp_path, cache)
    project.next(), project.next()
    before = snapshot(project)
    with pytest.raises(LabelingError, match="audit batch 1 have no label yet"):
        project.next()
    assert snapshot(project) == before


# -- crash safety, concurrency, backup ------------------------------------------------------------
def test_sigkill_during_import_leaves_all_or_none_of_the_file(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "label_kill.py"), "--kills", "5",
                          "--rows", "400", "--dir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                         timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "5 kills: 0 partial imports, 0 failed integrity checks" in out.stdout


def test_concurrent_next_never_propose_the_same_item(tmp_path, hidden, one_torch_thread):
    project, _, first = labeled_project(tmp_path, hidden)
    project.close()
    batches, errors = [], []

    def run():
        try:
            with LabelingProject(tmp_path / "project") as p:
                batches.append(p.next("random"))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    proposed = first.rows + batches[0].rows + batches[1].rows
    assert len(set(proposed)) == len(proposed) == 3 * SMALL_PROTOCOL["per_round"]


def test_backup_is_a_complete_consistent_copy(tmp_path, hidden, one_torch_thread):
    project, _, _ = labeled_project(tmp_path, hidden)
    copy = LabelStore(project.backup(tmp_path / "backup.sqlite"))
    assert copy.integrity_check() == "ok"
    assert copy.labels() == project.store.labels() and copy.pending() == project.store.pending()


# -- Label Studio ----------------------------------------------------------------------------------
def test_label_studio_round_trip(tmp_path, hidden, one_torch_thread):
    project, annotator, batch = labeled_project(tmp_path, hidden)
    tasks = json.loads(batch.tasks.read_text())
    assert [t["data"]["rlmba_id"] for t in tasks] == batch.item_ids
    export = annotator.answer_label_studio(batch.tasks, tmp_path / "export.json")
    # a cancelled annotation and an unannotated task are not answers
    data = json.loads(export.read_text())
    data[0]["annotations"].insert(0, {"was_cancelled": True, "result": [
        {"type": "choices", "value": {"choices": ["not-a-class"]}}]})
    data[1]["annotations"] = []
    export.write_text(json.dumps(data))
    report = project.import_labels(export)
    assert (report.committed, report.errors, report.skipped_unanswered) == (len(batch.rows) - 1, [], 1)
    labels = project.store.labels()
    assert all(project.config.classes[labels[r]] == annotator.key[i]
               for r, i in zip(batch.rows, batch.item_ids) if r in labels)
    assert project.export(tmp_path / "all.csv") == len(labels)
    rows = list(csv.DictReader(open(tmp_path / "all.csv")))
    assert rows[0].keys() >= {"id", "label", "annotator"} and "simulated@example.com" in {r["annotator"] for r in rows}


def test_status_reports_counts_rounds_and_writes_a_plot(tmp_path, hidden, one_torch_thread):
    project, annotator, batch = labeled_project(tmp_path, hidden)
    s = project.status()
    assert s["labeled"] == sum(s["per_class"].values()) == project.config.audit_size + SMALL_PROTOCOL["initial_labels"]
    assert s["pending"] == SMALL_PROTOCOL["per_round"] and len(s["rounds"]) == 1
    assert {"audit_top1", "audit_top1_m0", "contribution_m1", "balance"} <= s["rounds"][0].keys()
    assert project.plot(tmp_path / "s.png").stat().st_size > 1000


# -- rlmba prepare folder: unlabeled images + texts -------------------------------------------------
def test_prepare_folder_writes_an_unlabeled_cache_that_a_project_labels(tmp_path, capsys, one_torch_thread):
    from raw_fixtures import write_image
    from agents.cli import main
    from rlmba_env.data.dataset import load_dataset

    raw = tmp_path / "raw"
    for i in range(14):
        write_image(raw / f"part{i % 2}" / f"item{i}.png", i % 3, seed=i, size=32)
        (raw / f"part{i % 2}" / f"item{i}.txt").write_text(f"words about thing {i % 3} and more {i}")
    write_image(raw / "no_text.png", 0, seed=99, size=32)  # skipped: no text beside it
    out = tmp_path / "cache"
    assert main(["prepare", "folder", "--raw", str(raw), "--out", str(out), "--classes", "red,green,blue",
                 "--weights", "none", "--image-size", "32", "--batch-size", "4", "--workers", "0",
                 "--text-dim", "4", "--no-progress"]) == 0
    assert "rlmba label init" in capsys.readouterr().out
    ds = load_dataset(out)
    assert ds.n_unlabeled == ds.n_samples == len(ds.splits["pool"]) == 14
    assert len(ds.splits["val"]) == len(ds.splits["test"]) == 0 and ds.classes == ["red", "green", "blue"]
    project = LabelingProject.init(tmp_path / "project", out, audit_size=3, initial_labels=2, per_round=2,
                                   rounds=2, learner=FAST_LEARNER)
    task = json.loads(project.next().tasks.read_text())[0]["data"]
    assert Path(task["image"]).is_file() and task["text"].startswith("words about thing")


def test_prepare_folder_needs_classes(tmp_path, capsys):
    from agents.cli import main

    (tmp_path / "raw").mkdir()
    assert main(["prepare", "folder", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "c")]) == 1
    assert "needs the class names" in capsys.readouterr().err


def test_next_plays_a_trained_policy_file_like_evaluate(tmp_path, hidden, small_dataset, capsys, one_torch_thread):
    from agents.reinforce import ReinforceAgent
    from agents.cli import main

    env = MultimodalALEnv(small_dataset, SMALL_PROTOCOL, learner=FAST_LEARNER)
    policy = ReinforceAgent.from_env(env, seed=0).save(tmp_path / "pg.pt")
    project, annotator, batch = labeled_project(tmp_path, hidden)
    answer(project, annotator, batch, tmp_path)
    assert main(["label", "next", str(project.dir), "--agent", f"mine={policy}"]) == 0
    last = project.store.batches()[-1]
    assert (last["kind"], last["agent"]) == ("round", "mine")
    assert len(project.store.batch_rows(last["id"])) == SMALL_PROTOCOL["per_round"]
    assert main(["label", "next", str(project.dir), "--agent", f"{policy}:online"]) == 1
    assert "not supported" in capsys.readouterr().err


def test_init_writes_a_label_studio_config_with_every_class(tmp_path, hidden):
    import xml.etree.ElementTree as ET

    cache, _ = hidden
    project = make_project(tmp_path, cache)
    view = ET.parse(project.dir / "label_studio.xml").getroot()
    choices = view.find("Choices")
    assert choices.get("name") == "label" and choices.get("toName") == view.find("Text").get("name")
    assert [c.get("value") for c in choices] == project.config.classes


def test_cli_status_measure_export_and_backup(tmp_path, hidden, capsys, one_torch_thread):
    from agents.cli import main

    project, annotator, batch = labeled_project(tmp_path, hidden)
    answer(project, annotator, batch, tmp_path)
    d = str(project.dir)
    assert main(["label", "measure", d]) == 0
    assert main(["label", "status", d, "--plot", str(tmp_path / "s.png")]) == 0
    out = capsys.readouterr().out
    assert "per class: class_0" in out and "audit top-1" in out and "contr m0" in out and "test top-1" in out
    assert len([line for line in out.splitlines() if line.strip().startswith(("0 ", "1 "))]) == 2
    assert main(["label", "export", d, str(tmp_path / "labels.csv")]) == 0
    assert main(["label", "backup", d, str(tmp_path / "b.sqlite")]) == 0
    assert main(["label", "backup", d, str(tmp_path / "b.sqlite")]) == 1  # never overwrites
    assert "already exists" in capsys.readouterr().err


# -- the project's copy of the features ------------------------------------------------------
def test_init_keeps_an_uncompressed_copy_of_the_features_that_next_maps(tmp_path, hidden, small_dataset):
    project = make_project(tmp_path, hidden[0])
    for m, x in small_dataset.features.items():
        assert (project.dir / "features" / f"{m}.npy").is_file()
        assert isinstance(project.dataset.features[m], np.memmap)  # mapped, not inflated from features.npz
        assert np.array_equal(project.dataset.features[m], x)


def test_a_project_without_the_copy_reads_the_cache_and_writes_the_copy(tmp_path, hidden, small_dataset):
    import shutil

    cache, annotator = hidden
    project = make_project(tmp_path, cache)
    shutil.rmtree(project.dir / "features")  # a project made before the copy existed
    for _ in range(2):
        answer(project, annotator, project.next(), tmp_path)
    with LabelingProject(project.dir) as reopened:
        assert all(np.array_equal(reopened.dataset.features[m], x) for m, x in small_dataset.features.items())
        assert all(isinstance(x, np.memmap) for x in reopened.dataset.features.values())
        assert sorted(p.name for p in (project.dir / "features").iterdir()) == sorted(
            [f"{m}.npy" for m in small_dataset.modalities] + ["source.json"])


def test_the_copy_follows_a_rewritten_cache(tmp_path, hidden, small_dataset):
    cache, _ = hidden
    make_project(tmp_path, cache).close()
    with np.load(cache / "features.npz") as f:
        shifted = {m: f[m] + np.float32(1.0) for m in f.files}
    np.savez_compressed(cache / "features.npz", **shifted)  # same rows, new values
    with LabelingProject(tmp_path / "project") as reopened:
        assert all(np.array_equal(reopened.dataset.features[m], x) for m, x in shifted.items())
    with LabelingProject(tmp_path / "project") as again:  # and the copy is of the new values
        assert all(isinstance(x, np.memmap) for x in again.dataset.features.values())
        assert all(np.array_equal(again.dataset.features[m], x) for m, x in shifted.items())
