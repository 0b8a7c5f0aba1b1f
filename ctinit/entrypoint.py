"""What every command line (``ctinit``, ``ctinit-train``, ``ctinit-hub``, the quickstart) does with errors.

Any exception becomes one line on stderr: bad input (a :class:`~ctinit.errors.CtinitError`, an unusable path, a
full disk, an out-of-memory request) exits 2 with what is wrong and what to do; anything else is a bug in ctinit and
exits 1 with "internal error, rerun with --debug". A traceback is shown only with ``--debug``. Argument parsing
errors are one line too (exit 2).
"""
from __future__ import annotations

import argparse
import errno
import sys
from typing import Callable

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2


def one_line(text: str) -> str:
    return " ".join(str(text).split())


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (``PROG: error: ... (see PROG --help)``) and exit 2."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def describe(error: BaseException) -> tuple[int, str]:
    """The exit code and the one-line message for an exception escaping a command."""
    from .errors import CtinitError

    if isinstance(error, CtinitError):
        return EXIT_BAD_INPUT, f"error: {one_line(error)}"
    if isinstance(error, OSError) and error.errno is not None:
        where = f"{error.filename}: " if error.filename else ""
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return EXIT_BAD_INPUT, f"error: {where}no space left on the device; free some space and rerun"
        if isinstance(error, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
                              FileExistsError)) or error.errno == errno.EROFS:
            return EXIT_BAD_INPUT, f"error: {where}{one_line(error.strerror or error)}"
    if isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and any(
            text in str(error) for text in ("can't allocate memory", "out of memory", "OutOfMemory"))):
        return EXIT_BAD_INPUT, ("error: out of memory: the input asks for more memory than this machine has "
                                "(check sizes in the config, labels and data)")
    message = one_line(error) if str(error) else ""
    return EXIT_INTERNAL, (f"internal error, rerun with --debug for the traceback "
                           f"({type(error).__name__}{': ' + message[:300] if message else ''})")


def run_command(prog: str, command: Callable[[], int | None], debug: bool = False,
                scrub: Callable[[str], str] = lambda s: s) -> int:
    """Run ``command`` and turn any exception into one line on stderr and an exit code (see the module doc)."""
    try:
        return command() or EXIT_OK
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return 130
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - one line unless --debug
        if debug:
            raise
        code, message = describe(e)
        print(scrub(f"{prog}: {message}"), file=sys.stderr, flush=True)
        return code
