"""The ``npz:PATH`` reader (and ``builtin:NAME``, whose tasks are bundled npz files): a NumPy archive loaded with
``allow_pickle=False`` holding ``x_train, y_train, x_test, y_test`` or just ``x, y``; optional ``classes`` (unicode
array) and ``hflip`` (0-d bool: whether the images are flip-safe; without it training images are not flipped)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import exception_line
from .raw import RawTask, task_error

_SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")


def read_npz(path: Path, spec: str) -> RawTask:
    where = str(path)
    if not path.exists():
        raise task_error(f"{where}: file not found (task spec {spec!r}); check the path")
    if not path.is_file():
        raise task_error(f"{where}: is not a file (task spec {spec!r}); npz: specs need a .npz file, use folder:DIR for a directory")
    fix = "re-save it with np.savez(path, x=..., y=...) using uint8 images and integer labels"
    # We open the file ourselves so that it is closed even when np.load fails half-way.
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
            fh.seek(0)
            if magic.startswith(b"\x93NUMPY"):
                raise task_error(f"{where}: is a single .npy array, not an npz archive; {fix}")
            if not magic.startswith(b"PK"):
                what = "pickled data, which ctinit never loads" if magic[:1] == b"\x80" else (
                    "an empty file" if not magic else "not a zip file")
                raise task_error(f"{where}: is not an npz archive ({what}); {fix}")
            try:
                archive = np.load(fh, allow_pickle=False)
            except Exception as exc:  # not a zip/npy, truncated, pickled: all bad input here
                raise task_error(f"{where}: cannot read as an npz archive ({exception_line(exc)}); {fix}") from exc
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise task_error(f"{where}: is a single .npy array, not an npz archive; {fix}")
            try:
                with archive:
                    keys = list(archive.files)
                    wanted = [k for k in (*_SPLIT_KEYS, "x", "y", "classes", "hflip") if k in keys]
                    arrays = {k: archive[k] for k in wanted}
            except Exception as exc:  # object arrays (need pickle), corrupt members, truncated data
                raise task_error(f"{where}: cannot read array data ({exception_line(exc)}); {fix}") from exc
    except OSError as exc:  # permission denied, I/O error
        raise task_error(f"{where}: cannot open ({exception_line(exc)}); check the file's permissions") from exc

    has_split = [k for k in _SPLIT_KEYS if k in arrays]
    if has_split:
        missing = [k for k in _SPLIT_KEYS if k not in arrays]
        if missing:
            raise task_error(
                f"{where}: has {', '.join(has_split)} but lacks {', '.join(missing)}; expected arrays "
                f"x_train, y_train, x_test, y_test (or just x, y for a seeded hold-out)"
            )
        raw = RawTask(where, arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"])
    elif "x" in arrays and "y" in arrays:
        raw = RawTask(where, arrays["x"], arrays["y"], None, None, names=("x", "y"))
    else:
        raise task_error(
            f"{where}: expected arrays x_train, y_train, x_test, y_test or x, y, found "
            f"[{', '.join(keys) or 'none'}]; save with np.savez(path, x=images, y=labels)"
        )

    if "classes" in arrays:
        classes = arrays["classes"]
        if classes.dtype.kind not in "US" or classes.ndim != 1:
            raise task_error(
                f"{where}: classes must be a 1-D string array, got dtype {classes.dtype} shape "
                f"{tuple(classes.shape)}; save np.array(['name0', 'name1', ...])"
            )
        raw.classes = [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c) for c in classes.tolist()]
    if "hflip" in arrays:
        hflip = arrays["hflip"]
        if hflip.size != 1 or hflip.dtype.kind not in "biu":
            raise task_error(
                f"{where}: hflip must be a single bool, got dtype {hflip.dtype} shape "
                f"{tuple(hflip.shape)}; save hflip=np.array(True) or np.array(False)"
            )
        raw.hflip = bool(hflip.reshape(()).item())
    return raw


__all__ = ["read_npz"]
