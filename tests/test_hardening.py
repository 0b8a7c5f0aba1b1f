"""Hardening: bad input on every command line is one line and exit 2, run directories are owned, nothing
non-finite is published, and kills at checkpoint and export points lose nothing."""
import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import ctinit
import ctinit_training.meta_train as meta_train
from ctinit.cli import main as ctinit_main
from ctinit.config import FinetuneConfig, yaml_load
from ctinit.errors import ConfigError
from ctinit.loading import save_init
from ctinit_hub.__main__ import main as hub_main
from ctinit_training.config import DEFAULTS, TrainConfig, load_config
from ctinit_training.quickstart import main as quickstart_main

from helpers import make_npz, weights

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "training" / "recipes" / "tiny.yaml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
FAST = ["max_train_per_class=4", "batch_size=8", "tasks=[builtin:latin, builtin:greek]"]


def last_error_line(capsys, prefix):
    """Errors after work started: the log lines before it, then one error line, no traceback."""
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    line = captured.err.strip().splitlines()[-1]
    assert line.startswith(prefix), line
    return line


def one_error_line(capsys, prefix):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(prefix), lines[0]
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    (root / "a_file").write_text("not a folder")
    x = np.zeros((12, 28, 28), np.uint8)
    np.savez(root / "huge_label.npz", x=x, y=np.array([0, 1, np.iinfo(np.int64).max] * 4))
    torch.manual_seed(0)
    backbone = ctinit.build_backbone("convnet4-32")
    save_init(backbone, root / "good", {"algorithm": "cts"})
    with torch.no_grad():
        next(backbone.parameters()).fill_(float("nan"))
    save_init(backbone, root / "nan_run" / "init", {"algorithm": "cts"})
    for name, value in (("huge", 10**12), ("text", "abc")):
        shutil.copytree(root / "good", root / name)
        config = json.loads((root / name / "config.json").read_text())
        (root / name / "config.json").write_text(json.dumps({**config, "hidden_size": value}))
    return root


# ----------------------------------------------------------------------------------------------- config schema


def test_yaml_numbers_are_yaml_1_2_in_recipes_and_overrides(tmp_path):
    assert yaml_load("a: 1e-3\nb: 12\nc: .5\nd: -2E5\ne: 1.0e+3\nf: abc") == \
        {"a": 0.001, "b": 12, "c": 0.5, "d": -200000.0, "e": 1000.0, "f": "abc"}
    recipe = tmp_path / "r.yaml"
    recipe.write_text("tasks: [builtin:latin]\nmeta_optimizer: {name: sgd, lr: 1e-3}\n")
    assert load_config(recipe)["meta_optimizer"]["lr"] == 0.001
    assert load_config(TINY, ["meta_optimizer.lr=1e-3"])["meta_optimizer"]["lr"] == 0.001


def test_defaults_live_in_the_schema():
    assert DEFAULTS["inner_optimizer"] == {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005,
                                           "betas": [0.9, 0.999], "nesterov": False}
    assert DEFAULTS["validation"]["steps"] == 100 and DEFAULTS["steps"] == TrainConfig().steps == 1000
    assert FinetuneConfig().optimizer["name"] == "adam" and FinetuneConfig().milestones == (0.4, 0.7, 0.9)
    with pytest.raises(ConfigError, match=r"^gamma = -1: input should be greater than 0$"):
        FinetuneConfig(gamma=-1)


# ----------------------------------------------------------------------------------------------- ctinit-train

