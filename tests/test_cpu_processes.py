"""``ctinit-train --cpu-processes auto|N``: the run as several CPU processes (forked, or through torch's launcher),
from inside ctinit-train, with the results and the exact resume of a torchrun launch; ``auto`` fits the cores
actually free."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ctinit.errors import ConfigError
from ctinit.execution import compiled as compiled_module
from ctinit_training import launch
from ctinit_training.config import load_config

from test_compiled import record  # noqa: F401 - the fixture
from test_training import ENV, TINY, same_phi, train_cmd

CONFIG = load_config(TINY, ["steps=1000"])  # 3 tasks


def test_auto_fits_the_free_cores_and_the_tasks(tmp_path, record):
    short = launch.choose_split("auto", load_config(TINY, []), tmp_path, False, free=2, usable=2)
    assert short[:2] == (1, 0) and "too short" in short[2]  # 20 steps: one process, torch's own threads
    assert launch.choose_split("auto", CONFIG, tmp_path, False, free=2, usable=2)[:2] == (2, 1)
    # a busy machine: still one process per core, each of one thread (they share busy cores gently)
    busy = launch.choose_split("auto", CONFIG, tmp_path, False, free=1, usable=2)
    assert busy[:2] == (2, 1) and "1 of 2 cores free" in busy[2]
    assert launch.choose_split("auto", CONFIG, tmp_path, False, free=1, usable=1)[:2] == (1, 1)
    assert launch.choose_split("auto", CONFIG, tmp_path, False, free=8, usable=8)[:2] == (3, 2)  # one process per task
    assert launch.choose_split("auto", CONFIG, tmp_path, False, free=2, usable=8)[:2] == (3, 1)
    assert launch.choose_split("2", CONFIG, tmp_path, False, free=4)[:2] == (2, 2)
    assert launch.choose_split("1", CONFIG, tmp_path, False, free=4)[:2] == (1, 0)  # one process: torch's threads
    with pytest.raises(ConfigError, match="--cpu-processes two: give auto or a number"):
        launch.choose_split("two", CONFIG, tmp_path, False, free=2)


def test_auto_tries_the_rule_s_split_before_trusting_other_measurements(tmp_path, record):
    launch.record_split(CONFIG, 40.0, "1x1")
    launch.record_split(CONFIG, 90.0, "1x2")  # one process measured, two never: two it is, and then measured
    processes, threads, why = launch.choose_split("auto", CONFIG, tmp_path, False, free=2, usable=2)
    assert (processes, threads) == (2, 1) and "one process per core" in why
    launch.record_split(CONFIG, 120.0, "2x1")
    assert launch.choose_split("auto", CONFIG, tmp_path, False, free=2, usable=2)[:2] == (2, 1)
    launch.record_split(CONFIG, 60.0, "2x1")  # slower now (other work ran beside it): its fastest stays
    assert launch.choose_split("auto", CONFIG, tmp_path, False, free=2, usable=2)[:2] == (2, 1)
    launch.record_split(CONFIG, 130.0, "1x2")  # faster than 2x1's fastest: 1x2
    assert launch.choose_split("auto", CONFIG, tmp_path, False, free=2, usable=2)[:2] == (1, 2)


def test_auto_takes_the_split_this_machine_measured_fastest(tmp_path, record):
    launch.record_split(CONFIG, 10.0, "2x1")
    assert launch.choose_split("auto", CONFIG, tmp_path, False, free=2, usable=2)[:2] == (2, 1)  # one measurement: the rule
    launch.record_split(CONFIG, 14.0, "1x2")
    processes, threads, why = launch.choose_split("auto", CONFIG, tmp_path, False, free=2, usable=2)
    assert (processes, threads) == (1, 2) and "1x2 measured fastest" in why
    launch.record_split(CONFIG, 20.0, "3x2")  # does not fit 2 free cores: not a candidate
    assert launch.choose_split("auto", CONFIG, tmp_path, False, free=2, usable=2)[:2] == (1, 2)
    assert json.loads(record.read_text())[launch.split_key(CONFIG)] == {"2x1": 10.0, "1x2": 14.0, "3x2": 20.0}
    launch.record_split(CONFIG, 90.0, "2x1", steps_run=20)  # a resumed run's last 20 steps: too short to count
    assert compiled_module.read_record(launch.split_key(CONFIG))["2x1"] == 10.0
    assert compiled_module.read_record(launch.split_key(CONFIG))["1x2"] == 14.0


def test_the_flag_is_taken_out_of_what_the_processes_run():
    assert launch.without_flag(["--config", "x", "--cpu-processes", "auto", "--out", "o"]) == ["--config", "x", "--out", "o"]
    assert launch.without_flag(["--cpu-processes=2", "steps=3"]) == ["steps=3"]


@pytest.mark.parametrize("launcher", ["fork", "torchrun"])
def test_two_cpu_processes_match_one_and_resume_exactly(tmp_path, launcher):
    reference, split = tmp_path / "reference", tmp_path / "split"
    env = {**ENV, launch.CPU_LAUNCHER_ENV: launcher}
    subprocess.run(train_cmd(reference, "steps=20", "checkpoint_every=10", "seed=0"), env=ENV, check=True,
                   capture_output=True)
    proc = subprocess.run(train_cmd(split, "--cpu-processes", "2", "steps=20", "checkpoint_every=10", "seed=0"),
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 process(es) x" in proc.stderr and "world size 2" in proc.stderr
    assert same_phi(reference, split, atol=1e-5)  # as torchrun's two processes (tests/test_training.py)
    assert json.loads((split / "checkpoints" / "step-20" / "meta.json").read_text())["world_size"] == 2
    # interrupted after step 10: resumed with auto, it runs on the checkpoint's 2 processes and ends where it did
    shutil.copytree(split / "init", tmp_path / "finished" / "init")
    shutil.rmtree(split / "checkpoints" / "step-20")
    shutil.rmtree(split / "init")
    proc = subprocess.run(train_cmd(split, "--cpu-processes", "auto", "--resume", "steps=20", "checkpoint_every=10",
                                    "seed=0"), env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "the checkpoint's 2 processes" in proc.stderr
    assert same_phi(tmp_path / "finished", split)  # bitwise (the same thread count per process here)


def test_the_quickstart_meta_trains_on_the_processes_it_is_given(tmp_path):
    out = tmp_path / "qs"
    proc = subprocess.run([sys.executable, "-m", "ctinit_training.quickstart", "--out", str(out), "--cpu-processes",
                           "2", "--finetune-steps", "2", "--finetune-batch-size", "8", "--no-progress", "steps=2",
                           "batch_size=4", "reset_period=2", "max_train_per_class=2"], env=ENV, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "meta-training as 2 process(es)" in proc.stderr
    assert json.loads((out / "init" / "config.json").read_text())["ctinit"]["world_size"] == 2
    report = json.loads((out / "quickstart.json").read_text())
    assert len(report["per_task"]) == 4 and report["meta_train_seconds"] > 0


def test_the_launcher_forks_on_linux_unless_told_or_threads_run(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(launch, "launch", lambda argv, p, t: calls.append(("torchrun", argv, p, t)) or 0)
    monkeypatch.setattr(launch, "fork", lambda p, t, body: calls.append(("fork", body(), p, t)) or 0)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv(launch.CPU_LAUNCHER_ENV, raising=False)
    monkeypatch.setattr(launch, "single_threaded", lambda: True)
    assert launch.run_processes(2, 1, lambda: 7, ["--out", "o"]) == 0 and calls.pop() == ("fork", 7, 2, 1)
    monkeypatch.setenv(launch.CPU_LAUNCHER_ENV, "torchrun")
    assert launch.run_processes(3, 2, lambda: 7, ["--out", "o"]) == 0 and calls.pop() == ("torchrun", ["--out", "o"], 3, 2)
    monkeypatch.setenv(launch.CPU_LAUNCHER_ENV, "fork")
    assert launch.run_processes(2, 2, lambda: 7, ["--out", "o"]) == 0 and calls.pop()[0] == "torchrun"  # 2 threads
    monkeypatch.setattr(launch, "single_threaded", lambda: False)  # a notebook's kernel: its threads would not fork
    assert launch.run_processes(2, 1, lambda: 7, ["--out", "o"]) == 0 and calls.pop()[0] == "torchrun"
    assert "already runs threads" in capsys.readouterr().err
    monkeypatch.setenv(launch.CPU_LAUNCHER_ENV, "spawn")
    with pytest.raises(ConfigError, match="CTINIT_CPU_LAUNCHER=spawn: set it to fork or torchrun"):
        launch.run_processes(2, 1, lambda: 7, [])
    monkeypatch.delenv(launch.CPU_LAUNCHER_ENV)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert launch.cpu_launcher() == "torchrun"


def test_forked_processes_get_their_rank_and_a_failure_stops_the_others(monkeypatch):
    """Rank 2 fails at once; rank 1 stops at the SIGTERM after the grace; rank 0 ignores it and is killed."""
    monkeypatch.setattr(launch, "FAILURE_GRACE_SECONDS", 0.3)

    def body() -> int:
        rank = int(os.environ["RANK"])
        if any(os.environ.get(k) != v for k, v in launch.process_env(rank, 3, 1, int(os.environ["MASTER_PORT"])).items()):
            return 5
        if rank == 2:
            return 3
        if rank == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(60)
        return 0

    started = time.monotonic()
    assert launch.fork(3, 1, body) == 3  # the first failure's status
    assert time.monotonic() - started < 30
    assert launch.fork(2, 1, lambda: 0) == 0
    assert launch.fork(2, 1, lambda: os.kill(os.getpid(), signal.SIGKILL)) == 128 + signal.SIGKILL
    assert launch.fork(2, 1, lambda: sys.exit()) == 0


def test_sigterm_reaches_the_forked_processes_which_checkpoint_and_resume(tmp_path):
    reference, split = tmp_path / "reference", tmp_path / "split"
    subprocess.run(train_cmd(reference, "steps=200", "checkpoint_every=20", "seed=0"), env=ENV, check=True,
                   capture_output=True)
    proc = subprocess.Popen(train_cmd(split, "--cpu-processes", "2", "steps=200", "checkpoint_every=20", "seed=0"),
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (split / "checkpoints" / "step-20").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)  # to ctinit-train, which passes it on
    _, err = proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "continue with --resume" in err and not (split / "init").exists()
    resumed = subprocess.run(train_cmd(split, "--cpu-processes", "auto", "--resume", "steps=200", "checkpoint_every=20",
                                       "seed=0"), env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "the checkpoint's 2 processes" in resumed.stderr
    assert same_phi(reference, split, atol=1e-5)


def running_with(text: str) -> list[int]:
    """Processes whose command line holds TEXT (forked processes keep ctinit-train's)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(proc.name))
        except OSError:  # gone meanwhile
            continue
    return found


def test_killing_ctinit_train_stops_its_forked_processes_at_a_checkpoint(tmp_path):
    """SIGKILL to ctinit-train (no chance to pass anything on): its processes get SIGTERM from the kernel
    (PR_SET_PDEATHSIG), checkpoint and stop instead of training on as orphans; --resume ends where a run would."""
    reference, split = tmp_path / "reference", tmp_path / "split"
    subprocess.run(train_cmd(reference, "steps=200", "checkpoint_every=20", "seed=0"), env=ENV, check=True,
                   capture_output=True)
    proc = subprocess.Popen(train_cmd(split, "--cpu-processes", "2", "steps=200", "checkpoint_every=20", "seed=0"),
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (split / "checkpoints" / "step-20").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 60
    while running_with(str(split)) and time.time() < deadline:
        time.sleep(0.1)
    assert not running_with(str(split)), "orphans still run"
    assert not (split / "init").exists(), "the run finished before it could be killed"
    resumed = subprocess.run(train_cmd(split, "--cpu-processes", "2", "--resume", "steps=200", "checkpoint_every=20",
                                       "seed=0"), env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert same_phi(reference, split, atol=1e-5)


def test_a_bad_out_is_said_once_before_any_process_starts(tmp_path):
    (tmp_path / "file").write_text("x")
    for cmd in (train_cmd(tmp_path / "file", "--cpu-processes", "2", "steps=20"),
                [sys.executable, "-m", "ctinit_training.quickstart", "--out", str(tmp_path / "file"), "--cpu-processes",
                 "2", "--no-progress", "steps=2"]):
        proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.count("is a file, not a folder") == 1 and "process(es)" not in proc.stderr


def test_only_the_main_process_records_the_split(tmp_path, record, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    launch.record_split(CONFIG, 90.0, "2x1")
    assert compiled_module.read_record(launch.split_key(CONFIG)) is None
    monkeypatch.setenv("RANK", "0")
    launch.record_split(CONFIG, 90.0, "2x1")
    assert compiled_module.read_record(launch.split_key(CONFIG)) == {"2x1": 90.0}
