"""Writing outputs so that nothing is lost: the one place for atomic files, staged folders, failed writes and the
lock that makes an output folder one command's at a time.

- :func:`write_file` / :func:`write_text`: a file is written beside its name, flushed to disk and renamed over it,
  so a kill or a full disk leaves the old content or the new one, never half of it.
- :func:`staged_dir`: a folder (a fine-tuned model, an exported initialization) is written as a temporary sibling
  and swapped in whole once complete; until then the old folder is untouched, and a failure removes the sibling.
- :func:`write_failure`: a failed write as one line (``WriteError``) saying why and what is kept. safetensors
  raises ``SafetensorError``, not ``OSError``, for a full disk; the OS error is read from its message.
- :class:`FolderLock`: ``FOLDER/.lock`` held with an OS lock (``filelock``: ``flock`` on Linux and macOS). The OS
  releases it when the process ends, however it ends, so a crash never leaves a lock that blocks (an empty or old
  ``.lock`` file is simply locked again). A second command on the folder is refused before it does any work, with
  the owner named (``.lock-owner.json``, written by the holder).

This module imports nothing of ctinit but its errors, so every layer can use it.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .errors import ConfigError, WriteError, one_line

LOCK_NAME = ".lock"
OWNER_NAME = ".lock-owner.json"
#: The files a FolderLock keeps in its folder (not the folder's content: they never make a folder "non-empty").
LOCK_FILES = (LOCK_NAME, OWNER_NAME)

# ------------------------------------------------------------------------------------------------ failed writes

_OS_ERROR_IN_TEXT = re.compile(r"os error (\d+)")


def os_error_of(error: BaseException) -> OSError | None:
    """The OS error behind ``error``: itself if it is an ``OSError`` with an errno, or the one a safetensors
    ``SafetensorError`` names in its message (``... No space left on device (os error 28)``); else None."""
    if isinstance(error, OSError) and error.errno is not None:
        return error
    if isinstance(error, WriteError) and error.__cause__ is not None:  # an inner write of a staged folder
        return os_error_of(error.__cause__)
    if type(error).__name__ == "SafetensorError":
        found = _OS_ERROR_IN_TEXT.search(str(error))
        if found:
            code = int(found.group(1))
            return OSError(code, os.strerror(code))
    return None


def os_error_reason(error: OSError) -> str | None:
    """What an OS error means for the user, or None when it is not one a user can act on (a bug, then)."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the device"
    if error.errno == errno.EFBIG:
        return "file too large (over the file system's or this process's file-size limit, see `ulimit -f`)"
    if error.errno == errno.EROFS:
        return "read-only file system"
    if isinstance(error, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
                          FileExistsError)) or error.errno in (errno.ENAMETOOLONG, errno.EMLINK, errno.EXDEV):
        return one_line(error.strerror or error)
    return None


def write_failure(error: BaseException, target: str | Path, kept: str) -> WriteError | None:
    """``error`` raised while writing ``target`` as one line (why, then ``kept``: what is kept and what to do);
    None when ``error`` is not a failed write."""
    os_error = os_error_of(error)
    reason = os_error_reason(os_error) if os_error is not None else None
    if reason is None:
        return None
    return WriteError(f"cannot write {target}: {reason}; {kept}")


@contextmanager
def removed_on_failure(tmp: str | Path, target: str | Path, kept: str) -> Iterator[Path]:
    """Around writes into ``tmp``, a staging file or folder of ``target``: on any failure ``tmp`` is removed (its
    space freed), and a failed write becomes a :class:`~ctinit.errors.WriteError` saying what is kept. A kill
    (``SystemExit``, ``KeyboardInterrupt``) leaves ``tmp`` for the next writer to clear."""
    tmp = Path(tmp)
    try:
        yield tmp
    except Exception as e:
        _remove(tmp)
        failure = write_failure(e, target, kept)
        if failure is None:
            raise
        raise failure from e


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------ files


def new_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the process's umask (0644 under the usual umask 022)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def give_new_file_mode(*paths: str | Path) -> None:
    """Set each file's mode to :func:`new_file_mode`: safetensors' ``save_file`` (and so transformers'
    ``save_pretrained``) writes through a private temporary file and leaves the weights 0600, unreadable to the
    other users a published or shared model folder is for."""
    mode = new_file_mode()
    for path in paths:
        os.chmod(path, mode)


