"""A run directory belongs to one run: a lock while it trains, a run id its checkpoints carry, atomic writes.

- ``OUT/.lock`` (JSON: pid, host, run id, start time) is created exclusively while a run trains and removed when it
  ends. A second run on the same ``--out`` is refused with the owner named. A lock left by a process that no longer
  runs on this host is stale: it is reported and taken over. A lock from another host cannot be checked from here:
  remove it by hand once that run is gone.
- ``OUT/run.json`` holds the run id, written when a fresh run starts; every checkpoint's ``meta.json`` carries it,
  and ``--resume`` only uses checkpoints with this run's id (checkpoints from an older run in the folder are ignored,
  never pruned in place of this run's own).
- A folder that already holds a run (``config.yaml``, ``run.json``, checkpoints or ``init/``) is refused for a new
  run unless ``--resume`` (same config) or ``--overwrite`` (the old run's outputs are deleted first).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

from ctinit.errors import ConfigError

LOCK_NAME = ".lock"
RUN_NAME = "run.json"
#: What a run writes into OUT (removed by --overwrite).
RUN_OUTPUTS = ("config.yaml", RUN_NAME, "metrics.jsonl", "train.log", "checkpoints", "init", "best", "init.tmp",
               "best.tmp", "init.old", "best.old")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


class RunLock:
    """``with RunLock(out):`` holds ``OUT/.lock`` (see the module doc); ``log`` gets the stale-lock message."""

    def __init__(self, out: Path, log=None):
        self.path = Path(out) / LOCK_NAME
        self.log = log
        self.held = False

    def _owner(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def acquire(self) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                pid, host = owner.get("pid"), owner.get("host")
                if host == me["host"] and isinstance(pid, int) and not _alive(pid):
                    if self.log:
                        self.log(f"{self.path}: stale lock of process {pid} (no longer running on this host); taking it over")
                    self.path.unlink(missing_ok=True)
                    continue
                raise ConfigError(
                    f"{self.path.parent} is in use by process {pid} on host {host} (since {owner.get('started')}, "
                    f"lock file {self.path}): wait for that run to end, use another --out, or delete the lock file "
                    "if that run is gone") from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise ConfigError(f"{self.path}: could not take the lock; delete it if no run uses {self.path.parent}")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def holds_a_run(out: Path) -> list[str]:
    """What in OUT shows that a run used it (empty: a fresh folder). ``run.json`` alone does not: it is written when
    a run starts, and a start that failed (a typo in a task spec) must not lock the folder."""
    out = Path(out)
    found = [name for name in ("config.yaml", "init") if (out / name).exists()]
    root = out / "checkpoints"
    if root.is_dir() and any(p.name.startswith("step-") for p in root.iterdir()):
        found.append("checkpoints")
    return found


def clear_run(out: Path) -> None:
    """--overwrite: delete what an earlier run wrote (never other files)."""
    for name in RUN_OUTPUTS:
        path = Path(out) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def read_run_id(out: Path) -> str | None:
    try:
        return json.loads((Path(out) / RUN_NAME).read_text()).get("run_id")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def new_run_id(out: Path) -> str:
    run_id = uuid.uuid4().hex[:16]
    write_atomic(Path(out) / RUN_NAME, json.dumps({"run_id": run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}))
    return run_id


def write_atomic(path: Path, text: str) -> None:
    """Write a file so that a kill leaves the old content or the new one, never half of it."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written folder ``tmp`` to ``final`` (replacing an older one) without a moment where ``final``
    is half written: the old folder is moved aside first and deleted after the rename."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)
