"""ctinit evaluate: the grid of inits x tasks x seeds, its three files, the card update, bad input."""
import json

import numpy as np
import pytest
import torch
import yaml

import ctinit
from ctinit.cli import main as cli_main
from ctinit.errors import ConfigError
from ctinit.evaluate import parse_seeds, run_evaluation
from ctinit.report import load_results, results_markdown, write_results
from ctinit.tasks.subsets import limit_train_samples
from ctinit_hub.card import update_card
from ctinit.finetune import FinetuneConfig
from ctinit.loading import save_init
from ctinit.tasks import load_task

from helpers import make_npz  # noqa: E402

STEPS = 6






@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    torch.manual_seed(0)
    tasks = [{"spec": "builtin:latin", "name": "latin", "num_classes": 26, "train_size": 104, "test_size": 1040}]
    recipe = {"algorithm": "cts", "backbone": "convnet4-32", "steps": 3, "seed": 0, "tasks": ["builtin:latin"]}
    save_init(ctinit.build_backbone("convnet4-32"), root / "run" / "init",
              {"algorithm": "cts", "config": recipe, "tasks": tasks, "steps": 3, "seed": 0})
    (root / "run" / "config.yaml").write_text(yaml.safe_dump(recipe))
    a = make_npz(root / "bars.npz", seed=0)
    b = make_npz(root / "rows.npz", classes=4, n_per_class=10, seed=1)
    return {"root": root, "init": root / "run" / "init", "data": [f"npz:{a}", f"npz:{b}"]}


@pytest.fixture(scope="module")
def results(setup):
    cfg = FinetuneConfig(steps=STEPS, batch_size=8, eval_every=3)
    return run_evaluation([str(setup["init"]), "scratch:convnet4-32"], setup["data"], seeds=2, config=cfg,
                          progress=False, command="ctinit evaluate ...")


def test_parse_seeds():
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds(2) == [0, 1]
    assert parse_seeds("0,4,7") == [0, 4, 7] and parse_seeds("7,") == [7]
    for bad in ("0", "x", "1,1", "-1,2", ""):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def test_limit_train_samples_is_balanced_and_seeded(setup):
    task = load_task(setup["data"][1])  # 4 classes
    small = limit_train_samples(task, 10, seed=0)
    counts = np.bincount(small.y_train.numpy(), minlength=4)
    assert counts.sum() == 10 and counts.max() - counts.min() <= 1
    assert torch.equal(small.y_train, limit_train_samples(task, 10, seed=0).y_train)
    assert len(limit_train_samples(task, 10_000, seed=0).y_train) == len(task.y_train)


def test_grid_results_and_summary(results, setup):
    assert len(results["runs"]) == 2 * 2 * 2
    assert [t["num_classes"] for t in results["tasks"]] == [3, 4]
    run = results["runs"][0]
    assert [s for s, _ in run["curve"]] == [3, 6] and 0.0 <= run["test_accuracy"] <= 1.0
    label = str(setup["init"])
    for spec in setup["data"]:
        stats = results["summary"][label]["tasks"][spec]
        values = [r["test_accuracy"] for r in results["runs"] if r["init"] == label and r["task"] == spec]
        assert stats["n"] == 2 and stats["mean"] == pytest.approx(np.mean(values))
        assert stats["std"] == pytest.approx(np.std(values, ddof=1))
    per_seed = [np.mean([r["test_accuracy"] for r in results["runs"] if r["init"] == label and r["seed"] == s])
                for s in (0, 1)]
    assert results["summary"][label]["mean"]["mean"] == pytest.approx(np.mean(per_seed))
    assert results["inits"][0]["algorithm"] == "cts" and results["inits"][1]["algorithm"] == "scratch"
    assert results["inits"][0]["weights_sha256"] and results["inits"][1]["weights_sha256"] is None


def test_a_grid_cell_is_exactly_ctinit_finetune(results, setup, capsys):
    assert cli_main(["finetune", "--init", str(setup["init"]), "--data", setup["data"][1], "--seed", "1", "--steps",
                     str(STEPS), "--batch-size", "8", "--eval-every", "3", "--json", "--no-progress"]) == 0
    single = json.loads(capsys.readouterr().out)
    cell = next(r for r in results["runs"] if r["init"] == str(setup["init"]) and r["task"] == setup["data"][1]
                and r["seed"] == 1)
    assert cell["test_accuracy"] == single["test_accuracy"] and cell["test_loss"] == single["test_loss"]