def write_file(path: str | Path, write: Callable[[Path], None], kept: str | None = None) -> Path:
    """``write(tmp)`` writes the content to ``tmp`` (beside ``path``), which is flushed to disk and renamed to
    ``path``. A failure leaves ``path`` as it was; a failed write is a one-line WriteError ending with ``kept``
    (default: that ``path`` is unchanged)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with removed_on_failure(tmp, path, kept or f"{path} is unchanged"):
        write(tmp)
        give_new_file_mode(tmp)  # as open() would have made it, whatever wrote it (safetensors: 0600)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        tmp.replace(path)
    return path


def write_text(path: str | Path, text: str, kept: str | None = None) -> Path:
    """:func:`write_file` of a text (UTF-8)."""
    return write_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), kept)


# ------------------------------------------------------------------------------------------------ folders


def old_of(final: str | Path) -> Path:
    """Where a swap keeps the folder ``final`` it replaces, between its two renames: ``.NAME.old`` beside it."""
    final = Path(final)
    return final.with_name(f".{final.name}.old")


def recover_swap(final: str | Path, old: str | Path | None = None) -> str | None:
    """Finish or roll back a swap of ``final`` that a kill interrupted (:func:`replace_dir`), never deleting a
    folder that is the only copy: ``old`` without ``final`` (killed between the two renames) is renamed back to
    ``final``; ``old`` beside a ``final`` (killed after the second rename: ``final`` is the complete new folder) is
    deleted. A swap that a live process is making (it holds ``old``'s lock) is left alone. Returns what was done."""
    final = Path(final)
    old = Path(old) if old is not None else old_of(final)
    if not old.is_dir() or old.is_symlink():
        return None
    from filelock import FileLock, Timeout

    lock = FileLock(str(old / LOCK_NAME), timeout=0) if (old / LOCK_NAME).exists() else None
    try:
        if lock is not None:
            lock.acquire()
    except Timeout:
        return None  # its owner is alive and finishes the swap itself
    try:
        if final.exists() or final.is_symlink():
            _remove(old)
            return f"removed {old}, left by an interrupted replacement of {final} (the new one was complete)"
        old.rename(final)
        return f"restored {final} from {old}, left by an interrupted replacement"
    finally:
        if lock is not None:
            lock.release()


def replace_dir(tmp: str | Path, final: str | Path, old: str | Path | None = None) -> Path:
    """Move the complete folder ``tmp`` to ``final``: an existing ``final`` is moved aside to ``old`` (default
    ``.NAME.old`` beside it), ``tmp`` renamed into place, then ``old`` deleted. If the rename fails, ``final`` is
    moved back. A kill between the two renames leaves ``old`` and no ``final``: the next writer renames it back
    (:func:`recover_swap`), never deletes it."""
    tmp, final = Path(tmp), Path(final)
    old = Path(old) if old is not None else old_of(final)
    if old.exists() and not (final.exists() or final.is_symlink()):
        old.rename(final)  # an interrupted swap: roll it back, then swap again
    _remove(old)
    moved = final.exists() or final.is_symlink()
    if moved:
        final.rename(old)
    try:
        tmp.rename(final)
    except BaseException:
        if moved and not final.exists():
            old.rename(final)
        raise
    _remove(old)
    return final


def _link_or_copy(src: str, dst: str) -> str:
    """A hard link (no space, no time) where the file system allows it, else a copy."""
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)
    return dst


def carry(src: Path, dst: Path) -> None:
    """Put ``src`` (a file, a link or a folder) at ``dst`` too, without moving it: hard links where possible."""
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
    elif src.is_dir():
        shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(str(src), str(dst))


def check_replaceable(folder: str | Path, what: str = "--out") -> None:
    """Refuse to swap out ``folder`` when it is the current folder or holds it (the command, and the shell it runs in,
    would be left in the old folder, which is deleted)."""
    folder, here = Path(folder).resolve(), Path.cwd().resolve()
    if folder == here or folder in here.parents:
        raise ConfigError(f"{what} {folder}: is the current folder or holds it; the new content is written beside the "
                          "folder and then moved into its place: name a folder outside the current one")


