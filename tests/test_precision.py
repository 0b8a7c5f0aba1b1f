"""``mixed_precision: auto``: bf16 autocast only where the CPU has bf16 hardware and the run's first steps measure it
faster; the choice is recorded per machine (re-checked when a run's own steps contradict the record), kept in
checkpoints (a run resumed on another machine keeps its precision) and recorded in the export."""
import json

import pytest
import torch

from ctinit.execution import precision as precision_module
from ctinit.execution.precision import (DEFAULT_PRECISION, MIN_PLANNED_STEPS, MIN_SPEEDUP, TRIAL_PAIRS, AutoPrecision,
                                   bf16_hardware, contradicts)

from test_compiled import record, tiny_engine  # noqa: F401 - record: the fixture


def drive(seconds_of, agree=None):
    """Run an AutoPrecision with step times ``seconds_of(bf16)``; returns it and each step's precision."""
    auto, ran = AutoPrecision(lambda: "key", agree=agree), []
    while len(ran) < 50:
        use = auto.use_bf16()
        if auto.decided:
            break
        ran.append(use)
        auto.done(seconds_of(use))
    return auto, ran


def test_bf16_hardware_is_read_from_the_cpu_flags():
    assert bf16_hardware("flags\t\t: fpu sse2 avx512f amx_bf16 amx_tile avx512_bf16\n") == "AMX"
    assert bf16_hardware("flags\t\t: fpu sse2 avx512f avx512_bf16\n") == "AVX512-BF16"
    assert bf16_hardware("flags\t\t: fpu sse2 avx2 fma\n") is None


def test_the_default_is_one_constant_auto_since_bf16_was_shown_equivalent():
    from ctinit.finetune import FinetuneConfig
    from ctinit_training.config import DEFAULTS

    # auto since benchmarks/bf16_accuracy.py showed bf16 equivalent on both suites (precision.py's rule)
    assert DEFAULT_PRECISION == "auto"
    assert DEFAULTS["mixed_precision"] == DEFAULT_PRECISION == FinetuneConfig().mixed_precision


def test_the_study_and_meta_validation_stay_exact_fp32_whatever_the_default():
    from benchmarks.study.config import BASE
    from benchmarks.study.runs import RECORDED_SETTINGS, changed_settings, finetune_config

    assert BASE["mixed_precision"] == "no" and finetune_config(steps=5).mixed_precision == "no"
    assert RECORDED_SETTINGS["finetune"]["mixed_precision"] == "no" and changed_settings() == {}


def test_auto_keeps_bf16_where_it_measured_faster_and_remembers_it(record):
    auto, ran = drive(lambda bf16: 0.5 if bf16 else 1.0)
    assert ran == [False, True] * (TRIAL_PAIRS + 1)  # interleaved; the first of each is warm-up
    assert auto.bf16 and auto.speedup == pytest.approx(2.0)
    assert json.loads(record.read_text())["precision:key"] == {"speedup": 2.0}
    # the next run on this machine takes the record while its own steps do not contradict it
    again, ran = drive(lambda bf16: 0.8 if bf16 else 1.0)
    assert again.bf16 and again.speedup == pytest.approx(2.0) and "before" in again.reason


def test_auto_stays_fp32_where_bf16_is_not_clearly_faster(record):
    times = iter([9.0, 9.0] + [1.0, 0.95] * TRIAL_PAIRS)  # 1.05x: below MIN_SPEEDUP (bf16 is not exact)
    auto, _ = drive(lambda bf16: next(times))
    assert auto.decided and not auto.bf16 and auto.speedup == round(1 / 0.95, 3)


def test_a_record_that_the_runs_own_steps_contradict_is_measured_again(record):
    record.write_text(json.dumps({"precision:key": {"speedup": 3.0}}))  # measured under another load, say
    auto, _ = drive(lambda bf16: 1.25 if bf16 else 1.0)  # this run: bf16 slower
    assert not auto.bf16 and auto.speedup == pytest.approx(0.8) and "contradicted" in auto.reason
    assert json.loads(record.read_text())["precision:key"] == {"speedup": 0.8}
    assert contradicts(1.5, 0.9) and not contradicts(1.5, 1.05) and contradicts(1.0, 1.5) and not contradicts(1.0, 1.2)


