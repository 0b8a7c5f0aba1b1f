"""Fine-tuning length, schedules and early stopping (ctinit/finetune_schedule.py and its use in finetune, evaluate
and the command line)."""
import dataclasses
import json
import math

import pytest
import torch

import ctinit
from ctinit.cli import main as cli_main
from ctinit.errors import ConfigError
from ctinit.finetune import FinetuneConfig, LATER_FIELDS, finetune, make_config, run_identity
from ctinit.finetune_schedule import (AUTO_EPOCHS, AUTO_PATIENCE, EarlyStopping, build_scheduler, eval_interval,
                                      lr_factor, milestone_steps, planned_steps)
from ctinit.tasks import load_task

from helpers import make_npz


@pytest.fixture(scope="module")
def task_spec(tmp_path_factory):
    return f"npz:{make_npz(tmp_path_factory.mktemp('sched') / 'bars.npz', n_per_class=20, classes=3)}"


def _lrs(scheduler, optimizer, steps):
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_length_in_epochs_follows_the_data():
    assert planned_steps(300, None, 800, 128) == 300
    assert planned_steps(300, 10, 800, 128) == math.ceil(10 * 800 / 128) == 63
    assert planned_steps(300, 10, 80_000, 128) == 6250  # a large folder is not cut short
    assert planned_steps(300, 0.01, 5, 128) == 1


def test_eval_interval_is_an_epoch_with_at_least_ten_evaluations():
    assert eval_interval(7, 3, 100, 800, 128) == 7  # set explicitly
    assert eval_interval(0, 0, 100, 800, 128) == 0  # no early stopping: the end only
    assert eval_interval(0, 3, 1000, 800, 128) == 7  # one epoch of 800 at batch 128
    assert eval_interval(0, 3, 30, 8000, 128) == 3  # an epoch longer than the run: >= 10 evaluations


def test_the_step_schedule_is_multisteplr_exactly_and_lambda_agrees():
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD(params, lr=0.1)
    sched = build_scheduler(opt, 50, "step", 0.0, (0.4, 0.7, 0.9), 0.3)
    assert isinstance(sched, torch.optim.lr_scheduler.MultiStepLR)  # records made before the options reproduce
    lrs = _lrs(sched, opt, 50)
    assert milestone_steps((0.4, 0.7, 0.9), 50) == [20, 35, 45]
    expected = [0.1 * lr_factor(i, 50, "step", 0.0, (0.4, 0.7, 0.9), 0.3) for i in range(50)]
    assert lrs == pytest.approx(expected)
    assert lrs[19] == pytest.approx(0.1) and lrs[20] == pytest.approx(0.03) and lrs[49] == pytest.approx(0.1 * 0.3**3)


def test_warmup_then_cosine():
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD(params, lr=1.0)
    lrs = _lrs(build_scheduler(opt, 100, "cosine", 0.1, (0.5,), 0.3), opt, 100)
    assert lrs[:10] == pytest.approx([(i + 1) / 11 for i in range(10)])  # linear rise over 10% of the steps
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))
    assert lrs[10] == pytest.approx(1.0)  # the base rate after warm-up
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then only down
    assert lrs[55] == pytest.approx(0.5, abs=0.02) and lrs[-1] < 0.001
    # warm-up also goes before the step schedule
    opt = torch.optim.SGD(params, lr=1.0)
    lrs = _lrs(build_scheduler(opt, 100, "step", 0.2, (0.5,), 0.3), opt, 100)
    assert lrs[0] < 0.1 and lrs[20] == pytest.approx(1.0) and lrs[60] == pytest.approx(0.3)


def test_early_stopping_tracks_the_best_and_restores_it():
    net = torch.nn.Linear(2, 2)
    tracker = EarlyStopping(patience=2)
    with torch.no_grad():
        net.weight.fill_(1.0)
    assert tracker.update(10, 0.5, 1.0, net)
    with torch.no_grad():
        net.weight.fill_(2.0)
    assert tracker.update(20, 0.5, 0.8, net)  # equal accuracy, lower loss: better
    with torch.no_grad():
        net.weight.fill_(3.0)
    assert not tracker.update(30, 0.4, 0.5, net) and not tracker.should_stop
    assert not tracker.update(40, 0.5, 0.9, net) and tracker.should_stop
    tracker.restore(net)
    assert tracker.best_step == 20 and torch.all(net.weight == 2.0)
    never = EarlyStopping(patience=0)
    for step in range(5):
        never.update(step, 0.1, 1.0)
    assert not never.should_stop


def test_new_fields_are_checked_and_default_to_the_old_behaviour():
    cfg = FinetuneConfig()
    assert {k: getattr(cfg, k) for k in LATER_FIELDS} == LATER_FIELDS
    for bad in ({"schedule": "linear"}, {"warmup": 1.0}, {"label_smoothing": -0.1}, {"early_stop": -1},
                {"epochs": 0}):
        with pytest.raises(ConfigError):
            make_config(None, **bad)
    recipe = dataclasses.asdict(make_config(None, schedule="cosine"))
    assert run_identity(recipe)["schedule"] == "cosine" and "warmup" not in run_identity(recipe)