def test_write_results_three_files(results, tmp_path):
    paths = write_results(results, tmp_path / "out")
    assert json.loads(paths["json"].read_text())["summary"] == json.loads(json.dumps(results["summary"]))
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths["png"].stat().st_size > 5000
    md = paths["md"].read_text()
    assert md == results_markdown(results)
    lines = md.splitlines()
    header = next(l for l in lines if l.startswith("| task |"))
    assert header.count("|") == 4 and "`scratch:convnet4-32`" in header
    rows = [l for l in lines if l.startswith("| bars") or l.startswith("| rows") or l.startswith("| **mean**")]
    assert len(rows) == 3 and all(l.count("±") == 2 for l in rows)
    assert f"after {STEPS} fine-tuning steps, mean ± std over 2 seeds (0, 1)" in md


def test_cli_evaluate_writes_files_and_updates_the_card(setup, tmp_path, capsys):
    from huggingface_hub import ModelCard

    from ctinit_hub.__main__ import main as hub_main

    export = tmp_path / "export"
    assert hub_main(["export", str(setup["root"] / "run"), str(export), "--repo", "me/tiny"]) == 0
    args = ["evaluate", "--init", str(export), "--init", f"scratch:{export}", "--data", setup["data"][0],
            "--seeds", "0,1", "--steps", "4", "--batch-size", "8", "--max-train-per-class", "6", "--out",
            str(tmp_path / "eval"), "--no-progress"]
    capsys.readouterr()
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert hub_main(["update-card", str(export), str(tmp_path / "eval")]) == 0
    assert out.startswith("| task |") and "**mean**" in out
    # the results, and the (released) OS lock's file, which stays so that every command locks the same file
    assert {p.name for p in (tmp_path / "eval").iterdir()} == {"results.json", "results.md", "curves.png", "runs.jsonl",
                                                              ".lock"}
    results = load_results(tmp_path / "eval")
    assert results["max_train_per_class"] == 6 and results["tasks"][0]["train_size"] == 18
    card = ModelCard.load(export / "README.md")
    assert card.data.library_name == "ctinit" and card.data.model_name == "tiny"
    [entry] = card.data.eval_results
    mean = results["summary"][str(export)]["tasks"][setup["data"][0]]["mean"]
    assert entry.metric_type == "accuracy" and entry.metric_value == pytest.approx(round(mean, 4))
    assert entry.dataset_name == "bars" and entry.task_type == "image-classification"
    assert "| task | this initialization | scratch (same architecture) |" in card.text
    assert "![validation accuracy while fine-tuning](curves.png)" in card.text and (export / "curves.png").is_file()
    # the files beside the card name no local path and hold no command line
    for path in export.iterdir():
        data = path.read_bytes()
        assert str(tmp_path).encode() not in data and b"--max-train-per-class" not in data, path.name
    # again: the section and the model-index are replaced, not appended
    update_card(export, results)
    card = ModelCard.load(export / "README.md")
    assert len(card.data.eval_results) == 1 and card.text.count("<!-- ctinit:results -->") == 1
    # export again with the results: the same model-index and table straight from the template
    assert hub_main(["export", str(setup["root"] / "run"), str(tmp_path / "again"), "--results", str(tmp_path / "eval")]) == 0
    again = ModelCard.load(tmp_path / "again" / "README.md")
    assert [e.metric_value for e in again.data.eval_results] == [e.metric_value for e in card.data.eval_results]
    assert "| task | this initialization |" in again.text and (tmp_path / "again" / "curves.png").is_file()
    other = ctinit.build_backbone("convnet4-32")
    save_init(other, tmp_path / "other", {"algorithm": "cts"})
    (tmp_path / "other" / "README.md").write_text((export / "README.md").read_text())
    with pytest.raises(ConfigError, match="none of the evaluated initializations has its weights"):
        update_card(tmp_path / "other", results)


@pytest.mark.parametrize("extra,needle", [
    (["--data", "klingon:x"], "unknown task spec 'klingon:x'"),
    (["--data", "npz:/nonexistent/x.npz"], "file not found"),
    (["--seeds", "zero"], "--seeds 'zero'"),
    (["--init", "scratch:convnet4-32"], "given twice"),
    (["--max-train-per-class", "50"], "cannot take 50 train examples per class"),
])
def test_cli_evaluate_bad_input_is_one_line_before_training(setup, tmp_path, capsys, extra, needle):
    base = ["evaluate", "--init", "scratch:convnet4-32", "--data", setup["data"][0], "--steps", "2", "--seeds", "1",
            "--out", str(tmp_path / "out"), "--no-progress"]
    assert cli_main(base + extra) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctinit: error:") and needle in lines[0], captured.err
    assert "Traceback" not in captured.err and not (tmp_path / "out").exists()
