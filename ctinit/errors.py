"""User-facing errors: one line that says what is wrong and what to do.

The CLI prints ``str(error)`` on stderr and exits non-zero; it never shows a traceback for these.
"""
import re


class CtinitError(ValueError):
    """Base class of every error caused by bad input (files, specs, configs, checkpoints)."""


class TaskSpecError(CtinitError):
    """A task spec or the data behind it cannot be used."""


class ConfigError(CtinitError):
    """A recipe, an override or a CLI option is invalid."""


class CheckpointError(CtinitError):
    """An initialization or checkpoint on disk cannot be loaded."""


class NonFiniteError(CtinitError):
    """Training produced non-finite values (a loss or weights); nothing non-finite is written or published."""


class WriteError(CtinitError):
    """An output could not be written (a full disk, a file-size limit, a read-only folder); the message says what
    is kept. What was being written is removed, and nothing written before is lost (see ctinit/atomic.py)."""


_BREAKS = re.compile(r"\s*[\t\n\v\f\r\x1c-\x1f\x85\u2028\u2029]+\s*")


def one_line(text: object, limit: int | None = None) -> str:
    """``text`` with every line break or tab (and the blanks around it) as one space, cut to ``limit`` characters:
    how every error line and every wrapped exception's text is written (runs of plain spaces stay: a spec or path
    quoted in the message keeps them)."""
    line = _BREAKS.sub(" ", str(text)).strip()
    return line if limit is None or len(line) <= limit else line[:limit - 3] + "..."


def exception_line(error: BaseException, limit: int = 300) -> str:
    """``TypeName: its text`` on one line (the text cut to ``limit``), to name a wrapped exception in a message."""
    text = one_line(error, limit)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
