"""Checkpoints of a meta-training run, in safetensors + JSON (never pickle).

Layout of ``OUT/checkpoints/step-N/``:

- ``meta.json``: step, world size, task-to-process map, the resolved config, library version, the run id (see
  training/rundir.py: ``--resume`` uses only checkpoints of the run that owns OUT) and each task's number of classes;
- ``rank-R.safetensors`` + ``rank-R.json``: what process R needs to continue bit for bit: the engine state
  (phi, meta optimizer, and per local task: theta and the rest of the backbone state, BN statistics, head,
  inner optimizer, loss scaler, skip counters), the batch samplers' positions and generators, the RNG states.

Every process writes into ``step-N.tmp/``; when all are done, the main process writes ``meta.json`` and renames the
folder to ``step-N``, so a folder named ``step-N`` is always complete: a job killed at any moment leaves at worst a
``.tmp`` folder, which is ignored and cleaned up. Older checkpoints are pruned only once the new one is complete, and
a write that fails (a full disk) removes its ``.tmp`` folder and says which checkpoint is kept (:func:`writing`).
"""
from __future__ import annotations

import json
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch

from ctinit.atomic import removed_on_failure, replace_dir
from ctinit.errors import CheckpointError

STEP_DIR = re.compile(r"^step-(\d+)$")


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


# ----------------------------------------------------------------------------- folders
def checkpoint_root(out: Path) -> Path:
    return Path(out) / "checkpoints"


def tmp_dir(out: Path, step: int) -> Path:
    return checkpoint_root(out) / f"step-{step}.tmp"


def finalize(out: Path, step: int, meta: dict, keep: int) -> Path:
    """Main process, after every process wrote its files: meta.json, atomic rename, prune this run's old checkpoints
    (an older run's checkpoints in the folder are not this run's to count or delete)."""
    tmp = tmp_dir(out, step)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    final = checkpoint_root(out) / f"step-{step}"
    replace_dir(tmp, final, checkpoint_root(out) / f"step-{step}.old")  # a rewritten step: the old one until then
    steps = sorted(complete_steps(out, meta.get("run_id")))
    for old in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(checkpoint_root(out) / f"step-{old}", ignore_errors=True)
    for stale in [*checkpoint_root(out).glob("step-*.tmp"), *checkpoint_root(out).glob("step-*.old")]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def kept(out: Path, run_id: str | None) -> str:
    """What a failed write leaves of run ``run_id`` to continue from, and what to do (the end of its error line)."""
    last = latest(out, run_id)
    if last is None:
        return "no checkpoint of this run is kept (checkpoint_every=0 writes one only at the end)"
    return f"the last complete checkpoint {last} is kept (continue from it with --resume)"


@contextmanager
def writing(out: Path, step: int, run_id: str | None):
    """Around writing checkpoint ``step``: a failure removes its partial ``step-N.tmp`` (freeing the space), and a
    failed write is one line naming the newest complete checkpoint, which stays."""
    with removed_on_failure(tmp_dir(out, step), checkpoint_root(out) / f"step-{step}", kept(out, run_id)):
        yield


def _run_id_of(path: Path) -> str | None:
    try:
        return json.loads((path / "meta.json").read_text()).get("run_id")
    except (OSError, json.JSONDecodeError, AttributeError):
        return "unreadable"


def complete_steps(out: Path, run_id: str | None = None) -> list[int]:
    """Steps of the complete checkpoints of run ``run_id`` (None: checkpoints written before runs had ids)."""
    root = checkpoint_root(out)
    if not root.is_dir():
        return []
    return sorted(int(m.group(1)) for p in root.iterdir()
                  if (m := STEP_DIR.match(p.name)) and (p / "meta.json").is_file() and _run_id_of(p) == run_id)


def latest(out: Path, run_id: str | None = None) -> Path | None:
    steps = complete_steps(out, run_id)
    return checkpoint_root(out) / f"step-{steps[-1]}" if steps else None


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
