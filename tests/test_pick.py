"""ctinit pick (a ranking on a validation split carved from training) and the paired rules of evaluation tables."""
import json

import numpy as np
import pytest

from ctinit import finetune as finetune_module
from ctinit.cli import main as cli_main
from ctinit.report import clear_winner, results_table, summarize
from ctinit.pick import NO_WINNER, rank, ranking_table
from helpers import make_npz
from zoo_fixtures import NAME, SIZE, built_zoo, tiny_zoo, zoo_script  # noqa: F401 - fixtures

INIT = f"zoo:{NAME}"


def test_pick_json_ranks_entries_and_scratch_on_validation_only(tiny_zoo, tmp_path, monkeypatch, capsys):
    path = tmp_path / "split.npz"
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (30, SIZE, SIZE), dtype=np.uint8), np.repeat(np.arange(3), 10)
    x_test = np.full((5, SIZE, SIZE), 7, dtype=np.uint8)  # a test split pick must never evaluate on
    np.savez(path, x_train=x, y_train=y, x_test=x_test, y_test=np.arange(5) % 3)
    seen = []
    real = finetune_module.evaluate
    monkeypatch.setattr(finetune_module, "evaluate", lambda b, h, xs, ys, **kw: seen.append(xs) or real(b, h, xs, ys, **kw))
    assert cli_main(["pick", "--data", f"npz:{path}", "--steps", "2", "--seeds", "2", "--batch-size", "8",
                     "--json", "--no-progress"]) == 0
    picked = json.loads(capsys.readouterr().out)
    assert set(picked) >= {"ranking", "recommendation"}
    assert [r["init"] for r in picked["ranking"]] != [] and {r["init"] for r in picked["ranking"]} == {INIT, f"scratch:{INIT}"}
    accs = [r["validation_accuracy"] for r in picked["ranking"]]
    assert accs == sorted(accs, reverse=True)
    row = next(r for r in picked["ranking"] if r["init"] == INIT)
    assert row["baseline"] == f"scratch:{INIT}" and row["difference"]["n"] == 2 and set(row["values"]) == {"0", "1"}
    assert picked["recommendation"] in (INIT, "scratch")
    assert picked["recommendation"] == (INIT if row["verdict"] == "better" else "scratch")
    assert picked["validation_size"] == 6 and picked["train_size"] == 24  # round(25% of each class's 10), held out
    assert seen and all(len(xs) == 6 for xs in seen)  # every evaluation ran on the validation split, none on test

    # the recorded values go into the zoo's registry like an evaluation's
    (tmp_path / "pick.json").write_text(json.dumps(picked))
    assert zoo_script().main(["results", NAME, str(tmp_path / "pick.json"), "--name", "split"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["split"] == "validation" and record["difference"]["n"] == 2 and record["tasks"] == ["npz:split.npz"]


def test_pick_bad_input_is_one_line(tiny_zoo, tmp_path, capsys):
    task = f"npz:{make_npz(tmp_path / 'bars.npz', size=SIZE)}"
    for args, needle in ((["--inits", "zoo:nope"], "no such initialization in the zoo"),
                         (["--inits", "scratch:convnet4-32"], "pick adds scratch of every architecture itself"),
                         (["--val-fraction", "1"], "--val-fraction must be at least 0 and below 1"),
                         (["--seeds", "0"], "--seeds")):
        assert cli_main(["pick", "--data", task, *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err


def fake_results(accuracies: dict, score="validation") -> dict:
    """An evaluation (as run_evaluation returns it) of one task with the given {init: [accuracy per seed]}."""
    seeds = list(range(len(next(iter(accuracies.values())))))
    results = {"seeds": seeds, "finetune": {"steps": 5}, "seconds": 1.0, "score": score,
               "inits": [{"label": k, "scratch": k.startswith("scratch:")} for k in accuracies],
               "tasks": [{"spec": "npz:t.npz", "name": "t", "display": "t", "num_classes": 2, "train_size": 10,
                          "validation_size": 4}],
               "runs": [{"init": k, "task": "npz:t.npz", "seed": s, "test_accuracy": v[s]}
                        for k, v in accuracies.items() for s in seeds]}
    results["summary"] = summarize(results)
    return results


def test_rank_recommends_only_an_init_whose_paired_interval_is_above_zero():
    scratch_of = {"zoo:a": "scratch:zoo:a", "zoo:b": "scratch:zoo:a"}
    clear = fake_results({"zoo:a": [0.80, 0.82, 0.81], "zoo:b": [0.90, 0.70, 0.95],
                          "scratch:zoo:a": [0.60, 0.63, 0.61]})
    picked = rank(clear, scratch_of)
    assert picked["recommendation"] == "zoo:a"  # zoo:b has the higher mean, but its interval includes 0
    assert [r["init"] for r in picked["ranking"]] == ["zoo:b", "zoo:a", "scratch:zoo:a"]
    assert [r["verdict"] for r in picked["ranking"]] == ["no clear difference", "better", None]
    assert "recommendation: zoo:a" in ranking_table(picked)
    none = rank(fake_results({"zoo:a": [0.60, 0.65, 0.62], "scratch:zoo:a": [0.61, 0.63, 0.64]}), scratch_of)
    assert none["recommendation"] == "scratch" and NO_WINNER in ranking_table(none)


def test_results_table_bolds_only_a_clear_paired_winner():
    clear = fake_results({"a": [0.80, 0.82, 0.81], "b": [0.60, 0.63, 0.61]}, score="test")
    assert clear_winner(clear, ["a", "b"], "npz:t.npz") == "a" and "**0.810 ± 0.010**" in results_table(clear)
    close = fake_results({"a": [0.90, 0.60, 0.95], "b": [0.62, 0.61, 0.90]}, score="test")
    assert clear_winner(close, ["a", "b"]) is None
    assert "**0." not in results_table(close)  # the best mean, but its paired interval includes 0: nothing bold
