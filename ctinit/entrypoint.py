"""What every command line (``ctinit``, ``ctinit-train``, ``ctinit-hub``, the quickstart) does with errors.

Any exception becomes one line on stderr: bad input (a :class:`~ctinit.errors.CtinitError`, an unusable path, a
full disk or a file-size limit, also as safetensors reports them, an out-of-memory request) exits 2 with what is
wrong and what to do; anything else is a bug in ctinit and exits 1 with "internal error, rerun with --debug". A
traceback is shown only with ``--debug``. Argument parsing errors are one line too (exit 2). Every line has the
Hugging Face token and anything shaped like one blanked out (:func:`ctinit.tokens.scrub`).
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from .errors import one_line

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (``PROG: error: ... (see PROG --help)``) and exit 2."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        from .tokens import scrub

        self.exit(EXIT_BAD_INPUT, scrub(f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n"))


def describe(error: BaseException) -> tuple[int, str]:
    """The exit code and the one-line message for an exception escaping a command."""
    from .atomic import os_error_of, os_error_reason
    from .errors import CtinitError, exception_line

    if isinstance(error, CtinitError):
        return EXIT_BAD_INPUT, f"error: {one_line(error)}"
    os_error = os_error_of(error)
    reason = os_error_reason(os_error) if os_error is not None else None
    if reason is not None:
        where = f"{os_error.filename}: " if os_error.filename else ""
        then = "; free some space and rerun" if reason.startswith("no space") else ""
        return EXIT_BAD_INPUT, f"error: {where}{reason}{then}"
    if isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and any(
            text in str(error) for text in ("can't allocate memory", "out of memory", "OutOfMemory"))):
        return EXIT_BAD_INPUT, ("error: out of memory: the input asks for more memory than this machine has "
                                "(check sizes in the config, labels and data)")
    return EXIT_INTERNAL, f"internal error, rerun with --debug for the traceback ({exception_line(error)})"


def run_command(prog: str, command: Callable[[], int | None], debug: bool = False) -> int:
    """Run ``command`` and turn any exception into one line on stderr and an exit code (see the module doc)."""
    from .tokens import scrub

    try:
        return command() or EXIT_OK
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return 130
    except BrokenPipeError:
        # the reader of stdout went away (`ctinit list | head`): stop quietly, as a command killed by SIGPIPE does
        # (exit 128 + 13); stdout goes to /dev/null so that flushing it at exit does not fail again
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - one line unless --debug
        if debug:
            raise
        code, message = describe(e)
        print(scrub(f"{prog}: {message}"), file=sys.stderr, flush=True)
        return code