TRAIN_CASES = [
    (["seed=abc"], "seed = 'abc': input should be a valid integer"),
    (["seed=-1"], "seed = -1"),
    (["inner_optimizer.momentum=-1"], "inner_optimizer.momentum = -1: input should be greater than or equal to 0"),
    (["meta_exclude=['(']"], "meta_exclude = '(': not a regular expression"),
    (["max_train_per_class=abc"], "max_train_per_class = 'abc'"),
    (["image_size=1"], "image_size = 1: input should be greater than or equal to 8"),
    (["log_with=bogus"], "log_with = 'bogus': input should be 'all', 'tensorboard'"),
    (["validation.steps=abc"], "validation.steps = 'abc'"),
    (["validation.every=5"], "validation.every is set but validation.tasks is empty"),
    (["augment=maybe"], "augment = 'maybe': input should be a valid boolean"),
    (["shift=abc"], "shift = 'abc': input should be a valid boolean"),
    (["meta_optimizer.lr=.inf"], "meta_optimizer.lr = inf: input should be a finite number"),
    (["meta_optimizer.name=lion"], "meta_optimizer.name = 'lion'"),
    (["steps=0"], "steps = 0"),
    (["tasks=[]"], "tasks: must be a non-empty list"),
    (["tasks=[klingon:x]"], "unknown task spec 'klingon:x'"),
    (["validation.bogus=1"], "validation.bogus: unknown key"),
    (["steps"], "not key=value"),
]


@pytest.mark.parametrize("overrides,needle", TRAIN_CASES)
def test_train_bad_config_is_one_line_exit_2_before_any_work(tmp_path, capsys, overrides, needle):
    out = tmp_path / "run"
    assert meta_train.main(["--config", TINY, "--out", str(out), "--no-progress", *overrides]) == 2
    assert needle in one_error_line(capsys, "ctinit-train: error: ")
    assert not out.exists()  # checked before the run directory is touched


