"""Run directories are owned: a folder holding a run, a locked folder and a changed resume are refused."""
import errno
import json
import os
import subprocess
import sys
import time

import ctinit_training.export as export
import ctinit_training.meta_train as meta_train
from ctinit.schema import yaml_load

from helpers import make_npz
from robust_support import ENV, FAST, TINY, one_error_line, train


# ----------------------------------------------------------------------------------------------- run directories


def test_a_folder_holding_a_run_is_refused_without_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, "steps=4", "checkpoint_every=2") == 0
    capsys.readouterr()
    assert train(out, "steps=4", "seed=1") == 2
    assert "holds another run (config.yaml, init, checkpoints)" in one_error_line(capsys, "ctinit-train: error:")
    assert train(out, "steps=6", "seed=1", resume=True) == 2
    assert "config keys ['seed'] differ from the run's config.yaml" in one_error_line(capsys, "ctinit-train: error:")
    assert train(out, "steps=2", resume=True) == 2
    assert "steps = 2 is below the step of the checkpoint to resume" in one_error_line(capsys, "ctinit-train: error:")
    assert train(out, "steps=4", "seed=1", overwrite=True) == 0
    assert yaml_load((out / "config.yaml").read_text())["seed"] == 1


def test_a_second_run_while_the_first_trains_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "ctinit_training.meta_train", "--config", TINY, "--out", str(out),
                              "--no-progress", "--cpu-processes", "1", *FAST, "steps=100000"], env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / "config.yaml").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended early"
        for flags in ([], ["--resume"], ["--overwrite"]):  # not even --overwrite takes a folder that is in use
            assert train(out, "steps=100000", *flags) == 2
            assert f"is in use by process {first.pid} on host" in one_error_line(capsys, "ctinit-train: error:")
        assert (out / "config.yaml").is_file() and (out / ".lock").is_file()  # the first run's files untouched
    finally:
        first.kill()
        first.wait()


def test_resume_refuses_changed_task_classes_and_a_damaged_meta_json(tmp_path, capsys):
    task = make_npz(tmp_path / "task.npz", classes=3)
    out = tmp_path / "run"
    overrides = [f"tasks=[npz:{task}]", "checkpoint_every=2", "max_train_per_class=4", "batch_size=8"]
    assert meta_train.main(["--config", TINY, "--out", str(out), "--no-progress", *overrides, "steps=4"]) == 0
    make_npz(task, classes=4)  # the task changed under the run
    capsys.readouterr()
    assert meta_train.main(["--config", TINY, "--out", str(out), "--no-progress", *overrides, "steps=6",
                            "--resume"]) == 2
    assert "task task has 4 classes but its head in the checkpoint has 3" in one_error_line(capsys, "ctinit-train: error:")
    make_npz(task, classes=3)
    meta_path = out / "checkpoints" / "step-4" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "world_size"}))
    assert meta_train.main(["--config", TINY, "--out", str(out), "--no-progress", *overrides, "steps=6",
                            "--resume"]) == 2
    assert "meta.json: missing world_size; delete this step folder" in one_error_line(capsys, "ctinit-train: error:")


def test_a_failed_export_leaves_a_checkpoint_to_resume_from(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "init.tmp" / "model.safetensors"))

    monkeypatch.setattr(export, "save_init", full_disk)
    assert train(out, "steps=4") == 2  # checkpoint_every=0
    assert "no space left on the device" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (out / "init").exists() and (out / "checkpoints" / "step-4" / "meta.json").is_file()
    monkeypatch.undo()
    assert train(out, "steps=4", resume=True) == 0
    assert (out / "init" / "model.safetensors").is_file()
    assert not (out / "checkpoints").exists()  # checkpoint_every=0: the safety checkpoint goes once the init is written
