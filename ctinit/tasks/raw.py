"""What every reader (npz, folder, hf, builtin) hands over -- a :class:`RawTask` of numpy arrays -- and its checked
conversion to :class:`~ctinit.tasks.data.TaskData` (:func:`finish`): image and label checks, the seeded hold-out of
sources without a test split, the resize to ``image_size``."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import TaskSpecError, one_line
from .data import TaskData
from .subsets import holdout_indices

#: The most classes a task may have when its labels are unnamed (num_classes = max label + 1).
MAX_CLASSES = 100_000
# Bound on the float elements a resize chunk holds (input + output), ~256 MiB of float32.
RESIZE_CHUNK_ELEMENTS = 1 << 26


def task_error(message: str) -> TaskSpecError:
    return TaskSpecError(one_line(message))


@dataclass
class RawTask:
    """What a reader hands to :func:`finish`: numpy arrays, not yet validated for labels."""

    where: str                      # file / dir / spec to name in messages
    x_train: np.ndarray             # uint8 [N,H,W] or [N,H,W,C]
    y_train: np.ndarray
    x_test: np.ndarray | None       # None -> seeded hold-out from train
    y_test: np.ndarray | None
    classes: list[str] | None = None
    # Whether the images are flip-safe (random horizontal flips keep their class): off unless the source says so
    # (an npz's hflip, a folder's ctinit-task.json; hf: datasets are natural images). Glyphs and text are not.
    hflip: bool = False
    notes: list[str] = field(default_factory=list)  # what reading did to the images, one line each
    names: tuple[str, str] = ("x_train", "y_train")   # array names for messages
    test_names: tuple[str, str] = ("x_test", "y_test")


def _check_images(x: np.ndarray, key: str, where: str) -> np.ndarray:
    """Validate dtype/shape of an image array and return it as uint8 [N,H,W,C] with C in {1, 3}."""
    if x.dtype != np.uint8:
        raise task_error(
            f"{where}: {key} has dtype {x.dtype}, expected uint8 images; "
            f"convert with x.astype(np.uint8) after scaling to 0..255"
        )
    if x.ndim == 3:
        x = x[..., None]
    elif x.ndim == 4:
        if x.shape[-1] not in (1, 3, 4):
            raise task_error(
                f"{where}: {key} has shape {tuple(x.shape)}, expected [N,H,W] or channels-last "
                f"[N,H,W,C] with C in 1, 3 or 4; transpose channels-first arrays with "
                f"x.transpose(0, 2, 3, 1)"
            )
        if x.shape[-1] == 4:
            x = x[..., :3]  # drop alpha
    else:
        raise task_error(
            f"{where}: {key} has {x.ndim} dimensions (shape {tuple(x.shape)}), expected "
            f"[N,H,W] (grayscale) or [N,H,W,C] with C in 1, 3 or 4"
        )
    if x.shape[1] < 1 or x.shape[2] < 1:
        raise task_error(f"{where}: {key} has empty images (shape {tuple(x.shape)}); each image needs H, W >= 1")
    return x


def _check_labels(y: np.ndarray, key: str, where: str) -> np.ndarray:
    if y.dtype == np.bool_ or y.dtype.kind not in "iu":
        raise task_error(
            f"{where}: {key} has dtype {y.dtype}, expected integer class labels; "
            f"convert with y.astype(np.int64) (map names to 0..C-1 first)"
        )
    if y.ndim != 1:
        raise task_error(
            f"{where}: {key} has shape {tuple(y.shape)}, expected a 1-D array of labels; "
            f"flatten it with y.reshape(-1)"
        )
    return y


def _from_numpy(x: np.ndarray) -> torch.Tensor:
    x = np.ascontiguousarray(x)
    if not x.flags.writeable:  # torch warns on read-only arrays (e.g. np.asarray of a PIL image)
        x = x.copy()
    return torch.from_numpy(x)


def to_tensor(x: np.ndarray, image_size: int, device: torch.device) -> torch.Tensor:
    """uint8 NHWC numpy -> uint8 NCHW tensor of image_size x image_size on ``device``."""
    n, h, w, c = x.shape
    if (h, w) == (image_size, image_size):
        t = _from_numpy(x).to(device)
        return t.permute(0, 3, 1, 2).contiguous()
    out = torch.empty((n, c, image_size, image_size), dtype=torch.uint8, device=device)
    per_image = c * (h * w + image_size * image_size)
    chunk = max(1, RESIZE_CHUNK_ELEMENTS // per_image)
    for start in range(0, n, chunk):
        part = _from_numpy(x[start:start + chunk]).to(device)
        part = part.permute(0, 3, 1, 2).float()
        part = F.interpolate(part, size=(image_size, image_size), mode="bilinear",
                             align_corners=False, antialias=True)
        out[start:start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _resize_hwc(img: np.ndarray, image_size: int) -> np.ndarray:
    """Resize one uint8 [H,W] or [H,W,C] image the same way :func:`to_tensor` does."""
    squeeze = img.ndim == 2
    arr = img[None, :, :, None] if squeeze else img[None]
    out = to_tensor(arr, image_size, torch.device("cpu"))[0].permute(1, 2, 0).numpy()
    return out[..., 0] if squeeze else out


def finish(raw: RawTask, *, name: str, spec: str, image_size: int, seed: int, holdout: float,
            device: str | torch.device) -> TaskData:
    where = raw.where
    xk, yk = raw.names
    notes = list(raw.notes)
    if raw.x_train.ndim == 4 and raw.x_train.shape[-1] == 4:
        notes.append("RGBA images: the alpha channel is dropped (RGB kept)")
    if raw.x_train.ndim >= 3:
        notes += resize_notes({tuple(raw.x_train.shape[1:3])}, image_size)
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
            raise task_error(
                f"{where}: {kx} has {x.shape[0]} images but {ky} has {y.shape[0]} labels; "
                f"they must have the same length"
            )
        if x.shape[0] == 0:
            raise task_error(f"{where}: {kx} is empty (0 images); every split needs at least one example")
    if x_test is not None and x_test.shape[1:] != x_train.shape[1:]:
        raise task_error(
            f"{where}: {xk} images have shape {tuple(x_train.shape[1:])} but {raw.test_names[0]} images "
            f"have shape {tuple(x_test.shape[1:])}; both splits need the same image shape"
        )

    all_y = [y_train] + ([y_test] if y_test is not None else [])
    lo = min(int(y.min()) for y in all_y)
    hi = max(int(y.max()) for y in all_y)
    classes = raw.classes
    if classes is not None:
        num_classes = len(classes)
        seen: set = set()
        twice = next((c for c in classes if c in seen or seen.add(c)), None)
        if twice is not None:
            raise task_error(f"{where}: the class name {one_line(repr(twice))[:40]} is given to more than one class; "
                             "class names must be unique (a model's predictions could not tell them apart)")
        if lo < 0 or hi >= num_classes:
            raise task_error(
                f"{where}: labels must be 0..{num_classes - 1} ({num_classes} classes are named) "
                f"but they span {lo}..{hi}; fix the labels or the class names"
            )
    else:
        if lo < 0:
            raise task_error(
                f"{where}: labels must be 0..C-1 (C = max label + 1) but the smallest is {lo} "
                f"(largest {hi}); remap them to 0..C-1"
            )
        if hi >= MAX_CLASSES:  # a head (and class list) that large is a label typo, not a task
            raise task_error(
                f"{where}: labels must be 0..C-1 with C at most {MAX_CLASSES} but the largest is {hi}; "
                f"remap them to 0..C-1"
            )
        num_classes = hi + 1
        classes = [str(i) for i in range(num_classes)]
    present = int(np.unique(y_train).size)
    if num_classes < 2 or present < 2:
        raise task_error(
            f"{where}: the train split has {present} class(es) ({num_classes} in all); a task needs "
            f"at least 2 classes with train examples"
        )

    _check_class_coverage(y_train, y_test, classes, where)

    if x_test is None:
        if x_train.shape[0] < 2:
            raise task_error(f"{where}: cannot hold out a test split from {x_train.shape[0]} example; add more examples")
        train_idx, test_idx = holdout_indices(y_train, holdout, seed)
        x_test, y_test = x_train[test_idx], y_train[test_idx]
        x_train, y_train = x_train[train_idx], y_train[train_idx]

    dev = torch.device(device)
    return TaskData(
        name=name,
        spec=spec,
        x_train=to_tensor(x_train, image_size, dev),
        y_train=torch.from_numpy(y_train.astype(np.int64)).to(dev),
        x_test=to_tensor(x_test, image_size, dev),
        y_test=torch.from_numpy(y_test.astype(np.int64)).to(dev),
        num_classes=num_classes,
        classes=list(classes),
        hflip=bool(raw.hflip),
        notes=notes,
    )


def _check_class_coverage(y_train: np.ndarray, y_test: np.ndarray | None, classes: list[str], where: str) -> None:
    """Test classes without a training example are an error (no model could learn them; the score would be capped
    without a word); classes with no example at all (gaps in the labels: head outputs never trained) a warning. Both
    name the classes."""
    trained = set(np.unique(y_train).tolist())

    def named(labels) -> str:
        labels = sorted(labels)
        text = ", ".join(repr(classes[c]) for c in labels[:5])
        return text + (f" (and {len(labels) - 5} more)" if len(labels) > 5 else "")

    tested = set(np.unique(y_test).tolist()) if y_test is not None else set()
    untrained = tested - trained
    if untrained:
        raise task_error(f"{where}: test class{'es' if len(untrained) > 1 else ''} {named(untrained)} "
                         f"ha{'ve' if len(untrained) > 1 else 's'} no training examples; add training examples of "
                         "them or drop them from the test split")
    gaps = set(range(len(classes))) - trained - tested
    if gaps:
        import logging

        logging.getLogger("ctinit.tasks").warning(
            "%s: class%s %s ha%s no examples (gaps in the labels): the head has outputs that are never trained",
            where, "es" if len(gaps) > 1 else "", named(gaps), "ve" if len(gaps) > 1 else "s")


def resize_notes(sizes: set, image_size: int) -> list[str]:
    """The line saying that images of these (height, width) sizes are resized to the model's input size (none when
    they all have it already): one wording for every reader."""
    if not set(sizes) - {(image_size, image_size)}:
        return []
    (h0, w0), (h1, w1) = min(sizes), max(sizes)
    target = f"{image_size}x{image_size} (the model's input size)"
    return [f"images resized from {h0}x{w0} to {target}" if len(sizes) == 1 else
            f"images of {len(sizes)} sizes ({h0}x{w0} to {h1}x{w1}) resized to {target}"]


def stack_images(groups: list[list[np.ndarray]], image_size: int, notes: list[str] | None = None) -> list[np.ndarray]:
    """Stack each list of [H,W] / [H,W,3] images into one uint8 array, sharing one channel count.

    Grayscale is kept (C=1) only when every image of every group is grayscale. Images of mixed
    sizes are resized to ``image_size`` one by one so they can be stacked. What was done is appended to ``notes``.
    """
    color = any(a.ndim == 3 for g in groups for a in g)
    shapes = {a.shape[:2] for g in groups for a in g}
    if notes is not None:
        gray = sum(a.ndim == 2 for g in groups for a in g)
        if color and gray:
            notes.append(f"{gray} grayscale images converted to RGB (the others are colour)")
        if len(shapes) > 1:
            notes += resize_notes(shapes, image_size)
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


__all__ = ["MAX_CLASSES", "RawTask", "finish", "resize_notes", "stack_images", "task_error", "to_tensor"]