def exit_code(main, argv):
    """What the command exits with, whether ``main`` returns it or argparse raises SystemExit."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("argv,prefix,needle", [
    (["--config", TINY, "--out", "{files}/a_file"], "ctinit-train: error:", "is a file, not a folder"),
    (["--config", "no-such-recipe", "--out", "{tmp}/r"], "ctinit-train: error:", "no such recipe file"),
    (["--config", TINY, "--out", "{tmp}/r", "--resume", "--overwrite"], "ctinit-train: error:", "pass one of them"),
    (["--config", TINY], "ctinit-train: error:", "the following arguments are required: --out"),
    (["--config", TINY, "--out", "{tmp}/r", "--bogus"], "ctinit-train: error:", "unrecognized arguments: --bogus"),
])
def test_train_bad_arguments_are_one_line(tmp_path, capsys, files, argv, prefix, needle):
    argv = [a.format(files=files, tmp=tmp_path) for a in argv]
    assert exit_code(meta_train.main, argv) == 2
    assert needle in one_error_line(capsys, prefix)


# ----------------------------------------------------------------------------------------------- ctinit / hub

CTINIT_CASES = [
    (["finetune", "--seed", "-1"], "--seed = -1: input should be greater than or equal to 0"),
    (["finetune", "--seed", str(2**70)], "--seed = 1180591620717411303424"),
    (["finetune", "--weight-decay", "-1"], "--weight-decay = -1.0: input should be greater than or equal to 0"),
    (["finetune", "--milestones", "5", "--gamma", "-1"], "--milestones.0 = 5.0: input should be less than or equal to 1"),
    (["finetune", "--gamma", "-1"], "--gamma = -1.0: input should be greater than 0"),
    (["finetune", "--lr", "inf"], "--lr = inf: input should be a finite number"),
    (["finetune", "--steps", "0"], "--steps = 0"),
    (["finetune", "--max-train-per-class", "-3"], "--max-train-per-class = -3"),
    (["finetune", "--device", "tpu"], "--device = 'tpu'"),
    (["finetune", "--steps", "abc"], "argument --steps: invalid int value: 'abc'"),
    (["finetune", "--init", "{files}/huge"], "config hidden_size = 1000000000000: must be a positive integer"),
    (["finetune", "--init", "{files}/text"], "config hidden_size = 'abc': must be a positive integer"),
    (["finetune", "--data", "npz:{files}/huge_label.npz"], "labels must be 0..C-1 with C at most 100000"),
    (["evaluate", "--out", "{files}/a_file"], "--out {files}/a_file: is a file, not a folder"),
    (["evaluate", "--seeds", "-1"], "--seeds"),
    (["evaluate", "--seeds", f"{2**70},1"], "seeds are integers from 0 to 2**53 - 1"),
    (["list", "--limit", "0"], "--limit = 0"),
]


@pytest.mark.parametrize("argv,needle", CTINIT_CASES)
def test_ctinit_bad_input_is_one_line_exit_2(tmp_path, capsys, files, argv, needle):
    argv = [a.format(files=files) for a in argv]
    base = {"finetune": ["--init", "scratch:convnet4-32", "--data", "builtin:latin", "--steps", "2", "--no-progress"],
            "evaluate": ["--init", "scratch:convnet4-32", "--data", "builtin:latin", "--steps", "2", "--no-progress",
                         "--out", str(tmp_path / "eval")],
            "list": []}[argv[0]]
    if "--out" in argv:  # one --out only
        i = base.index("--out")
        base = base[:i] + base[i + 2:]
    code = exit_code(ctinit_main, [argv[0], *base, *argv[1:]])  # argparse keeps the last of a repeated option
    assert code == 2
    assert needle.format(files=files) in one_error_line(capsys, "ctinit")


def test_device_cuda_without_a_gpu_is_refused(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert ctinit_main(["finetune", "--init", "scratch:convnet4-32", "--data", "builtin:latin", "--device", "cuda"]) == 2
    assert "no such CUDA device on this machine (0 visible)" in one_error_line(capsys, "ctinit: error:")


def test_internal_errors_say_so_and_show_a_traceback_only_with_debug(monkeypatch, capsys):
    import ctinit.cli as cli

    def bug(args):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "cmd_list", bug)
    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["list"].set_defaults(func=bug)
    assert ctinit_main(["list"]) == 1
    assert "internal error, rerun with --debug" in one_error_line(capsys, "ctinit: internal error")
    with pytest.raises(KeyError):
        ctinit_main(["list", "--debug"])


@pytest.mark.parametrize("argv,prefix,needle", [
    (["export", "/nonexistent", "{tmp}/x"], "ctinit-hub: error:", "/nonexistent: no such run directory"),
    (["export", "{files}/nan_run", "{files}/a_file"], "ctinit-hub: error:", "holds non-finite values"),
    (["pull", "a_b_c"], "ctinit-hub: error:", "repo id 'a_b_c': write a Hub id as ORG/NAME"),
    (["push", "/nonexistent", "--repo", "a/b"], "ctinit-hub: error:", "/nonexistent: no such export folder"),
    (["list", "--limit", "0"], "ctinit-hub: error:", "--limit = 0"),
    (["export"], "ctinit-hub export: error:", "the following arguments are required: run_dir, out_dir"),
])
def test_hub_bad_input_is_one_line_exit_2(tmp_path, files, capsys, argv, prefix, needle):
    assert exit_code(hub_main, [a.format(tmp=tmp_path, files=files) for a in argv]) == 2
    assert needle in one_error_line(capsys, prefix)


def test_hub_export_refuses_non_finite_weights(tmp_path, files, capsys):
    assert hub_main(["export", str(files / "nan_run"), str(tmp_path / "export")]) == 2
    assert "holds non-finite values" in one_error_line(capsys, "ctinit-hub: error:")
    assert not (tmp_path / "export").exists()


def test_quickstart_checks_its_options_before_training(tmp_path, capsys):
    assert quickstart_main(["--out", str(tmp_path / "q"), "--finetune-steps", "0", "--no-progress"]) == 2
    assert "steps = 0" in one_error_line(capsys, "quickstart: error:")
    assert not (tmp_path / "q").exists()


# ----------------------------------------------------------------------------------------------- non-finite


def test_finetune_stops_on_a_non_finite_loss(files, capsys):
    args = ["finetune", "--data", "builtin:latin", "--steps", "30", "--no-progress", "--max-train-per-class", "4"]
    assert ctinit_main([*args, "--init", str(files / "nan_run" / "init")]) == 2
    assert "the loss became non-finite by step 1" in last_error_line(capsys, "ctinit: error:")
    assert ctinit_main([*args, "--init", str(files / "good"), "--lr", "1e30"]) == 2
    line = last_error_line(capsys, "ctinit: error:")
    assert "the loss became non-finite by step" in line and "lower the learning rate" in line


@pytest.mark.parametrize("log_every", [1, 50])
def test_a_non_finite_phi_stops_the_run_and_nothing_is_exported(tmp_path, capsys, monkeypatch, log_every):
    from ctinit.meta import TrajectoryEngine

    class Poisoned(TrajectoryEngine):  # a meta-update that overflows at step 5
        def step(self):
            result = super().step()
            if self.step_count == 5:
                with torch.no_grad():
                    self.phi[:100] = float("inf")
            return result

    monkeypatch.setattr(meta_train, "TrajectoryEngine", Poisoned)
    out = tmp_path / "run"
    code = meta_train.main(["--config", TINY, "--out", str(out), "--no-progress", *FAST, "steps=8",
                            f"log_every={log_every}", "checkpoint_every=2"])
    assert code == 2
    line = last_error_line(capsys, "ctinit-train: error: phi became non-finite by step")
    # caught at the first log record after the overflow, else at the next checkpoint
    assert f"by step {5 if log_every == 1 else 6}" in line and "the last finite checkpoint is" in line
    assert str(out / "checkpoints" / "step-4") in line
    assert not (out / "init").exists() and not (out / "init.tmp").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-4"]
    for step in (out / "checkpoints").iterdir():  # every checkpoint left is finite
        assert all(torch.isfinite(v).all() for v in weights_of_checkpoint(step).values() if v.is_floating_point())


def weights_of_checkpoint(step_dir):
    from safetensors.torch import load_file

    return load_file(str(step_dir / "rank-0.safetensors"))


# ----------------------------------------------------------------------------------------------- run directories


def train(out, *overrides, resume=False, overwrite=False):
    return meta_train.main(["--config", TINY, "--out", str(out), "--no-progress", *FAST, *overrides,
                            *(["--resume"] if resume else []), *(["--overwrite"] if overwrite else [])])


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
                              "--no-progress", *FAST, "steps=100000"], env=ENV, stdout=subprocess.DEVNULL,
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

    monkeypatch.setattr(meta_train, "save_init", full_disk)
    assert train(out, "steps=4") == 2  # checkpoint_every=0
    assert "no space left on the device" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (out / "init").exists() and (out / "checkpoints" / "step-4" / "meta.json").is_file()
    monkeypatch.undo()
    assert train(out, "steps=4", resume=True) == 0
    assert (out / "init" / "model.safetensors").is_file()
    assert not (out / "checkpoints").exists()  # checkpoint_every=0: the safety checkpoint goes once the init is written


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
    real_fault_point = meta_train._fault_point

    def die(name, step=None):
        if (name, step) == ("checkpoint", 20):
            raise Killed(137)

    monkeypatch.setattr(meta_train, "_fault_point", die)
    with pytest.raises(Killed):
        train(out, *new, overwrite=True)
    monkeypatch.setattr(meta_train, "_fault_point", real_fault_point)
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

    data = f"npz:{make_npz(tmp_path / 'bars.npz')}"
    cfg = FinetuneConfig(steps=2, batch_size=8, progress=False)
    calls = []
    real = evaluate.finetune

    def counting(*args, **kwargs):
        calls.append(kwargs.get("device"))
        if len(calls) == 2:
            raise KeyboardInterrupt  # interrupted during the second run
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "finetune", counting)
    with pytest.raises(KeyboardInterrupt):
        evaluate.run_evaluation(["scratch:convnet4-32"], [data], seeds=2, config=cfg, progress=False, out=tmp_path / "e")
    assert len((tmp_path / "e" / "runs.jsonl").read_text().splitlines()) == 1
    calls.clear()
    monkeypatch.setattr(evaluate, "finetune", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    results = evaluate.run_evaluation(["scratch:convnet4-32"], [data], seeds=2, config=cfg, progress=False,
                                      out=tmp_path / "e")
    assert len(calls) == 1 and [r["seed"] for r in results["runs"]] == [0, 1]  # seed 0 was reused
    calls.clear()
    other = FinetuneConfig(steps=3, batch_size=8, progress=False)  # other options: nothing is reused
    evaluate.run_evaluation(["scratch:convnet4-32"], [data], seeds=2, config=other, progress=False, out=tmp_path / "e")
    assert len(calls) == 2
