"""A run directory belongs to one run: a lock while it trains, a run id its checkpoints carry.

- ``OUT/.lock`` is held with an OS lock while a run trains (:class:`ctinit.atomic.FolderLock`, the lock of every
  command that writes a folder): a second run on the same ``--out`` is refused with the owner named, and the lock
  goes when the process ends, however it ends (a killed run's lock is reported and taken over).
- ``OUT/run.json`` holds the run id, written when a fresh run starts; every checkpoint's ``meta.json`` carries it,
  and ``--resume`` only uses checkpoints with this run's id (checkpoints from an older run in the folder are ignored,
  never pruned in place of this run's own).
- A folder that already holds a run (``config.yaml``, ``run.json``, checkpoints or ``init/``) is refused for a new
  run unless ``--resume`` (same config) or ``--overwrite`` (the old run's outputs are deleted first).

Files and folders are written with :mod:`ctinit.atomic` (never half-written; a full disk is one line saying what
is kept).
"""
from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path

from ctinit.atomic import FolderLock, write_text

RUN_NAME = "run.json"
#: What a run writes into OUT (removed by --overwrite).
RUN_OUTPUTS = ("config.yaml", RUN_NAME, "metrics.jsonl", "train.log", "checkpoints", "init", "best", "init.tmp",
               "best.tmp", "init.old", "best.old")

#: ``with RunLock(out, log=...):`` holds OUT for this run (see the module doc).
RunLock = FolderLock


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
    write_text(Path(out) / RUN_NAME, json.dumps({"run_id": run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}))
    return run_id
