"""Task specs: turn a string a person can type into in-memory task data.

A spec is one of

* ``npz:PATH`` -- a NumPy ``.npz`` archive (loaded with ``allow_pickle=False``) holding
  ``x_train, y_train, x_test, y_test`` or just ``x, y``; optional ``classes`` (unicode array)
  and ``hflip`` (0-d bool);
* ``folder:DIR`` -- one sub-folder per class (optionally under ``DIR/train`` and ``DIR/test``);
* ``hf:NAME[:CONFIG]`` -- a Hugging Face ``datasets`` dataset, a hub id or a local directory;
* ``builtin:NAME`` -- a task of the bundled offline suite.

Whatever the source, the result is a :class:`TaskData` whose images are ``uint8`` NCHW tensors of
``image_size x image_size`` pixels with 1 or 3 channels. Sources without their own test split get
a seeded, deterministic (stratified when possible) hold-out. Every bad input raises
:class:`~ctinit.errors.TaskSpecError` with a one-line message naming the file or spec and the fix.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ctinit.errors import TaskSpecError
from ctinit.images import IMAGE_SUFFIXES as IMAGE_EXTENSIONS, is_image_file, pil_to_array, read_image_array

__all__ = ["TaskData", "load_task", "parse_spec", "SPEC_KINDS", "IMAGE_EXTENSIONS"]

SPEC_KINDS = ("npz", "folder", "hf", "builtin")
_SPEC_HELP = "use npz:PATH, folder:DIR, hf:NAME[:CONFIG] or builtin:NAME"
_SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
_IMAGE_COLUMNS = ("image", "img", "pixel_values")
_LABEL_COLUMNS = ("label", "labels", "fine_label", "y")
# Bound on the float elements a resize chunk holds (input + output), ~256 MiB of float32.
_RESIZE_CHUNK_ELEMENTS = 1 << 26


#: The most classes a task may have when its labels are unnamed (num_classes = max label + 1).
MAX_CLASSES = 100_000

def _one_line(text: object) -> str:
    """Replace line breaks so a message (or a wrapped exception's text) fits on one line."""
    return re.sub(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+", " ", str(text)).strip()


def _error(message: str) -> TaskSpecError:
    return TaskSpecError(_one_line(message))


def _describe(exc: BaseException) -> str:
    text = _one_line(exc)
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------------------------------
# TaskData


@dataclass
class TaskData:
    """One classification task in memory: uint8 NCHW images and int64 labels for both splits."""

    name: str
    spec: str
    x_train: torch.Tensor = field(repr=False)
    y_train: torch.Tensor = field(repr=False)
    x_test: torch.Tensor = field(repr=False)
    y_test: torch.Tensor = field(repr=False)
    num_classes: int
    classes: list[str]
    hflip: bool = True

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images."""
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def __repr__(self) -> str:  # compact: never prints tensor contents
        return (
            f"TaskData(name={self.name!r}, spec={self.spec!r}, train={tuple(self.x_train.shape)}, "
            f"test={tuple(self.x_test.shape)}, num_classes={self.num_classes}, hflip={self.hflip}, "
            f"device={self.x_train.device})"
        )

    def to(self, device: str | torch.device) -> "TaskData":
        """A copy with every tensor on ``device`` (tensors already there are shared, not copied)."""
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
            classes=list(self.classes),
        )

    def subset_train(self, per_class: int, seed: int) -> "TaskData":
        """A class-balanced, seeded subset of the train split with ``per_class`` examples per class.

        Every class present in the train split contributes exactly ``per_class`` examples (kept in
        their original order); the test split is unchanged. Same seed -> same subset. Raises
        :class:`TaskSpecError` when ``per_class < 1`` or a class has fewer than ``per_class``
        train examples.
        """
        if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
            raise _error(f"task {self.name!r}: per_class must be a positive integer, got {per_class!r}")
        labels = self.y_train.detach().cpu().numpy()
        counts = np.bincount(labels, minlength=self.num_classes)
        short = [(c, int(n)) for c, n in enumerate(counts) if 0 < n < per_class]
        if short:
            listed = ", ".join(f"{self._class_name(c)!r} has {n}" for c, n in short[:5])
            more = f" (and {len(short) - 5} more)" if len(short) > 5 else ""
            raise _error(
                f"task {self.name!r} ({self.spec}): cannot take {per_class} train examples per class: "
                f"{listed}{more}; use per_class <= {int(counts[counts > 0].min())}"
            )
        rng = np.random.default_rng(seed)
        chosen = []
        for c in range(self.num_classes):
            idx = np.flatnonzero(labels == c)
            if idx.size:
                chosen.append(rng.choice(idx, size=per_class, replace=False))
        keep = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
        index = torch.from_numpy(keep.astype(np.int64)).to(self.x_train.device)
        return dataclasses.replace(
            self,
            x_train=self.x_train.index_select(0, index),
            y_train=self.y_train.index_select(0, index.to(self.y_train.device)),
            classes=list(self.classes),
        )

    def split_train(self, fraction: float, seed: int) -> "tuple[TaskData, TaskData]":
        """``(train, held_out)``: per class, ``round(fraction * n)`` (at least 1, at most n - 1) seeded examples of
        the train split go to ``held_out`` (as its train split); the rest stay. The test split is untouched: a
        validation split carved this way never sees the test split. Same seed -> same split."""
        labels = self.y_train.detach().cpu().numpy()
        rng = np.random.default_rng(seed)
        held = []
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            if idx.size > 1:
                held.append(rng.choice(idx, size=min(idx.size - 1, max(1, round(fraction * idx.size))), replace=False))
        mask = np.zeros(labels.size, dtype=bool)
        if held:
            mask[np.concatenate(held)] = True
        keep, out = (torch.from_numpy(np.flatnonzero(m)).to(self.x_train.device) for m in (~mask, mask))
        part = lambda index: dataclasses.replace(self, x_train=self.x_train.index_select(0, index),
                                                 y_train=self.y_train.index_select(0, index.to(self.y_train.device)),
                                                 classes=list(self.classes))
        return part(keep), part(out)

    def _class_name(self, c: int) -> str:
        return self.classes[c] if 0 <= c < len(self.classes) else str(c)


# --------------------------------------------------------------------------------------------------
# Spec parsing


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``"kind:rest"`` into ``(kind, rest)``; raise :class:`TaskSpecError` for bad specs.

    ``rest`` is returned as typed (for ``hf`` it may still hold ``NAME:CONFIG``).
    """
    if not isinstance(spec, str):
        raise _error(f"task spec must be a string, got {type(spec).__name__} {spec!r}: {_SPEC_HELP}")
    kind, sep, rest = spec.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in SPEC_KINDS:
        raise _error(f"unknown task spec {spec!r}: {_SPEC_HELP}")
    rest = rest.strip()
    if not rest:
        what = {"npz": "PATH", "folder": "DIR", "hf": "NAME[:CONFIG]", "builtin": "NAME"}[kind]
        raise _error(f"task spec {spec!r} is missing its {what}: write {kind}:{what}")
    return kind, rest


def _split_hf(rest: str) -> tuple[str, str | None]:
    """``NAME[:CONFIG]`` -> ``(NAME, CONFIG)``, keeping ``NAME`` whole when it is an existing path."""
    if ":" not in rest or os.path.exists(os.path.expanduser(rest)):
        return rest, None
    left, _, right = rest.rpartition(":")
    if os.path.exists(os.path.expanduser(left)):  # a local path that itself holds ':'
        return left, right or None
    name, _, config = rest.partition(":")
    return name, config or None


# --------------------------------------------------------------------------------------------------
# Public entry point


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
        raise _error(f"task spec {spec!r}: image_size must be a positive integer, got {image_size!r}")
    try:
        holdout_ok = 0.0 < float(holdout) < 1.0
    except (TypeError, ValueError):
        holdout_ok = False
    if not holdout_ok:
        raise _error(f"task spec {spec!r}: holdout must be a fraction in (0, 1), got {holdout!r}")

    if kind == "npz":
        raw = _read_npz(Path(os.path.expanduser(rest)), spec)
    elif kind == "builtin":
        from ctinit.tasks.builtin import builtin_path

        raw = _read_npz(Path(builtin_path(rest)), spec)
    elif kind == "folder":
        raw = _read_folder(Path(os.path.expanduser(rest)), spec, image_size)
    else:  # hf
        hf_name, config = _split_hf(rest)
        raw = _read_hf(hf_name, config, spec, image_size)

    return _finish(raw, name=task_name(spec), spec=spec, image_size=image_size, seed=seed,
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
    hf_name, config = _split_hf(rest)
    base = Path(hf_name.rstrip("/\\")).name or hf_name
    return f"{base}-{config}" if config else base


# --------------------------------------------------------------------------------------------------
# Source-independent processing


@dataclass
class _Raw:
    """What a reader hands to :func:`_finish`: numpy arrays, not yet validated for labels."""

    where: str                      # file / dir / spec to name in messages
    x_train: np.ndarray             # uint8 [N,H,W] or [N,H,W,C]
    y_train: np.ndarray
    x_test: np.ndarray | None       # None -> seeded hold-out from train
    y_test: np.ndarray | None
    classes: list[str] | None = None
    hflip: bool = True
    names: tuple[str, str] = ("x_train", "y_train")   # array names for messages
    test_names: tuple[str, str] = ("x_test", "y_test")


def _check_images(x: np.ndarray, key: str, where: str) -> np.ndarray:
    """Validate dtype/shape of an image array and return it as uint8 [N,H,W,C] with C in {1, 3}."""
    if x.dtype != np.uint8:
        raise _error(
            f"{where}: {key} has dtype {x.dtype}, expected uint8 images; "
            f"convert with x.astype(np.uint8) after scaling to 0..255"
        )
    if x.ndim == 3:
        x = x[..., None]
    elif x.ndim == 4:
        if x.shape[-1] not in (1, 3, 4):
            raise _error(
                f"{where}: {key} has shape {tuple(x.shape)}, expected [N,H,W] or channels-last "
                f"[N,H,W,C] with C in 1, 3 or 4; transpose channels-first arrays with "
                f"x.transpose(0, 2, 3, 1)"
            )
        if x.shape[-1] == 4:
            x = x[..., :3]  # drop alpha
    else:
        raise _error(
            f"{where}: {key} has {x.ndim} dimensions (shape {tuple(x.shape)}), expected "
            f"[N,H,W] (grayscale) or [N,H,W,C] with C in 1, 3 or 4"
        )
    if x.shape[1] < 1 or x.shape[2] < 1:
        raise _error(f"{where}: {key} has empty images (shape {tuple(x.shape)}); each image needs H, W >= 1")
    return x


def _check_labels(y: np.ndarray, key: str, where: str) -> np.ndarray:
    if y.dtype == np.bool_ or y.dtype.kind not in "iu":
        raise _error(
            f"{where}: {key} has dtype {y.dtype}, expected integer class labels; "
            f"convert with y.astype(np.int64) (map names to 0..C-1 first)"
        )
    if y.ndim != 1:
        raise _error(
            f"{where}: {key} has shape {tuple(y.shape)}, expected a 1-D array of labels; "
            f"flatten it with y.reshape(-1)"
        )
    return y


def _holdout_split(y: np.ndarray, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic hold-out: stratified per class when that gives a test example, else plain."""
    rng = np.random.default_rng(seed)
    test_parts = []
    for c in np.unique(y):  # sorted -> deterministic order of draws
        idx = np.flatnonzero(y == c)
        if idx.size < 2:
            continue
        k = min(max(int(round(idx.size * holdout)), 1), idx.size - 1)
        test_parts.append(rng.permutation(idx)[:k])
    if test_parts:
        test = np.concatenate(test_parts)
    else:  # every class has a single example: plain hold-out
        n = y.size
        k = min(max(int(round(n * holdout)), 1), n - 1) if n >= 2 else 0
        test = rng.permutation(n)[:k]
    mask = np.ones(y.size, dtype=bool)
    mask[test] = False
    return np.flatnonzero(mask), np.sort(test)


def _from_numpy(x: np.ndarray) -> torch.Tensor:
    x = np.ascontiguousarray(x)
    if not x.flags.writeable:  # torch warns on read-only arrays (e.g. np.asarray of a PIL image)
        x = x.copy()
    return torch.from_numpy(x)


def _to_tensor(x: np.ndarray, image_size: int, device: torch.device) -> torch.Tensor:
    """uint8 NHWC numpy -> uint8 NCHW tensor of image_size x image_size on ``device``."""
    n, h, w, c = x.shape
    if (h, w) == (image_size, image_size):
        t = _from_numpy(x).to(device)
        return t.permute(0, 3, 1, 2).contiguous()
    out = torch.empty((n, c, image_size, image_size), dtype=torch.uint8, device=device)
    per_image = c * (h * w + image_size * image_size)
    chunk = max(1, _RESIZE_CHUNK_ELEMENTS // per_image)
    for start in range(0, n, chunk):
        part = _from_numpy(x[start:start + chunk]).to(device)
        part = part.permute(0, 3, 1, 2).float()
        part = F.interpolate(part, size=(image_size, image_size), mode="bilinear",
                             align_corners=False, antialias=True)
        out[start:start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _resize_hwc(img: np.ndarray, image_size: int) -> np.ndarray:
    """Resize one uint8 [H,W] or [H,W,C] image the same way :func:`_to_tensor` does."""
    squeeze = img.ndim == 2
    arr = img[None, :, :, None] if squeeze else img[None]
    out = _to_tensor(arr, image_size, torch.device("cpu"))[0].permute(1, 2, 0).numpy()
    return out[..., 0] if squeeze else out


def _finish(raw: _Raw, *, name: str, spec: str, image_size: int, seed: int, holdout: float,
            device: str | torch.device) -> TaskData:
    where = raw.where
    xk, yk = raw.names
    x_train = _check_images(raw.x_train, xk, where)
    y_train = _check_labels(raw.y_train, yk, where)
    if raw.x_test is not None:
        txk, tyk = raw.test_names
        x_test = _check_images(raw.x_test, txk, where)
        y_test = _check_labels(raw.y_test, tyk, where)
        pairs = [(x_train, y_train, xk, yk), (x_test, y_test, txk, tyk)]
    else:
        x_test = y_test = None
        pairs = [(x_train, y_train, xk, yk)]

    for x, y, kx, ky in pairs:
        if x.shape[0] != y.shape[0]:
            raise _error(
                f"{where}: {kx} has {x.shape[0]} images but {ky} has {y.shape[0]} labels; "
                f"they must have the same length"
            )
        if x.shape[0] == 0:
            raise _error(f"{where}: {kx} is empty (0 images); every split needs at least one example")
    if x_test is not None and x_test.shape[1:] != x_train.shape[1:]:
        raise _error(
            f"{where}: {xk} images have shape {tuple(x_train.shape[1:])} but {raw.test_names[0]} images "
            f"have shape {tuple(x_test.shape[1:])}; both splits need the same image shape"
        )

    all_y = [y_train] + ([y_test] if y_test is not None else [])
    lo = min(int(y.min()) for y in all_y)
    hi = max(int(y.max()) for y in all_y)
    classes = raw.classes
    if classes is not None:
        num_classes = len(classes)
        if lo < 0 or hi >= num_classes:
            raise _error(
                f"{where}: labels must be 0..{num_classes - 1} ({num_classes} classes are named) "
                f"but they span {lo}..{hi}; fix the labels or the class names"
            )
    else:
        if lo < 0:
            raise _error(
                f"{where}: labels must be 0..C-1 (C = max label + 1) but the smallest is {lo} "
                f"(largest {hi}); remap them to 0..C-1"
            )
        if hi >= MAX_CLASSES:  # a head (and class list) that large is a label typo, not a task
            raise _error(
                f"{where}: labels must be 0..C-1 with C at most {MAX_CLASSES} but the largest is {hi}; "
                f"remap them to 0..C-1"
            )
        num_classes = hi + 1
        classes = [str(i) for i in range(num_classes)]
    present = int(np.unique(y_train).size)
    if num_classes < 2 or present < 2:
        raise _error(
            f"{where}: the train split has {present} class(es) ({num_classes} in all); a task needs "
            f"at least 2 classes with train examples"
        )

    if x_test is None:
        if x_train.shape[0] < 2:
            raise _error(f"{where}: cannot hold out a test split from {x_train.shape[0]} example; add more examples")
        train_idx, test_idx = _holdout_split(y_train, holdout, seed)
        x_test, y_test = x_train[test_idx], y_train[test_idx]
        x_train, y_train = x_train[train_idx], y_train[train_idx]

    dev = torch.device(device)
    return TaskData(
        name=name,
        spec=spec,
        x_train=_to_tensor(x_train, image_size, dev),
        y_train=torch.from_numpy(y_train.astype(np.int64)).to(dev),
        x_test=_to_tensor(x_test, image_size, dev),
        y_test=torch.from_numpy(y_test.astype(np.int64)).to(dev),
        num_classes=num_classes,
        classes=list(classes),
        hflip=bool(raw.hflip),
    )


# --------------------------------------------------------------------------------------------------
# npz / builtin


def _read_npz(path: Path, spec: str) -> _Raw:
    where = str(path)
    if not path.exists():
        raise _error(f"{where}: file not found (task spec {spec!r}); check the path")
    if not path.is_file():
        raise _error(f"{where}: is not a file (task spec {spec!r}); npz: specs need a .npz file, use folder:DIR for a directory")
    fix = "re-save it with np.savez(path, x=..., y=...) using uint8 images and integer labels"
    # We open the file ourselves so that it is closed even when np.load fails half-way.
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
            fh.seek(0)
            if magic.startswith(b"\x93NUMPY"):
                raise _error(f"{where}: is a single .npy array, not an npz archive; {fix}")
            if not magic.startswith(b"PK"):
                what = "pickled data, which ctinit never loads" if magic[:1] == b"\x80" else (
                    "an empty file" if not magic else "not a zip file")
                raise _error(f"{where}: is not an npz archive ({what}); {fix}")
            try:
                archive = np.load(fh, allow_pickle=False)
            except Exception as exc:  # not a zip/npy, truncated, pickled: all bad input here
                raise _error(f"{where}: cannot read as an npz archive ({_describe(exc)}); {fix}") from exc
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise _error(f"{where}: is a single .npy array, not an npz archive; {fix}")
            try:
                with archive:
                    keys = list(archive.files)
                    wanted = [k for k in (*_SPLIT_KEYS, "x", "y", "classes", "hflip") if k in keys]
                    arrays = {k: archive[k] for k in wanted}
            except Exception as exc:  # object arrays (need pickle), corrupt members, truncated data
                raise _error(f"{where}: cannot read array data ({_describe(exc)}); {fix}") from exc
    except OSError as exc:  # permission denied, I/O error
        raise _error(f"{where}: cannot open ({_describe(exc)}); check the file's permissions") from exc

    has_split = [k for k in _SPLIT_KEYS if k in arrays]
    if has_split:
        missing = [k for k in _SPLIT_KEYS if k not in arrays]
        if missing:
            raise _error(
                f"{where}: has {', '.join(has_split)} but lacks {', '.join(missing)}; expected arrays "
                f"x_train, y_train, x_test, y_test (or just x, y for a seeded hold-out)"
            )
        raw = _Raw(where, arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"])
    elif "x" in arrays and "y" in arrays:
        raw = _Raw(where, arrays["x"], arrays["y"], None, None, names=("x", "y"))
    else:
        raise _error(
            f"{where}: expected arrays x_train, y_train, x_test, y_test or x, y, found "
            f"[{', '.join(keys) or 'none'}]; save with np.savez(path, x=images, y=labels)"
        )

    if "classes" in arrays:
        classes = arrays["classes"]
        if classes.dtype.kind not in "US" or classes.ndim != 1:
            raise _error(
                f"{where}: classes must be a 1-D string array, got dtype {classes.dtype} shape "
                f"{tuple(classes.shape)}; save np.array(['name0', 'name1', ...])"
            )
        raw.classes = [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c) for c in classes.tolist()]
    if "hflip" in arrays:
        hflip = arrays["hflip"]
        if hflip.size != 1 or hflip.dtype.kind not in "biu":
            raise _error(
                f"{where}: hflip must be a single bool, got dtype {hflip.dtype} shape "
                f"{tuple(hflip.shape)}; save hflip=np.array(True) or np.array(False)"
            )
        raw.hflip = bool(hflip.reshape(()).item())
    return raw


# --------------------------------------------------------------------------------------------------
# Images from files (folder: and hf:)


def _stack_images(groups: list[list[np.ndarray]], image_size: int) -> list[np.ndarray]:
    """Stack each list of [H,W] / [H,W,3] images into one uint8 array, sharing one channel count.

    Grayscale is kept (C=1) only when every image of every group is grayscale. Images of mixed
    sizes are resized to ``image_size`` one by one so they can be stacked.
    """
    color = any(a.ndim == 3 for g in groups for a in g)
    shapes = {a.shape[:2] for g in groups for a in g}
    out = []
    for g in groups:
        arrays = g
        if len(shapes) > 1:
            arrays = [a if a.shape[:2] == (image_size, image_size) else _resize_hwc(a, image_size) for a in arrays]
        if color:
            arrays = [np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
        if arrays:
            out.append(np.stack(arrays))
        else:
            out.append(np.zeros((0, image_size, image_size) + ((3,) if color else ()), dtype=np.uint8))
    return out


def _class_dirs(directory: Path) -> list[Path]:
    return sorted((p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.name)


def _read_class_tree(directory: Path, spec: str) -> tuple[list[str], dict[str, list[Path]]]:
    dirs = _class_dirs(directory)
    if not dirs:
        raise _error(
            f"{directory}: no class sub-folders (task spec {spec!r}); put the images of each class "
            f"in their own folder, e.g. {directory / 'cat'}/001.png"
        )
    files: dict[str, list[Path]] = {}
    for d in dirs:
        images = sorted(p for p in d.iterdir() if is_image_file(p))
        if not images:
            raise _error(
                f"{d}: empty class folder (no {'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} images); "
                f"add images or remove the folder"
            )
        files[d.name] = images
    return [d.name for d in dirs], files


def _is_split_layout(directory: Path) -> bool:
    train, test = directory / "train", directory / "test"
    return train.is_dir() and test.is_dir() and bool(_class_dirs(train)) and bool(_class_dirs(test))


def _read_folder(directory: Path, spec: str, image_size: int) -> _Raw:
    where = str(directory)
    if not directory.exists():
        raise _error(f"{where}: directory not found (task spec {spec!r}); check the path")
    if not directory.is_dir():
        raise _error(f"{where}: is not a directory (task spec {spec!r}); folder: specs need DIR/<class>/<image> folders")
    if _is_split_layout(directory):
        train_names, train_files = _read_class_tree(directory / "train", spec)
        test_names, test_files = _read_class_tree(directory / "test", spec)
        classes = sorted(set(train_names) | set(test_names))
        split_files = [train_files, test_files]
    else:
        classes, files = _read_class_tree(directory, spec)
        split_files = [files]
    index = {c: i for i, c in enumerate(classes)}
    groups, labels = [], []
    for files in split_files:
        arrays, ys = [], []
        for cname in sorted(files):
            for p in files[cname]:
                arrays.append(read_image_array(p))
                ys.append(index[cname])
        groups.append(arrays)
        labels.append(np.asarray(ys, dtype=np.int64))
    xs = _stack_images(groups, image_size)
    if len(xs) == 2:
        return _Raw(where, xs[0], labels[0], xs[1], labels[1], classes=classes,
                    names=("train images", "train labels"), test_names=("test images", "test labels"))
    return _Raw(where, xs[0], labels[0], None, None, classes=classes, names=("images", "labels"))


# --------------------------------------------------------------------------------------------------
# Hugging Face datasets


def _pick_columns(features, where: str) -> tuple[str, str]:
    import datasets

    columns = list(features)
    image_col = next((c for c in columns if isinstance(features[c], datasets.Image)), None)
    if image_col is None:
        image_col = next((c for c in _IMAGE_COLUMNS if c in features), None)
    class_labels = [c for c in columns if isinstance(features[c], datasets.ClassLabel)]
    label_col = next((c for c in _LABEL_COLUMNS if c in class_labels), None)
    if label_col is None and class_labels:
        label_col = class_labels[0]
    if label_col is None:
        label_col = next((c for c in _LABEL_COLUMNS if c in features), None)
    if image_col is None:
        raise _error(
            f"{where}: no image column found among columns [{', '.join(columns)}]; expected a "
            f"datasets.Image feature or a column named {', '.join(_IMAGE_COLUMNS)}"
        )
    if label_col is None:
        raise _error(
            f"{where}: no label column found among columns [{', '.join(columns)}]; expected a "
            f"datasets.ClassLabel feature or a column named {', '.join(_LABEL_COLUMNS)}"
        )
    return image_col, label_col


def _hf_images(ds, column: str, where: str) -> list[np.ndarray]:
    import datasets

    feature = ds.features[column]
    out: list[np.ndarray] = []
    if isinstance(feature, datasets.Image):
        for i, img in enumerate(ds[column]):
            if img is None:
                raise _error(f"{where}: example {i} has no image in column {column!r}; drop it from the dataset")
            out.append(pil_to_array(img))
        return out
    values = ds.with_format("numpy")[column]
    for i, value in enumerate(values):
        arr = np.asarray(value)
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
            arr = arr.transpose(1, 2, 0)  # channels-first pixel_values
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim == 3 and arr.shape[-1] == 4:
            arr = arr[..., :3]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
            raise _error(f"{where}: column {column!r} example {i} has shape {tuple(arr.shape)}, expected an [H,W] or [H,W,C] image")
        if arr.dtype != np.uint8:
            if arr.dtype.kind in "iu" and arr.size and 0 <= arr.min() and arr.max() <= 255:
                arr = arr.astype(np.uint8)
            else:
                raise _error(
                    f"{where}: column {column!r} holds {arr.dtype} pixels, expected uint8 0..255; "
                    f"store images as a datasets.Image feature"
                )
        out.append(arr)
    return out


def _hf_labels(ds, column: str, where: str, mapping: dict[str, int] | None) -> np.ndarray:
    values = ds[column]
    if mapping is not None:
        return np.asarray([mapping[str(v)] for v in values], dtype=np.int64)
    arr = np.asarray(values)
    if arr.dtype == np.bool_ or arr.dtype.kind not in "iu":
        raise _error(f"{where}: label column {column!r} has dtype {arr.dtype}, expected integer class labels or a ClassLabel feature")
    return arr


def _read_hf(name: str, config: str | None, spec: str, image_size: int) -> _Raw:
    try:
        import datasets
    except ImportError as exc:
        raise _error(f"task spec {spec!r}: hf: specs need the datasets extra: pip install 'ctinit[datasets]'") from exc
    where = f"task spec {spec!r}"
    local = os.path.expanduser(name)
    target = local if os.path.exists(local) else name
    try:
        loaded = datasets.load_dataset(target, config) if config else datasets.load_dataset(target)
    except TaskSpecError:
        raise
    except Exception as exc:  # DatasetNotFoundError, FileNotFoundError, ConnectionError, bad config...
        raise _error(
            f"{where}: cannot load Hugging Face dataset {name!r}"
            f"{f' config {config!r}' if config else ''} ({_describe(exc)}); check the name and config, "
            f"or pass a local directory of parquet/imagefolder files"
        ) from exc
    if isinstance(loaded, datasets.Dataset):
        splits = {"train": loaded}
    else:
        splits = dict(loaded)
    if "train" in splits:
        train = splits["train"]
    elif len(splits) == 1:
        train = next(iter(splits.values()))
    else:
        raise _error(f"{where}: no 'train' split among splits [{', '.join(splits)}]; the dataset needs a train split")
    test = splits.get("test", splits.get("validation"))
    if test is train:
        test = None

    image_col, label_col = _pick_columns(train.features, where)
    if test is not None:
        missing = [c for c in (image_col, label_col) if c not in test.features]
        if missing:
            raise _error(f"{where}: the test split lacks column(s) {', '.join(missing)} found in train; columns are [{', '.join(test.features)}]")
    label_feature = train.features[label_col]
    mapping = None
    if isinstance(label_feature, datasets.ClassLabel):
        classes = list(label_feature.names)
    else:
        sample = train[label_col][:1]
        if sample and isinstance(sample[0], str):
            names = set(map(str, train[label_col])) | (set(map(str, test[label_col])) if test is not None else set())
            classes = sorted(names)
            mapping = {c: i for i, c in enumerate(classes)}
        else:
            classes = None

    parts = [train] + ([test] if test is not None else [])
    images = [_hf_images(p, image_col, where) for p in parts]
    labels = [_hf_labels(p, label_col, where, mapping) for p in parts]
    xs = _stack_images(images, image_size)
    if test is not None:
        return _Raw(where, xs[0], labels[0], xs[1], labels[1], classes=classes,
                    names=("train images", "train labels"), test_names=("test images", "test labels"))
    return _Raw(where, xs[0], labels[0], None, None, classes=classes,
                names=("train images", "train labels"))
