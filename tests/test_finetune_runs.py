"""Fine-tuning runs side by side (ctinit/finetune_runs.py) and the count of free cores (ctinit/execution/cores.py):
the plan follows the cores and the runs, and a grid run by worker processes gives the runs in place of
one process's, in the grid's order, resumable from runs.jsonl."""
import json

import pytest

from ctinit.errors import ConfigError
from ctinit.evaluate import run_evaluation
from ctinit.execution import cores
from ctinit.finetune import FinetuneConfig
from ctinit import finetune_runs

from helpers import make_npz


def test_free_cores_counts_the_busy_ones_now(monkeypatch):
    monkeypatch.setattr(cores, "usable_cores", lambda: 4)
    assert cores.free_cores(busy=0.2) == 4
    assert cores.free_cores(busy=1.6) == 2  # a core more than half busy counts as busy
    assert cores.free_cores(busy=9.0) == 1  # never fewer than one
    busy = cores.busy_cores(0.05)
    assert 0.0 <= busy <= (cores.os.cpu_count() or 1) + 0.5


@pytest.mark.parametrize("free, pending, steps, expected", [
    (2, 12, 1000, (2, 1)),     # one 1-thread worker per free core
    (8, 3, 1000, (3, 2)),      # at most one worker per run; the free cores shared out as threads
    (1, 12, 1000, (1, None)),  # a busy machine: in this process
    (2, 1, 1000, (1, None)),   # one run: nothing to split
    (2, 12, 60, (1, None)),    # short runs (pick's) do not pay for starting workers
])
def test_auto_plan(monkeypatch, free, pending, steps, expected):
    monkeypatch.setattr(cores, "free_cores", lambda busy=None: free)
    monkeypatch.setattr(cores, "usable_cores", lambda: free)
    plan = finetune_runs.plan_workers("auto", pending, FinetuneConfig(steps=steps), "cpu")
    assert plan[:2] == expected


def test_explicit_plan_and_bad_values(monkeypatch):
    monkeypatch.setattr(cores, "usable_cores", lambda: 4)
    assert finetune_runs.plan_workers("2", 5, FinetuneConfig(steps=5), "cpu")[:2] == (2, 2)
    assert finetune_runs.plan_workers(3, 2, FinetuneConfig(steps=5), "cpu")[:2] == (2, 2)  # no idle workers
    assert finetune_runs.plan_workers(1, 5, FinetuneConfig(steps=500), "cpu")[:2] == (1, None)
    for bad in ("two", "0", -1):
        with pytest.raises(ConfigError, match="--workers"):
            finetune_runs.plan_workers(bad, 5, FinetuneConfig(steps=5), "cpu")


def test_workers_give_the_same_runs_in_grid_order_and_resume(tmp_path):
    data = [f"npz:{make_npz(tmp_path / 'a.npz', seed=0)}", f"npz:{make_npz(tmp_path / 'b.npz', classes=4, seed=1)}"]
    inits = ["scratch:convnet4-32", "scratch:resnet20"]
    config = FinetuneConfig(steps=4, batch_size=8)
    alone = run_evaluation(inits, data, 2, config, progress=False, workers=1)
    side_by_side = run_evaluation(inits, data, 2, config, progress=False, workers=2, out=tmp_path / "eval")
    order = [(r["task"], r["seed"], r["init"]) for r in alone["runs"]]
    assert order == [(d, s, i) for d in data for s in (0, 1) for i in inits]
    assert [(r["task"], r["seed"], r["init"]) for r in side_by_side["runs"]] == order
    for a, b in zip(alone["runs"], side_by_side["runs"]):  # 1 thread vs torch's own count: rounding only
        assert b["test_accuracy"] == pytest.approx(a["test_accuracy"], abs=0.05)
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3)
    lines = (tmp_path / "eval" / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 8 and all("key" in json.loads(line) for line in lines)
    again = run_evaluation(inits, data, 2, config, progress=False, workers=2, out=tmp_path / "eval")
    assert [r["test_accuracy"] for r in again["runs"]] == [r["test_accuracy"] for r in side_by_side["runs"]]
    assert len((tmp_path / "eval" / "runs.jsonl").read_text().splitlines()) == 8  # read back, none redone


def test_an_error_in_a_worker_is_the_command_s_error(tmp_path):
    data = [f"npz:{make_npz(tmp_path / 'a.npz', seed=0)}"]
    config = FinetuneConfig(steps=4, batch_size=8, optimizer={"name": "sgd", "lr": 1e30})
    with pytest.raises(Exception, match="non-finite"):
        run_evaluation(["scratch:convnet4-32"], data, 2, config, progress=False, workers=2)


def test_workers_die_with_a_killed_evaluation(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    data = f"npz:{make_npz(tmp_path / 'a.npz', seed=0)}"
    script = ("from ctinit.evaluate import run_evaluation; from ctinit.finetune import FinetuneConfig; "
              f"run_evaluation(['scratch:convnet4-32'], ['{data}'], 4, FinetuneConfig(steps=100000, batch_size=8), "
              "progress=False, workers=2)")
    parent = subprocess.Popen([sys.executable, "-c", script])

    def workers():  # the pool's worker processes (not its resource tracker), alive and not zombies
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                cmdline = open(f"/proc/{pid}/cmdline").read()
            except OSError:
                continue
            if stat[0] != "Z" and "spawn_main" in cmdline and \
                    (int(stat[1]) == parent.pid or started and int(pid) in started):
                found.append(int(pid))
        return found

    started = []
    deadline = time.time() + 60
    while len(workers()) < 2 and time.time() < deadline:
        time.sleep(0.2)
    started = workers()
    assert len(started) == 2, "the workers did not start"
    time.sleep(1.0)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 30
    while workers() and time.time() < deadline:
        time.sleep(0.2)
    assert not workers(), f"workers left running after their evaluation was killed: {workers()}"


def test_a_bad_workers_option_is_one_line_before_any_work(capsys):
    from ctinit.cli import main as cli_main

    for command in (["evaluate", "--init", "zoo:none", "--data", "builtin:latin", "--out", "x"], ["pick", "--data", "x"]):
        with pytest.raises(SystemExit) as stopped:  # argparse's own exit, as for every malformed option
            cli_main([*command, "--workers", "two"])
        assert stopped.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--workers: 'two' is not auto or a number of processes" in err[0], err
