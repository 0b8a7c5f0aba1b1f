"""The per-machine measurement record (compile: auto and channels_last: auto, ctinit/execution/compiled.py): a damaged
or odd one is never fatal, never hangs, is rewritten without its bad entries with its path in the warning, and
leaves no temporary file."""
import json
import logging
import os
import signal

import pytest

from ctinit.execution import channels_last, compiled

GOOD = {"speedup": 1.2, "compile_seconds": 3.0}


@pytest.fixture
def record(tmp_path, monkeypatch):
    path = tmp_path / "cache" / compiled.RECORD_NAME
    path.parent.mkdir()
    monkeypatch.setattr(compiled, "record_path", lambda: path)
    signal.alarm(20)  # a read or lock that blocks (a FIFO) fails the test instead of hanging it
    yield path
    signal.alarm(0)


def _no_temporary_files(path):
    return not [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("content", [
    {"k": {"speedup": "fast"}}, {"k": {"speedup": True}}, {"k": {"compile_seconds": -1}}, {"k": [1.2]},
    {"k": {"speedup": [1, 2]}}, {"k": None}, {"k": {"speedup": 0}},
])
def test_a_wrong_typed_entry_is_dropped_and_the_file_rewritten(content, record, caplog):
    record.write_text(json.dumps({**content, "good": GOOD}))
    with caplog.at_level(logging.WARNING, logger="ctinit.execution.compiled"):
        assert compiled.read_record("k") is None
    assert str(record) in caplog.text and "wrong type" in caplog.text
    assert json.loads(record.read_text()) == {"good": GOOD}
    assert compiled.read_record("good") == GOOD and _no_temporary_files(record)


@pytest.mark.parametrize("text", ["[1, 2]", "{not json", '{"k": {"speedup": NaN}}', "\udcff"])
def test_a_garbage_record_is_repaired(text, record, caplog):
    record.write_bytes(text.encode("utf-8", "surrogateescape"))
    with caplog.at_level(logging.WARNING, logger="ctinit.execution.compiled"):
        assert compiled.read_record("k") is None
    assert str(record) in caplog.text
    assert isinstance(json.loads(record.read_text()), dict) and _no_temporary_files(record)


def test_a_fifo_in_place_of_the_record_or_its_lock_never_hangs(record, caplog):
    os.mkfifo(record)
    assert compiled.read_record("k") is None  # not read (it would block); replaced by a regular file
    compiled.write_record("k", GOOD)
    assert compiled.read_record("k") == GOOD
    record.unlink()
    record.with_suffix(".lock").unlink()
    os.mkfifo(record.with_suffix(".lock"))
    with caplog.at_level(logging.WARNING, logger="ctinit.execution.compiled"):
        compiled.write_record("k", GOOD)  # the lock cannot be opened: a warning naming the record, no hang
    assert str(record) in caplog.text and _no_temporary_files(record)


def test_a_record_that_cannot_be_written_is_a_warning(record, caplog):
    record.mkdir()  # a folder in its place
    with caplog.at_level(logging.WARNING, logger="ctinit.execution.compiled"):
        compiled.write_record("k", GOOD)
        assert compiled.read_record("k") is None
    assert str(record) in caplog.text and _no_temporary_files(record)


def test_auto_layout_and_auto_compile_decide_with_a_damaged_record(record):
    record.write_text(json.dumps({"layout:L": {"speedup": "2x"}, "C": ["broken"]}))
    layout = channels_last.AutoChannelsLast(lambda: "L")
    for _ in range(2 * (layout.trial_pairs + 1)):
        layout.use_channels_last()
        layout.done(0.01)
    assert layout.decided
    auto = compiled.AutoCompile(lambda: 10, lambda: "C")
    for _ in range(compiled.EAGER_STEPS):
        auto.use_compiled()
        auto.done(0.01)
    auto.use_compiled()
    assert auto.phase == "off"  # 10 steps of 10 ms never pay for a compile


@pytest.mark.parametrize("configured", [None, "relative/cache"])
def test_the_record_sits_in_torch_s_compile_cache_folder(configured, tmp_path, monkeypatch):
    """Found as torch finds its cache folder, without importing torch._inductor (a second of every run's start)."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "set")  # so that monkeypatch restores it: torch's cache_dir() sets it
    if configured is None:
        monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
        monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
        (tmp_path / "tmp").mkdir()
        import tempfile

        monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    else:
        monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", configured)
    ours = compiled.record_path()
    assert ours.parent == compiled.inductor_cache_dir() and ours.parent.is_dir()
    assert str(ours.parent) == cache_dir()  # torch's own answer
    assert str(tmp_path) in str(ours)
