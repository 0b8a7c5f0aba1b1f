"""A second `ctinit evaluate --out E` that would drop the inits or tasks of E's results asks for --overwrite (and
says what it replaces with it); one that runs all of them continues them. `ctinit pick` logs validation accuracy."""
import json

from ctinit.cli import main as cli_main

from helpers import make_npz


def _evaluate(task, out, *inits, flags=()):
    args = ["evaluate", "--data", f"npz:{task}", "--steps", "1", "--seeds", "1", "--batch-size", "8",
            "--out", str(out), "--no-progress", *flags]
    for init in inits:
        args += ["--init", init]
    return cli_main(args)


def test_evaluate_into_results_of_other_inits_asks_for_overwrite(tmp_path, capsys):
    task, out = make_npz(tmp_path / "t.npz"), tmp_path / "eval"
    assert _evaluate(task, out, "scratch:convnet4-32") == 0
    before = (out / "results.json").read_bytes()
    capsys.readouterr()
    assert _evaluate(task, out, "scratch:convnet4") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds the results of another evaluation (scratch:convnet4-32" in err[0]
    assert "--overwrite" in err[0] and (out / "results.json").read_bytes() == before
    assert _evaluate(task, out, "scratch:convnet4", flags=["--overwrite"]) == 0
    assert "--overwrite: replacing the results" in capsys.readouterr().err
    assert [e["label"] for e in json.loads((out / "results.json").read_text())["inits"]] == ["scratch:convnet4"]
    # all of the earlier inits and more: extended without a question
    assert _evaluate(task, out, "scratch:convnet4", "scratch:convnet4-32") == 0


def test_pick_logs_validation_accuracy(tmp_path, capsys):
    from ctinit.loading import save_init
    import ctinit

    save_init(ctinit.build_backbone("convnet4-32"), tmp_path / "init", {"algorithm": "cts"})
    task = make_npz(tmp_path / "t.npz")
    assert cli_main(["pick", "--data", f"npz:{task}", "--inits", str(tmp_path / "init"), "--steps", "1",
                     "--seeds", "2", "--batch-size", "8", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "validation accuracy" in err and "test accuracy" not in err
