"""The end of a run: phi exported to ``OUT/init`` (config.json + model.safetensors, with how it was made), and
``--push-to-hub``'s upload of the exported run."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from ctinit.errors import WriteError
from ctinit.loading import save_init
from ctinit.schema import to_dict

from . import rundir
from .checkpoint import Checkpointer, check_finite_phi
from .config import TrainConfig, record_init_from

log = logging.getLogger("ctinit.meta_train")


def made_with(config: TrainConfig, names: list[str], steps: int, world: int, skipped_steps: int, tasks: list) -> dict:
    """What the export records of how phi was made (tasks' sizes only on one process, where all are loaded)."""
    record = {
        "algorithm": config.algorithm,
        "config": {k: v for k, v in to_dict(config).items() if k != "tasks"},
        "tasks": [{"spec": spec, "name": n} for spec, n in zip(config.tasks, names)],
        "steps": steps, "seed": config.seed, "world_size": world, "skipped_steps": skipped_steps,
    }
    record_init_from(record, config)
    if world == 1:
        for entry, t in zip(record["tasks"], tasks):
            entry.update(num_classes=t.num_classes, train_size=len(t.y_train), test_size=len(t.y_test))
    return record


def export_init(run: rundir.RunDir, engine, record: dict, *, steps: int, start_step: int, checkpoint_every: int,
                checkpointer: Checkpointer, best: dict) -> None:
    """Export phi to ``OUT/init`` (every process calls it; the main one writes).

    Nothing non-finite is exported. A checkpoint of the last step is written before the export (also with
    checkpoint_every=0), so a failed export (a full disk) leaves a run to --resume; with checkpoint_every=0 it is
    deleted once the export is written. If that checkpoint does not fit, the export (phi only, far smaller) is still
    tried."""
    check_finite_phi(engine, run, steps)
    if steps > start_step and not (checkpoint_every and steps % checkpoint_every == 0):
        try:
            checkpointer(steps, best)
        except WriteError as e:
            log.warning("%s; exporting the initialization anyway", e)
    if checkpointer.is_main:
        with run.staged("init") as tmp:
            save_init(engine.phi_module, tmp, record)
            rundir.fault_point("export")
        if not checkpoint_every:
            run.drop_checkpoint(steps)


def push_run(out, repo_id: str, prog: str, private: bool = False) -> None:
    """Export the finished run into a temporary folder and upload it with ``ctinit-hub push``'s code; main process only."""
    import tempfile

    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    from ctinit_hub.export import export_run
    from ctinit_hub.remote import push

    from ctinit.hubio.upload import staging_error

    try:
        staging = tempfile.TemporaryDirectory(prefix="ctinit-export-", ignore_cleanup_errors=True)
    except OSError as e:  # TMPDIR full or missing: one line with the path; the run itself is complete
        raise staging_error(e) from e
    with staging as tmp:
        export = export_run(out, Path(tmp) / Path(repo_id).name, repo_id=repo_id)
        info = push(export, repo_id, private=private, log=lambda m: print(m, file=sys.stderr))
    print(f"{prog}: pushed to {repo_id}: {getattr(info, 'commit_url', info)}", file=sys.stderr)
