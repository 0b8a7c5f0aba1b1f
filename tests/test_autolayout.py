"""``channels_last: auto``: on the CPU the run's first steps alternate between the two layouts and channels-last is
kept only where it measured faster; the choice is recorded per machine and kept in checkpoints, and channels-last
trains as the contiguous layout does (up to rounding)."""
import pytest

from ctinit.errors import ConfigError
from ctinit.meta import compiled as compiled_module
from ctinit.meta.autolayout import MIN_PLANNED_STEPS, TRIAL_PAIRS, AutoLayout

from test_compiled import STEPS, TOLERANCE, record, tiny_engine  # noqa: F401 - record: the fixture


def drive(seconds_of):
    """Run an AutoLayout with step times ``seconds_of(channels_last)``; returns it and each step's layout."""
    auto, ran = AutoLayout(lambda: "key"), []
    while not auto.decided and len(ran) < 50:
        use = auto.use_channels_last()
        if auto.decided:
            break
        ran.append(use)
        auto.done(seconds_of(use))
    return auto, ran


def test_auto_keeps_channels_last_where_it_measured_faster_and_remembers_it(record):
    auto, ran = drive(lambda cl: 0.5 if cl else 1.0)
    assert ran == [False, True] * (TRIAL_PAIRS + 1)  # interleaved, the first of each layout is warm-up
    assert auto.channels_last and auto.speedup == pytest.approx(2.0)
    assert compiled_module.read_record("layout:key") == {"speedup": 2.0}
    # the next run on this machine alternates its first steps the same way, then takes the recorded choice
    # instead of its own timings (here: no difference measured)
    again, ran = drive(lambda cl: 1.0)
    assert again.channels_last and ran == [False, True] * (TRIAL_PAIRS + 1) and again.speedup == pytest.approx(2.0)


def test_auto_stays_contiguous_where_channels_last_is_not_faster(record):
    # warm-up steps are slow and not counted; then channels-last is 2% faster: below MIN_SPEEDUP
    times = iter([9.0, 9.0] + [1.0, 0.98] * TRIAL_PAIRS)
    auto, ran = drive(lambda cl: next(times))
    assert auto.decided and not auto.channels_last and auto.speedup == pytest.approx(1 / 0.98)


def test_the_engine_measures_long_cpu_runs_only_and_keeps_the_choice_in_checkpoints(record):
    record.write_text("{}")
    assert tiny_engine(channels_last="auto", planned_steps=MIN_PLANNED_STEPS - 1)._auto_layout is None
    assert tiny_engine(channels_last="auto")._auto_layout is None  # run length unknown
    with pytest.raises(ConfigError, match="channels_last must be true, false or auto"):
        tiny_engine(channels_last="sometimes")
    engine = tiny_engine(channels_last="auto", planned_steps=MIN_PLANNED_STEPS)
    engine.step()
    measuring = engine.state_dict()
    assert measuring["layout"]["measuring"] and len(measuring["layout"]["times"]["contiguous"]) == 1
    resumed = tiny_engine(channels_last="auto", planned_steps=MIN_PLANNED_STEPS)
    resumed.load_state_dict(measuring)
    assert resumed._auto_layout.times == measuring["layout"]["times"]
    for _ in range(2 * TRIAL_PAIRS + 1):
        engine.step()
    assert engine._auto_layout is None and "measuring" not in engine.state_dict()["layout"]
    decided = dict(measuring, layout={"channels_last": True})  # what a machine that measured a speedup decided
    resumed = tiny_engine(channels_last="auto", planned_steps=MIN_PLANNED_STEPS)
    resumed.load_state_dict(decided)
    assert resumed.channels_last and resumed._auto_layout is None
    assert "layout" not in tiny_engine(channels_last=False).state_dict()  # only 'auto' has a decision to keep
    # a checkpoint made before 'auto' existed ran contiguous: a resumed engine continues so, without a trial
    old = {k: v for k, v in measuring.items() if k != "layout"}
    resumed = tiny_engine(channels_last="auto", planned_steps=MIN_PLANNED_STEPS)
    resumed.load_state_dict(old)
    assert not resumed.channels_last and resumed._auto_layout is None
    # a compiled run does not try the other layout (its graph would be traced again)
    compiled = tiny_engine("backbone", channels_last="auto", planned_steps=MIN_PLANNED_STEPS)
    assert compiled._auto_layout is None and not compiled.channels_last


def test_channels_last_trains_as_the_contiguous_layout():
    contiguous, last = tiny_engine(channels_last=False), tiny_engine(channels_last=True)
    start = contiguous.phi.detach().clone()
    for _ in range(STEPS):
        contiguous.step(), last.step()
    moved = (contiguous.phi - start).abs().max().item()
    assert moved > 0.1 and (last.phi - contiguous.phi).abs().max().item() <= TOLERANCE * moved


def test_a_run_from_before_the_auto_default_resumes_under_it():
    from ctinit_training.config import DEFAULTS, changed_keys

    before = {**DEFAULTS, "tasks": ["builtin:latin"], "channels_last": False}
    assert changed_keys(before, {**before, "channels_last": "auto"}) == []
    assert changed_keys({**before, "channels_last": "auto"}, before) == ["channels_last"]  # a decided layout may differ
    assert changed_keys(before, {**before, "channels_last": True}) == ["channels_last"]
