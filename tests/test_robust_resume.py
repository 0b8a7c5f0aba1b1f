"""Kills at checkpoint and export points lose nothing, and a rerun of evaluate skips finished runs."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ctinit_training.rundir as rundir
from ctinit.finetune import FinetuneConfig

from helpers import make_npz, weights
from robust_support import ENV, FAST, TINY, train


# ----------------------------------------------------------------------------------------------- faults


class Killed(SystemExit):
    """An in-process stand-in for SIGKILL at a fault point: nothing after it runs but ``finally`` blocks."""


def run_cli(out, *overrides, fault=None):
    env = {**ENV, **({"CTINIT_FAULT": fault} if fault else {})}
    return subprocess.run([sys.executable, "-m", "ctinit_training.meta_train", "--config", TINY, "--out", str(out),
                           "--no-progress", *FAST, *overrides], env=env, capture_output=True, text=True)


def same(a, b):
    wa, wb = weights(Path(a) / "init"), weights(Path(b) / "init")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_kills_at_checkpoint_and_export_in_a_folder_of_an_older_run_resume_to_the_same_phi(tmp_path, monkeypatch,
                                                                                            capsys):
    new = ["steps=30", "checkpoint_every=10", "seed=3", "log_every=5"]
    reference = tmp_path / "reference"
    assert train(reference, *new) == 0

    out = tmp_path / "run"
    assert train(out, "steps=50", "checkpoint_every=10", "seed=0", "keep_checkpoints=5") == 0  # an older run
    # the new run replaces the older one, and dies while writing its step-20 checkpoint (in-process stand-in)
    real_fault_point = rundir.fault_point

    def die(name, step=None):
        if (name, step) == ("checkpoint", 20):
            raise Killed(137)

    monkeypatch.setattr(rundir, "fault_point", die)
    with pytest.raises(Killed):
        train(out, *new, overwrite=True)
    monkeypatch.setattr(rundir, "fault_point", real_fault_point)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-10", "step-20.tmp"]
    # an older run's checkpoint with a higher step appears (copied back by hand): not this run's, so ignored
    shutil.copytree(out / "checkpoints" / "step-10", out / "checkpoints" / "step-41")
    meta = json.loads((out / "checkpoints" / "step-41" / "meta.json").read_text())
    (out / "checkpoints" / "step-41" / "meta.json").write_text(json.dumps({**meta, "step": 41, "run_id": "older"}))
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 1')  # a line cut short by the kill
    # resumed in a real process, SIGKILLed (CTINIT_FAULT hook) after the export was written to init.tmp, before the
    # rename: its lock stays behind
    killed = run_cli(out, *new, "--resume", fault="export")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert "resumed from" in killed.stderr and "step-10" in killed.stderr and "incomplete line" in killed.stderr
    assert not (out / "init").exists() and (out / "init.tmp").is_dir() and (out / ".lock").is_file()
    capsys.readouterr()
    assert train(out, *new, resume=True) == 0
    err = capsys.readouterr().err
    assert f"stale lock of process" in err and "step-30" in err
    assert same(reference, out)  # bitwise
    assert (out / "checkpoints" / "step-41").is_dir()  # not this run's to prune
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20, 25, 30]


# ----------------------------------------------------------------------------------------------- evaluate


def test_evaluate_writes_each_run_at_once_and_a_rerun_skips_finished_runs(tmp_path, monkeypatch):
    import ctinit.evaluate as evaluate
    import ctinit.finetune_runs as finetune_runs

    data = f"npz:{make_npz(tmp_path / 'bars.npz')}"
    cfg = FinetuneConfig(steps=2, batch_size=8, progress=False)
    calls = []
    real = finetune_runs.finetune

    def counting(*args, **kwargs):
        calls.append(kwargs.get("device"))
        if len(calls) == 2:
            raise KeyboardInterrupt  # interrupted during the second run
        return real(*args, **kwargs)

    monkeypatch.setattr(finetune_runs, "finetune", counting)
    with pytest.raises(KeyboardInterrupt):
        evaluate.run_evaluation(["scratch:convnet4-32"], [data], seeds=2, config=cfg, progress=False, out=tmp_path / "e")
    assert len((tmp_path / "e" / "runs.jsonl").read_text().splitlines()) == 1
    calls.clear()
    monkeypatch.setattr(finetune_runs, "finetune", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    results = evaluate.run_evaluation(["scratch:convnet4-32"], [data], seeds=2, config=cfg, progress=False,
                                      out=tmp_path / "e")
    assert len(calls) == 1 and [r["seed"] for r in results["runs"]] == [0, 1]  # seed 0 was reused
    calls.clear()
    other = FinetuneConfig(steps=3, batch_size=8, progress=False)  # other options: nothing is reused
    evaluate.run_evaluation(["scratch:convnet4-32"], [data], seeds=2, config=other, progress=False, out=tmp_path / "e")
    assert len(calls) == 2
