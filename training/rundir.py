"""A run directory and everything in it: :class:`RunDir` owns ``OUT`` for one run.

- ``OUT/.lock`` is held with an OS lock while a run trains (:class:`ctinit.atomic.FolderLock`, the lock of every
  command that writes a folder): a second run on the same ``--out`` is refused with the owner named, and the lock
  goes when the process ends, however it ends (a killed run's lock is reported and taken over).
- ``OUT/run.json`` holds the run id, written when a fresh run starts; every checkpoint's ``meta.json`` carries it,
  and ``--resume`` only uses checkpoints with this run's id (checkpoints from an older run in the folder are ignored,
  never pruned in place of this run's own).
- A folder that already holds a run (``config.yaml``, ``run.json``, checkpoints or ``init/``) is refused for a new
  run unless ``--resume`` (same config) or ``--overwrite``. ``--overwrite`` deletes nothing before the new run is
  complete: the old run's outputs are moved into ``OUT/.overwritten/`` (renames), put back if the new run fails
  before its first step (a misspelt task, a bad ``init_from``), and deleted once the new run exported its init. A new
  run killed while it trains leaves them there until a run in OUT completes (a later ``--overwrite`` keeps them, as
  the last complete run, and deletes the unfinished one).
- A start that fails before the first step (and is not a ``--resume``) removes what it wrote (``config.yaml``,
  ``run.json``), so that the corrected command is not refused.
- ``OUT/checkpoints/step-N/``: written into ``step-N.tmp/`` and renamed when complete (see training/checkpoint.py
  for what is in one); ``OUT/init/`` and ``OUT/best/``: staged in ``NAME.tmp`` and renamed when complete.
- ``OUT/config.yaml``, ``OUT/train.log``, ``OUT/metrics.jsonl``.

Files and folders are written with :mod:`ctinit.atomic` (never half-written; a full disk is one line saying what
is kept).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ctinit.atomic import FolderLock, recover_swap, removed_on_failure, replace_dir, staged_dir, write_text
from ctinit.errors import ConfigError

if TYPE_CHECKING:  # the config module imports the model zoo and torch; the run folder needs neither
    from .config import TrainConfig

RUN_NAME = "run.json"
#: What a run writes into OUT (replaced by --overwrite).
RUN_OUTPUTS = ("config.yaml", RUN_NAME, "metrics.jsonl", "train.log", "checkpoints", "init", "best", "init.tmp",
               "best.tmp", "init.old", "best.old")
#: Where --overwrite keeps the earlier run until the new one is complete.
SET_ASIDE = ".overwritten"
STEP_DIR = re.compile(r"^step-(\d+)$")

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
    """Delete what a run wrote in OUT (never other files)."""
    for name in RUN_OUTPUTS:
        path = Path(out) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def set_aside_run(out: Path) -> Path:
    """--overwrite: move the earlier run's outputs into ``OUT/.overwritten`` (renames: nothing deleted). When that
    folder is there already it holds the last complete run and the outputs in OUT are an unfinished run's: those go."""
    aside = Path(out) / SET_ASIDE
    if aside.is_dir():
        clear_run(out)
        return aside
    staging = Path(out) / (SET_ASIDE + ".tmp")
    staging.mkdir(exist_ok=True)
    for name in RUN_OUTPUTS:
        if (Path(out) / name).exists() or (Path(out) / name).is_symlink():
            (Path(out) / name).rename(staging / name)
    staging.rename(aside)  # complete: from here on it is the earlier run
    return aside


def restore_set_aside(out: Path) -> None:
    """A new run failed before its first step: remove what it wrote and put the earlier run back."""
    aside = Path(out) / SET_ASIDE
    clear_run(out)
    if aside.is_dir():
        for item in aside.iterdir():
            item.rename(Path(out) / item.name)
        aside.rmdir()


def recover_set_aside(out: Path) -> None:
    """A kill while the earlier run was being moved aside left part of it in ``.overwritten.tmp``: move it back."""
    staging = Path(out) / (SET_ASIDE + ".tmp")
    if staging.is_dir():
        for item in staging.iterdir():
            if not (Path(out) / item.name).exists():
                item.rename(Path(out) / item.name)
        shutil.rmtree(staging, ignore_errors=True)