def check_output_folder(out: str | Path, *, ours: Iterable[str], written_by_us: Callable[[Path], bool],
                        theirs: str, replaced_whole: bool = False, what: str = "--out") -> Path:
    """The checks a command makes on its output folder before any work, so that nothing is lost: ``out`` is not a
    file; it holds no file named like one of ``ours`` unless ``written_by_us(out)`` (else they are the user's: the
    error names them, then says ``theirs``, e.g. "ctinit evaluate did not write; pass another folder"); the folder
    the command writes in can be written (``replaced_whole``: the folder beside which ``out`` is staged and swapped
    in, and ``out`` may not hold the current folder -- :func:`check_replaceable`; else ``out`` or the nearest
    folder above it that exists)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{what} {out}: is a file, not a folder; choose a folder (a path that exists and is a file "
                          "is left alone)")
    named_like_ours = [name for name in folder_content(out) if name in set(ours)]
    if named_like_ours and not written_by_us(out):
        raise ConfigError(f"{what} {out}: holds {', '.join(named_like_ours)} that {theirs}")
    if replaced_whole and out.is_dir():
        check_replaceable(out, what)
    written = out.resolve().parent if replaced_whole else out.resolve()
    while not written.exists() and written != written.parent:
        written = written.parent
    if not written.is_dir() or not os.access(written, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {out}: {written} is not writable; choose a folder you can write to")
    return out


@contextmanager
def staged_dir(final: str | Path, *, kept: str, tmp: str | Path | None = None, old: str | Path | None = None,
               carry_over: Iterable[str] = ()) -> Iterator[Path]:
    """``with staged_dir(final, kept=...) as tmp:`` write the folder's files into ``tmp``; when the block ends
    without an error, the names ``carry_over`` of the old ``final`` (files a user keeps there) are put in ``tmp``
    too (hard links: both folders hold them at every moment) and ``tmp`` replaces ``final`` (:func:`replace_dir`).
    Until then ``final`` is untouched; on a failure ``tmp`` is removed and a failed write is one line naming
    ``kept``. ``tmp`` defaults to ``.NAME.tmp`` beside ``final`` (a leftover of a killed writer is cleared first);
    the caller owns ``final`` (holds its :class:`FolderLock`, or owns the folder it is in)."""
    final = Path(final)
    if final.is_symlink():  # swap the folder the link points to; the link stays
        final = final.resolve()
    check_replaceable(final, "folder")
    tmp = Path(tmp) if tmp is not None else final.with_name(f".{final.name}.tmp")
    _remove(tmp)
    with removed_on_failure(tmp, final, kept):
        tmp.mkdir(parents=True)
        yield tmp
        for name in carry_over:
            carry(final / name, tmp / name)
        replace_dir(tmp, final, old)


# ------------------------------------------------------------------------------------------------ the lock

#: Folders this process holds (real path -> [filelock, depth]): taking a held folder again is reentrant.
_HELD: dict[str, list] = {}


def _read_owner(folder: Path) -> dict:
    try:
        owner = json.loads((folder / OWNER_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


class FolderLock:
    """``with FolderLock(folder):`` owns ``folder`` (created if needed) for this process; see the module doc.
    ``log`` gets a line when the previous owner ended without releasing the lock (killed), so that the reader
    knows that an earlier command on the folder did not finish."""

    def __init__(self, folder: str | Path, log: Callable[[str], None] | None = None):
        self.folder = Path(folder)
        self.log = log
        self._key: str | None = None

    @property
    def path(self) -> Path:
        return self.folder / LOCK_NAME

    def acquire(self) -> None:
        from filelock import FileLock, Timeout

        if self._key is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        key = os.path.realpath(self.folder)
        if key in _HELD:
            _HELD[key][1] += 1
            self._key = key
            return
        lock = FileLock(str(self.path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            owner = _read_owner(self.folder)
            who = (f"process {owner.get('pid')} on host {owner.get('host')} (since {owner.get('started')})"
                   if owner else "another process")
            raise ConfigError(f"{self.folder} is in use by {who}: wait for it to end, or use another folder") from None
        left = _read_owner(self.folder)
        if left and self.log:
            self.log(f"{self.folder}: stale lock of process {left.get('pid')} on host {left.get('host')} (since "
                     f"{left.get('started')}; it ended without releasing it); taking it over")
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        try:
            write_text(self.folder / OWNER_NAME, json.dumps(me))
        except BaseException:
            lock.release()
            raise
        _HELD[key] = [lock, 1]
        self._key = key

    def release(self) -> None:
        if self._key is None:
            return
        key, self._key = self._key, None
        held = _HELD[key]
        held[1] -= 1
        if held[1] == 0:
            del _HELD[key]
            try:
                (Path(key) / OWNER_NAME).unlink(missing_ok=True)
            finally:
                held[0].release()

    def __enter__(self) -> "FolderLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@contextmanager
def owned_dir(folder: str | Path, check: Callable[[Path], object]) -> Iterator[Path]:
    """``with owned_dir(out, check):`` holds the output folder ``out`` for a whole command: ``check(out)`` refuses a
    folder that cannot be used before anything is made, then the :class:`FolderLock` (a second command on ``out``
    is refused), then ``check`` again under the lock (another command may have written there in between). A folder
    made here that is still empty on the way out is removed."""
    folder = Path(folder)
    recovered = recover_swap(folder)  # before any check: an interrupted swap left the folder as .NAME.old
    if recovered:
        import sys

        print(f"note: {recovered}", file=sys.stderr, flush=True)
    check(folder)
    made = not folder.exists()
    lock = FolderLock(folder)
    lock.acquire()
    try:
        check(folder)
        yield folder
    finally:
        try:
            if made and folder.is_dir() and not folder_content(folder):
                shutil.rmtree(folder, ignore_errors=True)
        finally:
            lock.release()


def folder_content(folder: str | Path) -> list[str]:
    """The names in ``folder`` other than its lock files, sorted (empty for a missing folder)."""
    folder = Path(folder)
    return sorted(p.name for p in folder.iterdir() if p.name not in LOCK_FILES) if folder.is_dir() else []


__all__ = ["FolderLock", "LOCK_FILES", "LOCK_NAME", "carry", "check_output_folder", "check_replaceable",
           "folder_content", "os_error_of",
           "os_error_reason",
           "old_of", "owned_dir", "recover_swap", "removed_on_failure", "replace_dir", "staged_dir", "write_failure",
           "write_file", "write_text"]