def test_processes_agree_on_one_precision(record):
    auto, _ = drive(lambda bf16: 0.5 if bf16 else 1.0, agree=lambda speedup: 1.0)  # the ranks' mean: 1.0x
    assert not auto.bf16 and auto.speedup == 1.0


def _count_autocast(monkeypatch):
    entered = []
    real = torch.autocast.__enter__

    def enter(self):
        entered.append(self.fast_dtype)
        return real(self)
    monkeypatch.setattr(torch.autocast, "__enter__", enter)
    return entered


def test_the_engine_measures_on_bf16_cpus_only_and_a_resumed_run_keeps_its_precision(record, monkeypatch):
    monkeypatch.setattr(precision_module, "bf16_hardware", lambda: None)
    plain = tiny_engine(precision="auto", planned_steps=MIN_PLANNED_STEPS)
    assert plain.precision == "no" and plain._auto_precision is None  # no bf16 hardware: fp32, nothing measured
    monkeypatch.setattr(precision_module, "bf16_hardware", lambda: "AMX")
    assert tiny_engine(precision="auto", planned_steps=MIN_PLANNED_STEPS - 1)._auto_precision is None
    assert tiny_engine("backbone", precision="auto", planned_steps=MIN_PLANNED_STEPS)._auto_precision is None
    record.write_text(json.dumps({}))
    monkeypatch.setattr(precision_module, "contradicts", lambda recorded, measured: False)
    engine = tiny_engine(precision="auto", channels_last="auto", planned_steps=MIN_PLANNED_STEPS)
    assert engine.precision == "measuring"
    entered = _count_autocast(monkeypatch)
    engine.step()
    engine.step()
    key = "precision:" + engine._auto_precision.key()  # the input shape is part of it
    assert entered == [torch.bfloat16] * 2  # step 2 ran bf16 (both tasks), step 1 fp32
    measuring = engine.state_dict()
    assert measuring["precision"]["measuring"] and len(measuring["precision"]["times"]["bf16"]) == 1
    assert engine._auto_channels_last is not None and engine.channels_last is False  # the layout waits for the precision
    # what this machine measured before: bf16 2x faster (the record decides, as on a real AMX machine)
    record.write_text(json.dumps({key: {"speedup": 2.0}}))
    for _ in range(2 * TRIAL_PAIRS):
        engine.step()
    assert engine.precision == "bf16" and engine._auto_precision is None
    decided = engine.state_dict()
    assert decided["precision"] == {"mode": "bf16"}
    # resumed on another machine (no bf16 hardware, no record): it keeps the precision it started with
    monkeypatch.setattr(precision_module, "bf16_hardware", lambda: None)
    record.write_text(json.dumps({}))
    resumed = tiny_engine(precision="auto", channels_last="auto", planned_steps=MIN_PLANNED_STEPS)
    assert resumed.precision == "no"
    resumed.load_state_dict(decided)
    entered.clear()
    resumed.step()
    assert resumed.precision == "bf16" and entered == [torch.bfloat16] * 2
    # ... and one interrupted mid-trial continues the trial where it stopped
    resumed = tiny_engine(precision="auto", planned_steps=MIN_PLANNED_STEPS)
    resumed.load_state_dict(measuring)
    assert resumed.precision == "measuring" and resumed._auto_precision.times == measuring["precision"]["times"]
    # a checkpoint from before 'auto' existed ran fp32: it continues so
    resumed.load_state_dict({k: v for k, v in measuring.items() if k != "precision"})
    assert resumed.precision == "no" and resumed._auto_precision is None
    assert "precision" not in tiny_engine(precision="no").state_dict()  # only 'auto' has a decision to keep


def test_the_speedup_bar_is_higher_than_the_layouts():
    from ctinit.execution.channels_last import MIN_SPEEDUP as LAYOUT_MIN_SPEEDUP

    assert MIN_SPEEDUP > LAYOUT_MIN_SPEEDUP  # bf16 changes the numbers; the layout changes rounding only


