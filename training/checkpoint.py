"""Checkpoints of a meta-training run, in safetensors + JSON (never pickle).

What ``OUT/checkpoints/step-N/`` holds:

- ``meta.json``: step, world size, task-to-process map, the resolved config, library version, the run id (see
  training/rundir.py: ``--resume`` uses only checkpoints of the run that owns OUT) and each task's number of classes;
- ``rank-R.safetensors`` + ``rank-R.json``: what process R needs to continue bit for bit: the engine state
  (phi, meta optimizer, and per local task: theta and the rest of the backbone state, BN statistics, head,
  inner optimizer, loss scaler, skip counters), the batch samplers' positions and generators, the RNG states.

Every process writes into ``step-N.tmp/``; when all are done, the main process writes ``meta.json`` and renames the
folder to ``step-N``, so a folder named ``step-N`` is always complete: a job killed at any moment leaves at worst a
``.tmp`` folder, which is ignored and cleaned up. Older checkpoints are pruned only once the new one is complete, and
a write that fails (a full disk) removes its ``.tmp`` folder and says which checkpoint is kept (``RunDir.writing``).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ctinit.version import __version__
from ctinit.errors import CheckpointError, NonFiniteError
from ctinit.schema import to_dict

from . import rundir
from .config import TrainConfig
from .rundir import RunDir

log = logging.getLogger("ctinit.meta_train")


# ----------------------------------------------------------------------------- nested state <-> (tensors, JSON)
def to_storable(obj, tensors: dict[str, torch.Tensor], path: str = "s"):
    """Replace every tensor in a nested structure by a reference into ``tensors``; the rest must be JSON data."""
    if torch.is_tensor(obj):
        tensors[path] = obj.detach().to("cpu").clone().contiguous()
        return {"__tensor__": path}
    if isinstance(obj, dict):
        return {"__dict__": [[k, to_storable(v, tensors, f"{path}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [to_storable(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [to_storable(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {path} in a checkpoint")


def from_storable(obj, tensors: dict[str, torch.Tensor]):
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(from_storable(v, tensors) for v in obj["__tuple__"])
        return {k: from_storable(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [from_storable(v, tensors) for v in obj]
    return obj


def write_state(state, stem: Path) -> None:
    """``stem.safetensors`` (the tensors) + ``stem.json`` (the structure)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    skeleton = to_storable(state, tensors)
    save_file(tensors, str(stem.with_suffix(".safetensors")))
    stem.with_suffix(".json").write_text(json.dumps(skeleton))


def read_state(stem: Path):
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(stem.with_suffix(".safetensors")))
        skeleton = json.loads(stem.with_suffix(".json").read_text())
        return from_storable(skeleton, tensors)
    except Exception as e:  # noqa: BLE001 - any failure here means an unusable checkpoint
        raise CheckpointError(f"{stem}: unreadable checkpoint file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                              "delete this step folder to resume from the one before") from e


# ----------------------------------------------------------------------------- RNG
def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- meta.json
META_KEYS = ("step", "world_size", "config")


def read_meta(path: Path) -> dict:
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}/meta.json: unreadable ({' '.join(str(e).split())}); delete this step folder "
                              "to resume from the one before") from e
    missing = [k for k in META_KEYS if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise CheckpointError(f"{path}/meta.json: missing {', '.join(missing)}; delete this step folder to resume "
                              "from the one before")
    if not isinstance(meta["step"], int) or not isinstance(meta["world_size"], int) or not isinstance(meta["config"], dict):
        raise CheckpointError(f"{path}/meta.json: step and world_size must be integers and config a mapping; "
                              "delete this step folder to resume from the one before")
    return meta


# ----------------------------------------------------------------------------- writing one
def check_finite_phi(engine, run: RunDir, step: int) -> None:
    """Stop before a non-finite phi reaches a checkpoint or an export (the last finite checkpoint stays)."""
    if not bool(torch.isfinite(engine.phi.detach()).all()):
        last = run.latest(run.run_id)
        raise NonFiniteError(
            f"phi became non-finite by step {step} (a meta-update too large: lower meta_optimizer.lr or "
            f"inner_optimizer.lr); nothing was exported; the last finite checkpoint is "
            f"{last if last is not None else 'none (checkpoint_every=0)'}")


def save_checkpoint(run: RunDir, step: int, engine, samplers, config: TrainConfig, shards, comm, rank: int,
                    is_main: bool, best: dict | None = None, pool=None) -> Path:
    """Every process writes its ``rank-R`` files into ``step-N.tmp``; the main process then writes ``meta.json`` and
    renames the folder (see the module doc). Returns the checkpoint's folder."""
    check_finite_phi(engine, run, step)
    tmp = run.tmp_dir(step)
    with run.writing(step, run.run_id):  # a failed write (a full disk) frees its space, names the checkpoint kept
        if is_main:
            tmp.mkdir(parents=True, exist_ok=True)
        comm.barrier()
        state = {"engine": engine.state_dict(), "samplers": [s.state_dict() for s in samplers], "rng": rng_state()}
        if pool is not None:
            state["pool"] = pool.state_dict()  # the draw state and every stored task state
        write_state(state, tmp / f"rank-{rank}")
        comm.barrier()
        final = run.step_dir(step)
        if is_main:
            meta = {"step": step, "world_size": comm.world_size, "task_map": shards, "config": to_dict(config),
                    "library_version": __version__, "best_validation": best, "run_id": run.run_id}
            rundir.fault_point("checkpoint", step)
            final = run.finalize(step, meta, config.keep_checkpoints)
            log.info("checkpoint %s", final)
    comm.barrier()
    return final


class Checkpointer:
    """``checkpointer(step, best)`` writes this run's checkpoint of ``step`` (:func:`save_checkpoint` with the
    run's fixed parts: the folder, the engine and samplers, the task map, the process)."""

    def __init__(self, run: RunDir, trainee, config: TrainConfig, shards, comm, rank: int, is_main: bool):
        self.run, self.trainee, self.config, self.shards = run, trainee, config, shards
        self.comm, self.rank, self.is_main = comm, rank, is_main

    def __call__(self, step: int, best: dict) -> Path:
        return save_checkpoint(self.run, step, self.trainee.engine, self.trainee.samplers, self.config, self.shards,
                               self.comm, self.rank, self.is_main, best, self.trainee.pool)