def test_early_stopping_stops_keeps_the_best_step_and_records_it(task_spec, monkeypatch):
    import ctinit.finetune as ft
    from ctinit.tasks.subsets import prepare_task

    train, validation = prepare_task(load_task(task_spec, seed=0), 0, 0.25, "test", None, None)
    # validation accuracy at steps 2, 4, 6...: best at 6; 10 only ties it (same loss), so 8, 10, 12 bring nothing
    scripted = iter([(0.2, 1.0), (0.5, 1.0), (0.6, 1.0), (0.55, 1.0), (0.6, 1.0), (0.4, 1.0)])
    monkeypatch.setattr(ft, "evaluate", lambda *a, **k: next(scripted, (0.1, 2.0)))
    backbone = ctinit.build_backbone("convnet4-32")
    states = {}
    result = finetune(backbone, train, steps=200, batch_size=16, eval_every=2, early_stop=3, progress=False,
                      validation=validation, channels_last=False,
                      on_step=lambda s: states.__setitem__(s, {k: v.clone() for k, v in backbone.state_dict().items()}))
    assert result.stop_reason == "early_stop" and result.steps == 12 and result.planned_steps == 200
    assert result.best_step == 6 and [s for s, _ in result.curve] == [2, 4, 6, 8, 10, 12]
    kept = backbone.state_dict()
    assert all(torch.equal(kept[k], states[6][k]) for k in kept)  # the best step's weights, not the last step's
    assert not all(torch.equal(kept[k], states[12][k]) for k in kept)
    assert result.recipe["early_stop"] == 3 and result.recipe["hflip"] is False and "seed" not in result.recipe
    with pytest.raises(ConfigError, match="validation split"):
        finetune(ctinit.build_backbone("convnet4-32"), train, steps=5, early_stop=2, progress=False)


def test_epochs_set_the_length_and_label_smoothing_changes_the_loss(task_spec):
    task = load_task(task_spec, seed=0)
    result = finetune(ctinit.build_backbone("convnet4-32"), task, epochs=2, batch_size=16, progress=False,
                      channels_last=False)
    assert result.steps == result.planned_steps == math.ceil(2 * len(task.y_train) / 16)
    assert result.stop_reason == "steps" and result.best_step is None and math.isfinite(result.train_loss)
    plain = finetune(ctinit.build_backbone("convnet4-32"), task, steps=3, batch_size=16, progress=False, seed=1,
                     channels_last=False)
    torch.manual_seed(0)
    smooth = finetune(ctinit.build_backbone("convnet4-32"), task, steps=3, batch_size=16, progress=False, seed=1,
                      label_smoothing=0.3, channels_last=False)
    assert smooth.train_loss != plain.train_loss


def test_cli_steps_auto_is_the_finetune_default_and_is_recorded(task_spec, capsys):
    assert cli_main(["finetune", "--init", "scratch:convnet4-32", "--data", task_spec, "--json", "--no-progress",
                     "--batch-size", "32", "--channels-last", "off"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["recipe"]["epochs"] == AUTO_EPOCHS and report["recipe"]["early_stop"] == AUTO_PATIENCE
    assert report["validation_size"] > 0 and report["planned_steps"] == math.ceil(AUTO_EPOCHS * report["train_size"] / 32)
    assert report["stop_reason"] in ("steps", "early_stop") and report["best_step"] is not None
    assert "epochs of" in captured.err and "keeping the best weights" in captured.err


@pytest.mark.parametrize("extra, needle", [
    (["--steps", "auto", "--val-fraction", "0"], "validation split"),
    (["--steps", "10", "--epochs", "2"], "give one length"),
    (["--steps", "ten"], "not a number of steps"),
    (["--schedule", "cosine", "--warmup", "1.5"], "--warmup"),
])
def test_cli_bad_length_options_are_one_line(task_spec, capsys, extra, needle):
    try:
        code = cli_main(["finetune", "--init", "scratch:convnet4-32", "--data", task_spec, "--no-progress", *extra])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err


def test_evaluate_records_each_runs_length_and_keeps_old_run_keys(task_spec):
    from ctinit.evaluate import run_evaluation

    results = run_evaluation(["scratch:convnet4-32"], [task_spec], seeds=[0],
                             config=FinetuneConfig(epochs=1, early_stop=2, batch_size=16, progress=False,
                                                   channels_last=False), progress=False, validation_fraction=0.25)
    run = results["runs"][0]
    assert run["planned_steps"] == run["steps"] or run["stop_reason"] == "early_stop"
    assert results["finetune"]["epochs"] == 1 and results["finetune"]["early_stop"] == 2


def test_a_changed_default_of_a_new_field_changes_the_study_fingerprint(monkeypatch):
    import ctinit.finetune

    from benchmarks.study import runs

    assert runs.changed_settings() == {}

    @dataclasses.dataclass
    class Changed(FinetuneConfig):
        early_stop: int = 5

    monkeypatch.setattr(ctinit.finetune, "FinetuneConfig", Changed)
    assert runs.changed_settings()["finetune"]["early_stop"] == 5


def test_the_progress_bar_shows_loss_and_validation_accuracy(task_spec, capsys):
    from ctinit.tasks.subsets import prepare_task

    train, validation = prepare_task(load_task(task_spec, seed=0), 0, 0.25, "test", None, None)
    finetune(ctinit.build_backbone("convnet4-32"), train, steps=20, batch_size=8, eval_every=10, progress=True,
             validation=validation, channels_last=False)
    err = capsys.readouterr().err
    assert "loss=" in err and "val_acc=" in err


@pytest.mark.parametrize("command, extra, needle", [
    ("evaluate", ["--steps", "auto", "--val-fraction", "0"], "needs a validation split"),
    ("pick", ["--steps", "auto"], "fixed number of steps"),
])
def test_evaluate_and_pick_refuse_early_stopping_they_cannot_do_before_training(task_spec, tmp_path, capsys,
                                                                               command, extra, needle):
    base = {"evaluate": ["evaluate", "--init", "scratch:convnet4-32", "--out", str(tmp_path / "e")],
            "pick": ["pick", "--inits", "zoo:glyph-convnet4-32"]}[command]
    assert cli_main(base + ["--data", task_spec, "--no-progress", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