def _bf16_twice_as_fast(monkeypatch):
    """A bf16 CPU on which the trial's bf16 steps take half the time of fp32's (whatever this machine measures)."""
    monkeypatch.setattr(precision_module, "bf16_hardware", lambda: "AMX")
    real = AutoPrecision.done
    monkeypatch.setattr(AutoPrecision, "done", lambda self, s: real(self, 0.5 if self._next == "bf16" else 1.0))


def test_finetuning_measures_the_precision_first_then_the_layout(record, monkeypatch):
    from ctinit.finetune import FINETUNE_TRIAL_PAIRS

    from test_autolayout import tiny_finetune

    _bf16_twice_as_fast(monkeypatch)
    entered, layouts = _count_autocast(monkeypatch), []
    _, result = tiny_finetune(MIN_PLANNED_STEPS, layouts, mixed_precision="auto")
    trial = 2 * (FINETUNE_TRIAL_PAIRS + 1)
    assert result.precision == "bf16"
    # the trial's bf16 steps, then every step in bf16 (evaluation stays fp32)
    assert len(entered) == trial // 2 + MIN_PLANNED_STEPS - trial
    assert layouts[:trial] == [False] * trial  # the layout's own trial starts after the precision's
    assert any(k.startswith("precision:finetune:") for k in json.loads(record.read_text()))
    _, fixed = tiny_finetune(MIN_PLANNED_STEPS, mixed_precision="no")
    assert fixed.precision == "no"


def test_the_trainer_records_the_precision_and_a_resumed_run_keeps_it(tmp_path, record, monkeypatch):
    import shutil

    from ctinit_training.meta_train import main

    from test_training import TINY

    _bf16_twice_as_fast(monkeypatch)
    out = tmp_path / "run"
    args = ["--config", TINY, "--out", str(out), "--no-progress", "--cpu-processes", "1", "mixed_precision=auto", "steps=100",
            "checkpoint_every=50", "keep_checkpoints=5", "log_every=50"]
    assert main(args) == 0
    assert json.loads((out / "init" / "config.json").read_text())["ctinit"]["precision"] == "bf16"
    assert "precision: bf16 (auto: bf16 2.00x" in (out / "train.log").read_text()
    # resumed from step 50 on a machine without bf16 hardware: the checkpoint's precision, no new trial
    monkeypatch.setattr(precision_module, "bf16_hardware", lambda: None)
    shutil.rmtree(out / "checkpoints" / "step-100")
    shutil.rmtree(out / "init")
    assert main(args + ["--resume"]) == 0
    assert json.loads((out / "init" / "config.json").read_text())["ctinit"]["precision"] == "bf16"


def test_a_recorded_layout_that_the_runs_own_steps_contradict_is_measured_again(record):
    from ctinit.execution.channels_last import AutoChannelsLast

    record.write_text(json.dumps({"layout:key": {"speedup": 13.33}}))  # recorded under another load
    auto = AutoChannelsLast(lambda: "key")
    while not auto.decided:
        auto.done(1.2 if auto.use_channels_last() else 1.0)  # this run: channels-last clearly slower
    assert not auto.channels_last and auto.speedup == pytest.approx(1 / 1.2, abs=1e-3)
    assert json.loads(record.read_text())["layout:key"]["speedup"] == auto.speedup


def test_meta_validation_fine_tunes_in_exact_fp32(monkeypatch):
    from types import SimpleNamespace

    import ctinit.finetune
    from ctinit_training.config import ValidationConfig
    from ctinit_training.validation import meta_validate

    seen = []
    monkeypatch.setattr(ctinit.finetune, "finetune",
                        lambda module, task, config, device: seen.append(config) or SimpleNamespace(test_accuracy=0.5))
    accuracy = meta_validate(torch.nn.Linear(2, 2), ["a", "b"], ValidationConfig(steps=100, batch_size=8, lr=1e-3, seed=0))
    assert accuracy == 0.5 and [c.mixed_precision for c in seen] == ["no", "no"]
