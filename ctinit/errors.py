"""User-facing errors: one line that says what is wrong and what to do.

The CLI prints ``str(error)`` on stderr and exits non-zero; it never shows a traceback for these.
"""


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
