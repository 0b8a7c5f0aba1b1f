"""Hardening of what commands write and own: a full disk (a real small file system where root may mount one, a real
file-size limit everywhere) is one line that names what is kept and loses nothing; output folders are held with an
OS lock (a second command is refused, a dead one never blocks); tokens never reach an error line; a resumed run
measures phi_distance from its start; licenses, program names and --help are what an installed user needs."""
import errno
import json
import multiprocessing
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import ctinit
import ctinit_training.meta_train as meta_train
import ctinit_training.rundir as rundir
from ctinit.atomic import LOCK_FILES, LOCK_NAME, OWNER_NAME, FolderLock, staged_dir
from ctinit.cli import main as cli_main
from ctinit.errors import ConfigError, WriteError
from ctinit.models.finetuned_folder import save_finetuned
from ctinit_hub.__main__ import main as hub_main

from helpers import make_npz, weights

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "training" / "recipes" / "tiny.yaml")
FAST = ["max_train_per_class=4", "batch_size=8", "tasks=[builtin:latin, builtin:greek]"]
# subprocesses import the code under test: the checkout first, then whatever the caller's path adds
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
TOKEN_SHAPED = "hf_" + "Zq7" * 12  # 36 letters and digits after hf_: shaped like a Hugging Face token


def error_lines(capsys, prefix):
    """stderr's lines; the last one is the error, starting with ``prefix``; never a traceback."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith(prefix), err
    assert "Traceback" not in err
    return lines


def train(out, *overrides, resume=False, overwrite=False):
    return meta_train.main(["--config", TINY, "--out", str(out), "--no-progress", *FAST, *overrides,
                            *(["--resume"] if resume else []), *(["--overwrite"] if overwrite else [])])


def snapshot(folder):
    """Every file under ``folder`` (hidden ones too, not the lock's files) and its bytes."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in LOCK_FILES}


def classifier(seed=0, classes=3):
    torch.manual_seed(seed)
    return ctinit.ImageClassifier(ctinit.build_backbone("convnet4-32"), classes)


# ----------------------------------------------------------------------------------------------- a real small disk


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(size)``: a folder on a tmpfs of that size (a real full disk), unmounted afterwards. Needs root and
    a system that lets it mount (CI and this project's machines do); skipped otherwise, saying why."""
    mounted = []

    def mount(size: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a size-limited tmpfs needs root (the file-size-limit tests run everywhere)")
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or result.returncode})")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` up to ``leave`` free bytes."""
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    with open(disk / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def test_overwrite_on_a_full_disk_keeps_the_old_model(small_disk, tmp_path, capsys):
    disk = small_disk("512k")  # an old and a new model (136 kB each) fit, once the filler is gone
    model = disk / "model"
    save_finetuned(classifier(0), model, labels=["a", "b", "c"])
    before = snapshot(model)
    fill(disk, leave=60_000)  # the new weights (119 kB) do not fit
    with pytest.raises(WriteError, match=rf"^cannot write {re.escape(str(model))}: no space left on the device; "
                                         rf"the model in {re.escape(str(model))} is unchanged$"):
        save_finetuned(classifier(1), model, labels=["x", "y", "z"], overwrite=True)
    assert snapshot(model) == before and sorted(p.name for p in disk.iterdir()) == ["filler", "model"]
    # the command: one line, exit 2, and still the old model
    task = make_npz(tmp_path / "task.npz")
    args = ["finetune", "--init", "scratch:convnet4-32", "--data", f"npz:{task}", "--steps", "2", "--batch-size", "8",
            "--no-progress", "--out", str(model), "--overwrite"]
    capsys.readouterr()
    assert cli_main(args) == 2
    line = error_lines(capsys, "ctinit: error: ")[-1]
    assert line == (f"ctinit: error: cannot write {model}: no space left on the device; the model in {model} is "
                    f"unchanged")
    assert snapshot(model) == before and sorted(p.name for p in disk.iterdir()) == ["filler", "model"]
    (disk / "filler").unlink()
    assert cli_main(args) == 0  # with space, the same command replaces it
    assert snapshot(model)["model.safetensors"] != before["model.safetensors"]
    assert sorted(p.name for p in disk.iterdir()) == ["model"]


def test_a_final_checkpoint_that_does_not_fit_still_exports_and_an_export_that_does_not_fit_is_one_line(
        small_disk, capsys):
    # 400 kB: the run's files and the init (125 kB) fit, its final checkpoint (640 kB) does not
    out = small_disk("400k") / "run"
    assert train(out, "steps=4") == 0  # checkpoint_every=0: the safety checkpoint before the export
    err = capsys.readouterr().err
    assert "no space left on the device; no checkpoint of this run is kept" in err and "exporting the initialization anyway" in err
    assert (out / "init" / "model.safetensors").is_file() and not (out / "checkpoints").exists()
    assert not list(out.glob("*.tmp"))
    # 100 kB: not even the init fits: one line naming what is kept, and no half-written folder left behind
    out = small_disk("100k") / "run"
    assert train(out, "steps=4") == 2
    line = error_lines(capsys, "ctinit-train: error: ")[-1]
    assert line == (f"ctinit-train: error: cannot write {out / 'init'}: no space left on the device; no checkpoint of "
                    f"this run is kept (checkpoint_every=0 writes one only at the end)")
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME, "checkpoints", "config.yaml", "metrics.jsonl",
                                                     "run.json", "train.log"]
    assert not list((out / "checkpoints").iterdir())  # the checkpoint that did not fit is gone


def test_a_checkpoint_that_does_not_fit_keeps_the_last_complete_one(small_disk, capsys):
    out = small_disk("1000k") / "run"  # one checkpoint (640 kB) fits, not a second one beside it
    assert train(out, "steps=6", "checkpoint_every=2", "keep_checkpoints=1") == 2
    line = error_lines(capsys, "ctinit-train: error: ")[-1]
    assert line == (f"ctinit-train: error: cannot write {out}/checkpoints/step-4: no space left on the device; the last "
                    f"complete checkpoint {out}/checkpoints/step-2 is kept (continue from it with --resume)")
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-2"]  # no step-4.tmp left


def test_a_file_size_limit_is_one_line_for_safetensors_too(tmp_path):
    """A real EFBIG (RLIMIT_FSIZE, no root needed): safetensors reports it as SafetensorError."""
    task = make_npz(tmp_path / "task.npz")
    model = tmp_path / "model"
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))  # noqa: E731
    result = subprocess.run([sys.executable, "-m", "ctinit.cli", "finetune", "--init", "scratch:convnet4-32", "--data",
                             f"npz:{task}", "--steps", "1", "--batch-size", "8", "--no-progress", "--out", str(model)],
                            env=ENV, capture_output=True, text=True, preexec_fn=limit, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (f"ctinit: error: cannot write {model}: file too large (over the file system's or this "
                         f"process's file-size limit, see `ulimit -f`); nothing was saved in {model}")
    assert "Traceback" not in result.stderr and not model.exists() and sorted(tmp_path.iterdir()) == [task]


def test_safetensors_and_os_write_errors_map_to_one_line_exit_2():
    from safetensors import SafetensorError

    from ctinit.entrypoint import describe

    code, line = describe(SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"))
    assert (code, line) == (2, "error: no space left on the device; free some space and rerun")
    code, line = describe(OSError(errno.EFBIG, "File too large", "/data/x"))
    assert code == 2 and line.startswith("error: /data/x: file too large")
    code, _ = describe(SafetensorError("Error while deserializing header: HeaderTooLarge"))
    assert code == 1  # not a write failure: a bug to report


def test_a_failed_write_in_a_staged_folder_removes_it_and_keeps_the_old_one(tmp_path):
    from safetensors import SafetensorError

    final = tmp_path / "init"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(WriteError, match=r"^cannot write .*/init: no space left on the device; the old init stays$"):
        with staged_dir(final, kept="the old init stays") as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["init"] and snapshot(final) == {"old.txt": b"old"}
    with pytest.raises(KeyError):  # not a write failure: re-raised as it is, and still nothing changes
        with staged_dir(final, kept="-") as tmp:
            raise KeyError("bug")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["init"]


def test_an_export_overwrite_that_fails_keeps_the_old_export_and_the_users_files(tmp_path, monkeypatch, capsys):
    from safetensors import SafetensorError

    import ctinit_hub.export as export
    from ctinit.loading import save_init

    init = tmp_path / "init"
    save_init(ctinit.build_backbone("convnet4-32"), init,
              {"algorithm": "cts", "tasks": [{"spec": "builtin:latin", "name": "latin"}]})
    out = tmp_path / "export"
    assert hub_main(["export", str(init), str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(export, "_write_weights", full)
    capsys.readouterr()
    assert hub_main(["export", str(init), str(out), "--overwrite", "--license", "mit"]) == 2
    assert error_lines(capsys, "ctinit-hub: error: ") == [
        f"ctinit-hub: error: cannot write {out}: no space left on the device; the export in {out} is unchanged"]
    assert snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["export", "init"]
    monkeypatch.undo()
    assert hub_main(["export", str(init), str(out), "--overwrite", "--license", "mit"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and "license: mit" in (out / "README.md").read_text()


def test_evaluate_results_that_do_not_fit_name_the_finished_runs(tmp_path, monkeypatch, capsys):
    task = make_npz(tmp_path / "task.npz")
    out = tmp_path / "eval"
    args = ["evaluate", "--init", "scratch:convnet4-32", "--data", f"npz:{task}", "--seeds", "1", "--steps", "2",
            "--batch-size", "8", "--out", str(out), "--no-progress"]

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("matplotlib.figure.Figure.savefig", full)
    assert cli_main(args) == 2
    line = error_lines(capsys, "ctinit: error: ")[-1]
    assert line == (f"ctinit: error: cannot write {out / 'curves.png'}: no space left on the device; "
                    f"{out / 'runs.jsonl'} keeps the finished runs (rerun the same command to write the results; it "
                    f"does not repeat them)")
    assert not list(out.glob("*.tmp")) and len((out / "runs.jsonl").read_text().splitlines()) == 1
    monkeypatch.undo()
    assert cli_main(args) == 0 and (out / "curves.png").read_bytes().startswith(b"\x89PNG")


# ----------------------------------------------------------------------------------------------- the folder lock

HOLD = """
import sys, time
from ctinit.atomic import FolderLock
FolderLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def hold(folder):
    """A process holding ``folder``'s lock until it is killed."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_held_folder_is_refused_and_a_dead_holder_never_blocks(tmp_path, capsys):
    out = tmp_path / "run"
    holder = hold(out)
    try:
        assert train(out, "steps=2") == 2
        line = error_lines(capsys, "ctinit-train: error: ")[-1]
        assert f"{out} is in use by process {holder.pid} on host" in line and not (out / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    # killed while holding: the OS released the lock; the next run says so and takes the folder
    assert train(out, "steps=2") == 0
    assert f"stale lock of process {holder.pid} on host" in capsys.readouterr().err
    assert not (out / OWNER_NAME).exists() and (out / "init").is_dir()
    # an empty .lock left by a crash, or an old ctinit's pid file of a live process, blocks nothing
    for content in ("", json.dumps({"pid": os.getpid(), "host": "here", "started": "then"})):
        (out / LOCK_NAME).write_text(content)
        assert train(out, "steps=2", overwrite=True) == 0


def _take(folder, inside, results):
    """A taker: hold the folder's lock for a moment, checking that nobody else is inside meanwhile."""
    try:
        with FolderLock(folder):
            try:
                fd = os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # a second holder would fail here
            except FileExistsError:
                results.put("both held it")
                return
            time.sleep(0.2)
            os.close(fd)
            os.unlink(inside)
            results.put("held")
    except ConfigError:
        results.put("refused")


def test_takers_racing_for_a_stale_lock_never_both_hold_it(tmp_path):
    """The old pid-file lock let 3 of 15 such trials end with two holders; an OS lock cannot."""
    context = multiprocessing.get_context("fork")
    for trial in range(5):
        folder = tmp_path / f"run{trial}"
        folder.mkdir()
        (folder / OWNER_NAME).write_text(json.dumps({"pid": 999999, "host": "gone", "started": "then"}))
        (folder / LOCK_NAME).write_text(json.dumps({"pid": 999999, "host": "gone", "started": "then"}))
        results = context.Queue()
        takers = [context.Process(target=_take, args=(folder, tmp_path / f"inside{trial}", results)) for _ in range(6)]
        for taker in takers:
            taker.start()
        for taker in takers:
            taker.join(60)
        outcomes = sorted(results.get(timeout=10) for _ in takers)
        assert "both held it" not in outcomes and "held" in outcomes, outcomes


def test_a_second_finetune_on_the_same_out_is_refused_before_it_trains(tmp_path, monkeypatch, capsys):
    task = make_npz(tmp_path / "task.npz")
    model = tmp_path / "model"
    first = subprocess.Popen([sys.executable, "-m", "ctinit.cli", "finetune", "--init", "scratch:convnet4-32", "--data",
                              f"npz:{task}", "--steps", "100000", "--batch-size", "8", "--no-progress", "--out",
                              str(model)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (model / OWNER_NAME).exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first finetune ended early"
        trained = []
        monkeypatch.setattr("ctinit.finetune.BatchSampler", lambda *a, **k: trained.append(1))
        for extra in ([], ["--overwrite"]):
            assert cli_main(["finetune", "--init", "scratch:convnet4-32", "--data", f"npz:{task}", "--steps", "2",
                             "--no-progress", "--out", str(model), *extra]) == 2
            lines = error_lines(capsys, "ctinit: error: ")
            assert len(lines) == 1 and f"{model} is in use by process {first.pid} on host" in lines[0]
        assert not trained
    finally:
        first.kill()
        first.wait()


def test_overwrite_never_deletes_files_that_ctinit_did_not_save(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "README.md").write_text("# my project\n")
    (folder / "config.json").write_text('{"mine": true}\n')
    before = snapshot(folder)
    trained = []
    monkeypatch.setattr("ctinit.finetune.BatchSampler", lambda *a, **k: trained.append(1))
    task = make_npz(tmp_path / "task.npz")
    assert cli_main(["finetune", "--init", "scratch:convnet4-32", "--data", f"npz:{task}", "--steps", "2",
                     "--no-progress", "--out", str(folder), "--overwrite"]) == 2
    lines = error_lines(capsys, "ctinit: error: ")
    assert lines == [f"ctinit: error: --out {folder}: holds README.md, config.json that ctinit did not save (no "
                     f"'ctinit' entry in config.json); --overwrite replaces only a model saved by ctinit: choose "
                     f"another folder"]
    assert snapshot(folder) == before and not trained
    with pytest.raises(ConfigError, match="that ctinit did not save"):
        classifier().save_pretrained(folder, overwrite=True)
    assert snapshot(folder) == before


def test_a_fresh_out_that_got_no_model_is_not_left_behind(tmp_path, capsys):
    model = tmp_path / "model"
    assert cli_main(["finetune", "--init", "scratch:convnet4-32", "--data", "npz:/nonexistent.npz", "--steps", "2",
                     "--no-progress", "--out", str(model)]) == 2
    capsys.readouterr()
    assert not model.exists()


def test_evaluate_owns_its_out_folder(tmp_path, capsys):
    task = make_npz(tmp_path / "task.npz")
    args = ["evaluate", "--init", "scratch:convnet4-32", "--data", f"npz:{task}", "--seeds", "1", "--steps", "2",
            "--batch-size", "8", "--no-progress", "--out"]
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "results.json").write_text('{"my": "numbers"}\n')
    assert cli_main(args + [str(theirs)]) == 2
    assert error_lines(capsys, "ctinit: error: ") == [
        f"ctinit: error: --out {theirs}: holds results.json that ctinit evaluate did not write; pass another folder "
        "for the results"]
    assert snapshot(theirs) == {"results.json": b'{"my": "numbers"}\n'}
    busy = tmp_path / "busy"
    holder = hold(busy)
    try:
        assert cli_main(args + [str(busy)]) == 2
        assert f"{busy} is in use by process {holder.pid} on host" in error_lines(capsys, "ctinit: error: ")[-1]
    finally:
        holder.kill()
        holder.wait()
    mine = tmp_path / "mine"
    (mine).mkdir()
    (mine / "notes.txt").write_text("kept")
    assert cli_main(args + [str(mine)]) == 0 and cli_main(args + [str(mine)]) == 0  # its own results: reused
    assert (mine / "notes.txt").read_text() == "kept" and (mine / "results.json").is_file()


# ----------------------------------------------------------------------------------------------- tokens, resume


def exit_code(main, args):
    """What a command line exits with, whether ``main`` returns it or argparse raises it."""
    try:
        return main(args)
    except SystemExit as e:
        return e.code


def test_token_shaped_arguments_never_reach_an_error_line(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    task = make_npz(tmp_path / "task.npz")
    cases = [
        (cli_main, ["finetune", "--init", f"someorg/{TOKEN_SHAPED}", "--data", f"npz:{task}", "--steps", "1"], "ctinit"),
        (cli_main, ["finetune", "--init", "scratch:convnet4-32", "--data", "npz:x.npz", TOKEN_SHAPED], "ctinit"),
        (meta_train.main, ["--config", TOKEN_SHAPED, "--out", str(tmp_path / "r")], "ctinit-train"),
        (hub_main, ["pull", f"someorg/{TOKEN_SHAPED}"], "ctinit-hub"),
    ]
    for main, args, prog in cases:
        assert exit_code(main, args) == 2, args
        err = capsys.readouterr().err
        assert TOKEN_SHAPED not in err and "hf_***" in err and err.startswith(f"{prog}: error:"), err


def test_phi_distance_after_resume_is_measured_from_the_runs_start(tmp_path, monkeypatch):
    config = ["steps=20", "checkpoint_every=10", "log_every=5"]
    reference = tmp_path / "reference"
    assert train(reference, *config) == 0

    class Killed(SystemExit):
        pass

    def die(name, step=None):
        if (name, step) == ("checkpoint", 20):
            raise Killed(137)

    out = tmp_path / "run"
    real = rundir.fault_point
    monkeypatch.setattr(rundir, "fault_point", die)
    with pytest.raises(Killed):
        train(out, *config)
    monkeypatch.setattr(rundir, "fault_point", real)
    assert train(out, *config, resume=True) == 0

    def distances(run):
        return [(r["step"], r["phi_distance"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]

    assert [s for s, _ in distances(out)] == [5, 10, 15, 20]
    assert distances(out) == distances(reference)  # the resumed part too, measured from step 0's phi
    assert all(torch.equal(a, b) for a, b in zip(weights(out / "init").values(), weights(reference / "init").values()))


# ----------------------------------------------------------------------------------------------- the newcomer


def test_program_names_and_did_you_mean(tmp_path, capsys):
    assert meta_train.main(["--config", TINY, "--out", str(tmp_path / "r"), "step=100"]) == 2
    assert error_lines(capsys, "ctinit-train: error: unknown config keys ['step'] (did you mean steps?)")
    assert meta_train.main(["--config", TINY, "--out", str(tmp_path / "r"), "meta_optimizr.lr=1"]) == 2
    assert "(did you mean meta_optimizer?)" in error_lines(capsys, "ctinit-train: error: ")[-1]
    assert hub_main(["pull", "a_b_c"]) == 2
    assert error_lines(capsys, "ctinit-hub: error: repo id 'a_b_c'")


def help_text(main, args, capsys):
    with pytest.raises(SystemExit) as exited:
        main(args + ["--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


#: A path into the repository (a user of the installed package does not have it); not a URL's path.
REPOSITORY_PATHS = re.compile(r"(?<![\w/.-])(training|hub|model_cards|scripts|benchmarks|tests)/")


def quickstart_main(argv):
    from ctinit_training.quickstart import main

    return main(argv)


@pytest.mark.parametrize("main,args", [
    (cli_main, []), (cli_main, ["finetune"]), (cli_main, ["predict"]), (cli_main, ["evaluate"]), (cli_main, ["list"]),
    (meta_train.main, []), (quickstart_main, []), (hub_main, []), (hub_main, ["export"]), (hub_main, ["push"]),
    (hub_main, ["pull"]), (hub_main, ["update-card"]), (hub_main, ["list"]),
])
def test_help_names_no_repository_paths(main, args, capsys):
    text = help_text(main, args, capsys)
    assert not REPOSITORY_PATHS.search(text), REPOSITORY_PATHS.search(text).group(0)


def test_finetune_help_shows_defaults_and_ctinit_train_lists_its_recipes(capsys):
    text = " ".join(help_text(cli_main, ["finetune"], capsys).split())
    for needle in ("weights kept (default: auto)", "(default: 128)", "(default: adam)",
                   "learning rate (default: 0.001)", "(default: 0.0)", "exact fp32 (default: auto)", "(default: 0)"):
        assert needle in text, needle
    text = " ".join(help_text(meta_train.main, [], capsys).split())
    assert "bundled recipe's name (hetero, paper, quickstart, quickstart-colour, tiny)" in text


def test_init_naming_a_run_folder_uses_its_init_with_a_note(tmp_path, caplog, capsys):
    """The note is a warning of the ``ctinit`` logger: on a command line without logging set up, Python prints it
    on stderr as it is (logging's last-resort handler)."""
    from ctinit.loading import save_init

    run = tmp_path / "run"
    save_init(ctinit.build_backbone("convnet4-32"), run / "init", {"algorithm": "cts"})
    task = make_npz(tmp_path / "task.npz")
    assert cli_main(["finetune", "--init", str(run), "--data", f"npz:{task}", "--steps", "1", "--batch-size", "8",
                     "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["init"] == str(run)
    notes = [r.getMessage() for r in caplog.records if r.name == "ctinit.loading" and r.levelname == "WARNING"]
    assert notes == [f"note: {run} is a meta-training run folder; using its initialization {run / 'init'}"]


def test_cards_of_the_users_own_data_do_not_claim_a_license(tmp_path):
    from huggingface_hub import ModelCard

    from ctinit.hubio.cards import card_license

    made = {"task": {"name": "bars", "num_classes": 3, "train_size": 30, "test_size": 6}, "steps": 1, "seed": 0}
    classifier().save_pretrained(tmp_path / "own", labels=["a", "b", "c"], made_with=made)
    card = ModelCard.load(tmp_path / "own" / "README.md")
    assert card.data.license == "other" and "No license was chosen" in card.text and "`--license`" in card.text
    classifier().save_pretrained(tmp_path / "mit", labels=["a", "b", "c"], made_with=made, license="mit")
    card = ModelCard.load(tmp_path / "mit" / "README.md")
    assert card.data.license == "mit" and "No license was chosen" not in card.text
    assert card_license(None, ["builtin:latin", "builtin:fashion-mnist"])[0] == "apache-2.0"
    for specs in (["builtin:colour-cards"], ["builtin:latin", "npz:x.npz"], ["hf:ylecun/mnist"], []):
        assert card_license(None, specs)[0] == "other", specs


def test_readme_says_what_the_bundled_data_allow_and_how_to_install():
    readme = (ROOT / "README.md").read_text()
    licenses = (ROOT / "docs" / "license.md").read_text()  # the README's License section points there
    for needle in ("Apache-2.0", "MIT", "SIL Open Font License", "GPL", "CC-BY-SA", "license: other", "--license"):
        assert needle in licenses, needle
    assert "pip install ." in readme
    # the user's pages: every command works from an installed package, and those that need a checkout say so
    using = "\n".join((ROOT / "docs" / page).read_text() for page in ("newcomer.md", "zoo.md", "finetune.md", "data.md"))
    using += readme[readme.index("## Your own folder"):readme.index("## Architecture")]
    for block in re.findall(r"```bash\n(.*?)```", using, re.S):
        assert not REPOSITORY_PATHS.search(block), block
    for command in re.finditer(r"`python (scripts|benchmarks)/[^`]*`", using):
        assert "checkout" in using[command.start() - 40:command.end() + 20], command.group(0)