"""pick's first stage (ctinit/pick_rank.py: the frozen-feature signal and the shortlist) and the two-stage pick."""
import json
import shlex

import pytest
import torch

import ctinit
from ctinit.cli import main as cli_main
from ctinit.pick import next_command
from ctinit.pick_rank import (adapt_batchnorm, feature_scores, nearest_class_mean_accuracy,
                              nearest_neighbour_accuracy, shortlist)
from helpers import load_script, make_npz
from zoo_fixtures import SIZE, make_run


def test_nearest_class_mean_and_neighbour_on_known_features():
    train_f = torch.tensor([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [0.1, 3.0]])
    train_y = torch.tensor([0, 0, 1, 1])
    val_f = torch.tensor([[5.0, 0.2], [0.2, 4.0], [1.0, 0.9]])  # the last is closer in angle to class 0's mean
    val_y = torch.tensor([0, 1, 1])
    assert nearest_class_mean_accuracy(train_f, train_y, val_f, val_y) == pytest.approx(2 / 3)
    assert nearest_neighbour_accuracy(train_f, train_y, val_f, val_y) == pytest.approx(2 / 3)
    # a class without training examples never wins, even when a validation image points its way
    assert nearest_class_mean_accuracy(train_f[:2], train_y[:2], torch.tensor([[0.0, 1.0]]), torch.tensor([1])) == 0.0


def test_adapt_batchnorm_uses_the_tasks_statistics_and_leaves_the_init_alone():
    torch.manual_seed(0)
    backbone = ctinit.build_backbone("convnet4-32", SIZE)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    x = torch.randint(100, 200, (64, 1, SIZE, SIZE), dtype=torch.uint8)
    one = adapt_batchnorm(backbone, x, 3, batch_size=64)
    two = adapt_batchnorm(backbone, x, 3, batch_size=32)
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in before.items())  # the init is untouched
    norms = lambda m: [n for n in m.modules() if isinstance(n, torch.nn.BatchNorm2d)]
    assert not one.training and norms(one)
    first, original = norms(one)[0], norms(backbone)[0]
    assert not torch.allclose(first.running_mean, original.running_mean)
    # the statistics of the whole training part: the same from batches of 64 or of 32 (a cumulative average)
    assert torch.allclose(first.running_mean, norms(two)[0].running_mean, atol=1e-4)


def test_shortlist_takes_the_best_by_the_signal():
    scores = {"a": {"ncm": 0.2}, "b": {"ncm": 0.9}, "c": {"ncm": 0.5}, "d": {"ncm": 0.5}}
    assert shortlist(scores, 2) == ["b", "c"]  # ties keep the order given
    assert shortlist(scores, 0) == ["b", "c", "d", "a"]


def test_feature_scores_separate_a_learnable_task_and_never_read_test(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run")
    spec = f"npz:{make_npz(tmp_path / 'bars.npz', size=SIZE, n_per_class=12)}"
    scores = feature_scores([str(run / "init")], spec, validation_fraction=0.25)
    score = scores[str(run / "init")]
    assert 0.0 <= score["ncm"] <= 1.0 and 0.0 <= score["knn1"] <= 1.0 and score["seconds"] >= 0
    # bars at class-specific rows are told apart by random conv features with the task's own BN statistics
    assert score["ncm"] > 0.6


def test_pick_fine_tunes_only_the_shortlist_and_prints_the_next_command(tmp_path, capsys):
    a, b = make_run(tmp_path / "a", seed=0) / "init", make_run(tmp_path / "b", seed=1) / "init"
    spec = f"npz:{make_npz(tmp_path / 'bars.npz', size=SIZE, n_per_class=12)}"
    args = ["pick", "--data", spec, "--inits", str(a), str(b), "--top", "1", "--steps", "2", "--seeds", "2",
            "--batch-size", "8", "--no-progress"]
    assert cli_main(args + ["--json"]) == 0
    picked = json.loads(capsys.readouterr().out)
    rows = {r["init"]: r for r in picked["ranking"]}
    assert set(rows) == {str(a), str(b), f"scratch:{a}"}  # one architecture: one scratch baseline
    best, other = sorted([str(a), str(b)], key=lambda i: -rows[i]["feature_score"])
    assert rows[best]["validation_accuracy"] is not None and rows[best]["seeds"] == 2
    assert rows[other]["validation_accuracy"] is None and rows[other]["verdict"] == "not fine-tuned"
    assert picked["ranking"][-1]["init"] == other  # ranked below every fine-tuned row
    assert picked["top"] == 1 and picked["first_stage_seconds"] >= 0
    chosen = picked["recommendation"] if picked["recommendation"] != "scratch" else f"scratch:{a}"
    assert picked["next_command"] == (f"ctinit finetune --init {shlex.quote(chosen)} --data {shlex.quote(spec)} "
                                      "--out bars-model")
    assert cli_main(args) == 0
    text = capsys.readouterr().out
    assert "feature score" in text and f"next: {picked['next_command']}" in text


def test_next_command_for_scratch_names_the_best_scratch_baseline():
    picked = {"task": "my photos", "recommendation": "scratch",
              "ranking": [{"init": "zoo:x", "scratch": False, "validation_accuracy": 0.5},
                          {"init": "scratch:zoo:x", "scratch": True, "validation_accuracy": 0.4},
                          {"init": "scratch:zoo:y", "scratch": True, "validation_accuracy": 0.6}]}
    assert next_command(picked, "folder:my photos") == ("ctinit finetune --init scratch:zoo:y --data "
                                                       "'folder:my photos' --out my-photos-model")


def test_pick_top_must_be_a_count(tmp_path, capsys):
    spec = f"npz:{make_npz(tmp_path / 'bars.npz', size=SIZE)}"
    assert cli_main(["pick", "--data", spec, "--inits", str(make_run(tmp_path / "a") / "init"), "--top", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--top" in err[0]


def test_pick_is_judged_against_the_best_average_entry_left_out_of_each_task():
    pick_signal = load_script("benchmarks/pick_signal.py")
    # entry a is best on average; b wins task t3 by far, and the signal knows it there
    tuned = {"t1": {"a": 0.9, "b": 0.5}, "t2": {"a": 0.8, "b": 0.6}, "t3": {"a": 0.3, "b": 0.9}}
    signal = {"t1": {"a": 0.7, "b": 0.6}, "t2": {"a": 0.5, "b": 0.6}, "t3": {"a": 0.1, "b": 0.8}}
    done = [{"task": t, "finetuned": tuned[t], "signal": signal[t]} for t in tuned]
    judged = pick_signal.versus_best_average(done)
    # best average without t1: b (1.5 vs 1.1); without t2: b (1.4 vs 1.2); without t3: a (1.7 vs 1.1)
    assert judged["per_task"]["t1"] == {"first_stage": 0.9, "two_stages": 0.9, "best_average": 0.5}
    assert judged["per_task"]["t2"] == {"first_stage": 0.6, "two_stages": 0.8, "best_average": 0.6}
    assert judged["per_task"]["t3"] == {"first_stage": 0.9, "two_stages": 0.9, "best_average": 0.3}
    assert judged["first_stage_minus_best_average"]["mean"] == pytest.approx((0.4 + 0.0 + 0.6) / 3, abs=1e-4)
    assert judged["two_stages_minus_best_average"]["n"] == 3
    assert pick_signal.versus_best_average(done[:2]) is None  # too few tasks to judge