def read_run_id(out: Path) -> str | None:
    try:
        return json.loads((Path(out) / RUN_NAME).read_text()).get("run_id")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def new_run_id(out: Path) -> str:
    run_id = uuid.uuid4().hex[:16]
    write_text(Path(out) / RUN_NAME, json.dumps({"run_id": run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}))
    return run_id


def fault_point(name: str, step: int | None = None) -> None:
    """Test hook: ``CTINIT_FAULT=NAME`` or ``NAME:STEP`` kills this process with SIGKILL at the named point
    (``checkpoint``: its files written, not yet renamed into place; ``export``: the init written to OUT/init.tmp, not
    yet renamed), for the fault-injection tests. Does nothing otherwise."""
    if os.environ.get("CTINIT_FAULT") in (name, f"{name}:{step}"):
        os.kill(os.getpid(), signal.SIGKILL)


def _run_id_of(path: Path) -> str | None:
    try:
        return json.loads((path / "meta.json").read_text()).get("run_id")
    except (OSError, json.JSONDecodeError, AttributeError):
        return "unreadable"


class RunDir:
    """The run folder ``OUT``: its lock, its run id, the places of its files, checkpoints and exports."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_path = self.path / "config.yaml"
        self.metrics_path = self.path / "metrics.jsonl"
        self.log_path = self.path / "train.log"
        self.checkpoints = self.path / "checkpoints"
        self.run_id: str | None = None  # read by open(); None: a folder from before runs had ids
        self.fresh = False  # set by prepare(): a new run (not a --resume), whose failed start is undone
        self.started = False  # set when the first step runs: from then on a failure keeps what the run wrote

    # ------------------------------------------------------------------ ownership
    def lock(self, prog: str) -> FolderLock:
        import sys

        return RunLock(self.path, log=lambda message: print(f"{prog}: {message}", file=sys.stderr, flush=True))

    def prepare(self, config: TrainConfig, resume: bool, overwrite: bool, prog: str) -> None:
        """Main process, holding the lock: refuse or clear another run's folder; give a new run its id."""
        import sys

        from .config import changed_keys

        out = self.path
        recover_set_aside(out)
        for name in ("init", "best"):  # a swap a kill interrupted: finished or rolled back before OUT is judged
            recover_swap(out / name, out / f"{name}.old")
        for old in self.checkpoints.glob("step-*.old") if self.checkpoints.is_dir() else []:
            recover_swap(old.with_suffix(""), old)
        previous = holds_a_run(out)
        if overwrite and previous:
            aside = set_aside_run(out)
            print(f"{prog}: --overwrite: the earlier run's {', '.join(previous)} moved to {aside}; deleted once this "
                  "run completes, put back if it fails to start", file=sys.stderr)
        elif resume and self.config_path.is_file():
            try:
                import yaml

                saved = yaml.safe_load(self.config_path.read_text())
            except Exception as e:  # noqa: BLE001 - an unreadable config.yaml cannot be compared
                raise ConfigError(f"{out}/config.yaml: unreadable ({' '.join(str(e).split())[:200]}); cannot check "
                                  "that --resume continues the same run") from None
            changed = changed_keys(saved, config) if isinstance(saved, dict) else ["config.yaml"]
            if changed:
                raise ConfigError(f"cannot resume {out}: config keys {changed} differ from the run's config.yaml and "
                                  "would change the result; restore them, or start over with --overwrite or another --out")
        elif not resume and previous:
            raise ConfigError(f"{out} holds another run ({', '.join(previous)}): continue it with --resume (same "
                              "config), replace it with --overwrite, or pass another --out")
        self.fresh = not (resume and previous)  # the checks passed: from here on this start is undone if it fails
        if not (resume and (read_run_id(out) or self.complete_steps(None))):
            new_run_id(out)  # a fresh run, or --resume with nothing to resume

    def undo_failed_start(self) -> None:
        """Main process, when the run failed before its first step: a new run leaves nothing that blocks the corrected
        command, and an earlier run set aside by --overwrite is put back."""
        if self.started or not self.fresh:
            return
        if (self.path / SET_ASIDE).is_dir():
            restore_set_aside(self.path)
        else:
            for name in ("config.yaml", RUN_NAME):
                (self.path / name).unlink(missing_ok=True)

    def completed(self) -> None:
        """Main process, once the init is exported: the earlier run set aside by --overwrite goes."""
        shutil.rmtree(self.path / SET_ASIDE, ignore_errors=True)

    def open(self) -> "RunDir":
        """Every process, once the main one prepared the folder: read the run id."""
        self.run_id = read_run_id(self.path)
        return self

    # ------------------------------------------------------------------ checkpoints
    def step_dir(self, step: int) -> Path:
        return self.checkpoints / f"step-{step}"

    def tmp_dir(self, step: int) -> Path:
        return self.checkpoints / f"step-{step}.tmp"

    def complete_steps(self, run_id: str | None = None) -> list[int]:
        """Steps of the complete checkpoints of run ``run_id`` (None: checkpoints written before runs had ids)."""
        root = self.checkpoints
        if not root.is_dir():
            return []
        return sorted(int(m.group(1)) for p in root.iterdir()
                      if (m := STEP_DIR.match(p.name)) and (p / "meta.json").is_file() and _run_id_of(p) == run_id)

    def latest(self, run_id: str | None = None) -> Path | None:
        steps = self.complete_steps(run_id)
        return self.step_dir(steps[-1]) if steps else None

    def kept(self, run_id: str | None = None) -> str:
        """What a failed write leaves of run ``run_id`` to continue from, and what to do (the end of its error line)."""
        last = self.latest(run_id)
        if last is None:
            return "no checkpoint of this run is kept (checkpoint_every=0 writes one only at the end)"
        return f"the last complete checkpoint {last} is kept (continue from it with --resume)"

    @contextmanager
    def writing(self, step: int, run_id: str | None = None):
        """Around writing checkpoint ``step``: a failure removes its partial ``step-N.tmp`` (freeing the space), and a
        failed write is one line naming the newest complete checkpoint, which stays."""
        with removed_on_failure(self.tmp_dir(step), self.step_dir(step), self.kept(run_id)):
            yield

    def finalize(self, step: int, meta: dict, keep: int) -> Path:
        """Main process, after every process wrote its files: meta.json, atomic rename, prune this run's old
        checkpoints (an older run's checkpoints in the folder are not this run's to count or delete)."""
        tmp = self.tmp_dir(step)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        final = self.step_dir(step)
        replace_dir(tmp, final, self.checkpoints / f"step-{step}.old")  # a rewritten step: the old one until then
        steps = sorted(self.complete_steps(meta.get("run_id")))
        for old in steps[:-keep] if keep > 0 else []:
            shutil.rmtree(self.step_dir(old), ignore_errors=True)
        for stale in self.checkpoints.glob("step-*.old"):  # never the only copy of a checkpoint
            recover_swap(stale.with_suffix(""), stale)
        for stale in self.checkpoints.glob("step-*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        return final

    def drop_checkpoint(self, step: int) -> None:
        """Delete checkpoint ``step`` (and the checkpoints folder if that leaves it empty)."""
        shutil.rmtree(self.step_dir(step), ignore_errors=True)
        try:
            self.checkpoints.rmdir()  # only if empty
        except OSError:
            pass

    # ------------------------------------------------------------------ exports and logs
    def staged(self, name: str):
        """``with run.staged("init") as tmp:`` write ``OUT/NAME`` into ``OUT/NAME.tmp``, renamed when complete (never
        a half-written export; a failed write names the checkpoint kept)."""
        return staged_dir(self.path / name, tmp=self.path / f"{name}.tmp", old=self.path / f"{name}.old",
                          kept=self.kept(self.run_id))

    def append_metrics(self, record: dict) -> None:
        with open(self.metrics_path, "a") as f:  # one write per line: a kill leaves at worst a partial last line
            f.write(json.dumps(record) + "\n")

    def write_metrics(self, lines: list[str]) -> None:
        write_text(self.metrics_path, "".join(line + "\n" for line in lines))
