"""Task specs: turn a string a person can type into in-memory task data.

A spec is one of

* ``npz:PATH`` -- a NumPy ``.npz`` archive (loaded with ``allow_pickle=False``) holding
  ``x_train, y_train, x_test, y_test`` or just ``x, y``; optional ``classes`` (unicode array)
  and ``hflip`` (0-d bool: flip-safe; training images are flipped only when it is true);
* ``folder:DIR`` -- one sub-folder per class (optionally under ``DIR/train`` and ``DIR/test``); flip-safe only with a
  ``DIR/ctinit-task.json`` holding ``{"hflip": true}``;
* ``hf:NAME[:CONFIG]`` -- a Hugging Face ``datasets`` dataset, a hub id or a local directory;
* ``builtin:NAME`` -- a task of the bundled offline suite.

Whatever the source, the result is a :class:`TaskData` whose images are ``uint8`` NCHW tensors of
``image_size x image_size`` pixels with 1 or 3 channels. Sources without their own test split get
a seeded, deterministic (stratified when possible) hold-out. Every bad input raises
:class:`~ctinit.errors.TaskSpecError` with a one-line message naming the file or spec and the fix.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .data import TaskData
from .folder import read_folder
from .hf import read_hf, split_hf
from .npz import read_npz
from .raw import finish, task_error

__all__ = ["load_task", "parse_spec", "SPEC_KINDS", "task_name"]

SPEC_KINDS = ("npz", "folder", "hf", "builtin")
_SPEC_HELP = "use npz:PATH, folder:DIR, hf:NAME[:CONFIG] or builtin:NAME"


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``"kind:rest"`` into ``(kind, rest)``; raise :class:`TaskSpecError` for bad specs.

    ``rest`` is returned as typed (for ``hf`` it may still hold ``NAME:CONFIG``).
    """
    if not isinstance(spec, str):
        raise task_error(f"task spec must be a string, got {type(spec).__name__} {spec!r}: {_SPEC_HELP}")
    kind, sep, rest = spec.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in SPEC_KINDS:
        raise task_error(f"unknown task spec {spec!r}: {_SPEC_HELP}")
    rest = rest.strip()
    if not rest:
        what = {"npz": "PATH", "folder": "DIR", "hf": "NAME[:CONFIG]", "builtin": "NAME"}[kind]
        raise task_error(f"task spec {spec!r} is missing its {what}: write {kind}:{what}")
    return kind, rest


def load_task(
    spec: str,
    image_size: int = 28,
    seed: int = 0,
    holdout: float = 0.2,
    device: str | torch.device = "cpu",
) -> TaskData:
    """Load the task named by ``spec`` as uint8 NCHW tensors of ``image_size`` pixels on ``device``.

    ``seed`` and ``holdout`` only matter for sources without their own test split: a ``holdout``
    fraction of each class with at least two examples (at least one, never all of them) becomes the
    test split, chosen deterministically from ``seed``; when every class has a single example the
    hold-out is drawn from all examples instead.
    """
    kind, rest = parse_spec(spec)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise task_error(f"task spec {spec!r}: image_size must be a positive integer, got {image_size!r}")
    try:
        holdout_ok = 0.0 < float(holdout) < 1.0
    except (TypeError, ValueError):
        holdout_ok = False
    if not holdout_ok:
        raise task_error(f"task spec {spec!r}: holdout must be a fraction in (0, 1), got {holdout!r}")

    if kind == "npz":
        raw = read_npz(Path(os.path.expanduser(rest)), spec)
    elif kind == "builtin":
        from .builtin import builtin_path

        raw = read_npz(Path(builtin_path(rest)), spec)
    elif kind == "folder":
        raw = read_folder(Path(os.path.expanduser(rest)), spec, image_size)
    else:  # hf
        hf_name, config = split_hf(rest)
        raw = read_hf(hf_name, config, spec, image_size)

    return finish(raw, name=task_name(spec), spec=spec, image_size=image_size, seed=seed,
                   holdout=float(holdout), device=device)


def task_name(spec: str) -> str:
    """The short name of the task a spec names (``TaskData.name``), without reading its data."""
    kind, rest = parse_spec(spec)
    if kind == "npz":
        return Path(os.path.expanduser(rest)).stem
    if kind == "builtin":
        return rest
    if kind == "folder":
        directory = Path(os.path.expanduser(rest))
        return directory.resolve().name or str(directory)
    hf_name, config = split_hf(rest)
    base = Path(hf_name.rstrip("/\\")).name or hf_name
    return f"{base}-{config}" if config else base
