"""--overwrite and swaps lose nothing: a run, a model or an export is replaced only by a complete, valid result, and
an interrupted swap is finished or rolled back by the next command, never deleted."""
from ctinit.atomic import FolderLock, old_of, recover_swap
from ctinit.cli import main as cli_main
from ctinit.schema import yaml_load
from ctinit_hub.__main__ import main as hub_main

from helpers import make_npz
from robust_support import train


def _run_files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and ".lock" not in p.name}


def test_overwrite_with_a_misspelt_task_keeps_the_finished_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, "steps=2") == 0
    before = _run_files(out)
    capsys.readouterr()
    assert train(out, "steps=2", "tasks=[builtin:latn, builtin:greek]", overwrite=True) == 2
    err = capsys.readouterr().err
    assert "unknown builtin task" in err and "Traceback" not in err
    assert _run_files(out) == before  # init/, config.yaml, metrics.jsonl, train.log: all as they were
    assert not (out / ".overwritten").exists()


def test_overwrite_replaces_the_run_once_the_new_one_is_complete(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, "steps=2") == 0
    assert train(out, "steps=2", "seed=3", overwrite=True) == 0
    assert yaml_load((out / "config.yaml").read_text())["seed"] == 3
    assert (out / "init" / "model.safetensors").is_file() and not (out / ".overwritten").exists()


def test_a_failed_start_leaves_no_config_that_blocks_the_corrected_rerun(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, "steps=2", f"init_from={tmp_path / 'missing'}") == 2
    assert not (out / "config.yaml").exists()
    capsys.readouterr()
    assert train(out, "steps=2") == 0  # no --overwrite needed: nothing of a run was there


# ----------------------------------------------------------------------------------------------- interrupted swaps


def _finetune(task, out, *flags):
    return cli_main(["finetune", "--init", "scratch:convnet4-32", "--data", f"npz:{task}", "--steps", "1",
                     "--batch-size", "8", "--no-progress", "--out", str(out), *flags])


def test_a_swap_killed_between_its_renames_is_rolled_back_never_deleted(tmp_path, capsys):
    task = make_npz(tmp_path / "task.npz")
    model = tmp_path / "models" / "K"
    assert _finetune(task, model) == 0
    (model / "notes.txt").write_text("the user's own file")
    before = _run_files(model)
    model.rename(old_of(model))  # SIGKILL after the first rename of `finetune --out models/K --overwrite`
    capsys.readouterr()
    assert _finetune(task, model) == 2  # no --overwrite: the model is put back, then the folder is refused
    assert "exists and is not empty" in capsys.readouterr().err
    assert _run_files(model) == before and not old_of(model).exists()
    model.rename(old_of(model))
    assert _finetune(task, model, "--overwrite") == 0
    assert (model / "notes.txt").read_text() == "the user's own file" and not old_of(model).exists()


def test_a_swap_killed_after_its_second_rename_is_finished(tmp_path):
    final, old = tmp_path / "K", old_of(tmp_path / "K")
    final.mkdir()
    (final / "new").write_text("new")
    old.mkdir()
    (old / "old").write_text("old")
    assert "removed" in recover_swap(final)
    assert sorted(p.name for p in final.iterdir()) == ["new"] and not old.exists()


def test_a_swap_in_progress_in_a_live_process_is_left_alone(tmp_path):
    old = old_of(tmp_path / "K")
    with FolderLock(old):  # the live writer holds the lock that moved with the folder
        assert recover_swap(tmp_path / "K") is None
    assert old.is_dir() and not (tmp_path / "K").exists()


def test_an_export_swap_killed_between_its_renames_is_rolled_back(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(run, "steps=2") == 0
    export = tmp_path / "export"
    assert hub_main(["export", str(run), str(export)]) == 0
    before = _run_files(export)
    export.rename(old_of(export))
    capsys.readouterr()
    assert hub_main(["export", str(run), str(export)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert _run_files(export) == before


def test_a_run_init_swap_killed_between_its_renames_is_rolled_back(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(run, "steps=2", "checkpoint_every=2") == 0
    before = _run_files(run / "init")
    (run / "init").rename(run / "init.old")
    capsys.readouterr()
    assert train(run, "steps=2", "seed=1") == 2  # the run is seen (and its init back), so a new run is refused
    assert "holds another run" in capsys.readouterr().err
    assert _run_files(run / "init") == before
