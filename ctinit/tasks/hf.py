"""The ``hf:NAME[:CONFIG]`` reader: a Hugging Face ``datasets`` dataset, a Hub id or a local directory (needs the
``datasets`` extra)."""
from __future__ import annotations

import os

import numpy as np

from ..errors import TaskSpecError, exception_line
from ..images import pil_to_array
from .raw import RawTask, stack_images, task_error

_IMAGE_COLUMNS = ("image", "img", "pixel_values")
_LABEL_COLUMNS = ("label", "labels", "fine_label", "y")


def split_hf(rest: str) -> tuple[str, str | None]:
    """``NAME[:CONFIG]`` -> ``(NAME, CONFIG)``, keeping ``NAME`` whole when it is an existing path."""
    if ":" not in rest or os.path.exists(os.path.expanduser(rest)):
        return rest, None
    left, _, right = rest.rpartition(":")
    if os.path.exists(os.path.expanduser(left)):  # a local path that itself holds ':'
        return left, right or None
    name, _, config = rest.partition(":")
    return name, config or None


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
        raise task_error(
            f"{where}: no image column found among columns [{', '.join(columns)}]; expected a "
            f"datasets.Image feature or a column named {', '.join(_IMAGE_COLUMNS)}"
        )
    if label_col is None:
        raise task_error(
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
                raise task_error(f"{where}: example {i} has no image in column {column!r}; drop it from the dataset")
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
            raise task_error(f"{where}: column {column!r} example {i} has shape {tuple(arr.shape)}, expected an [H,W] or [H,W,C] image")
        if arr.dtype != np.uint8:
            if arr.dtype.kind in "iu" and arr.size and 0 <= arr.min() and arr.max() <= 255:
                arr = arr.astype(np.uint8)
            else:
                raise task_error(
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
        raise task_error(f"{where}: label column {column!r} has dtype {arr.dtype}, expected integer class labels or a ClassLabel feature")
    return arr


def read_hf(name: str, config: str | None, spec: str, image_size: int) -> RawTask:
    try:
        import datasets
    except ImportError as exc:
        raise task_error(f"task spec {spec!r}: hf: specs need the datasets extra: pip install 'ctinit[datasets]'") from exc
    where = f"task spec {spec!r}"
    local = os.path.expanduser(name)
    target = local if os.path.exists(local) else name
    try:
        loaded = datasets.load_dataset(target, config) if config else datasets.load_dataset(target)
    except TaskSpecError:
        raise
    except Exception as exc:  # DatasetNotFoundError, FileNotFoundError, ConnectionError, bad config...
        raise task_error(
            f"{where}: cannot load Hugging Face dataset {name!r}"
            f"{f' config {config!r}' if config else ''} ({exception_line(exc)}); check the name and config, "
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
        raise task_error(f"{where}: no 'train' split among splits [{', '.join(splits)}]; the dataset needs a train split")
    test = splits.get("test", splits.get("validation"))
    if test is train:
        test = None

    image_col, label_col = _pick_columns(train.features, where)
    if test is not None:
        missing = [c for c in (image_col, label_col) if c not in test.features]
        if missing:
            raise task_error(f"{where}: the test split lacks column(s) {', '.join(missing)} found in train; columns are [{', '.join(test.features)}]")
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
    notes: list[str] = []
    xs = stack_images(images, image_size, notes)
    # hf: datasets are taken as natural photos, flip-safe (as before; --no-hflip turns it off)
    if test is not None:
        return RawTask(where, xs[0], labels[0], xs[1], labels[1], classes=classes, hflip=True, notes=notes,
                    names=("train images", "train labels"), test_names=("test images", "test labels"))
    return RawTask(where, xs[0], labels[0], None, None, classes=classes, hflip=True, notes=notes,
                names=("train images", "train labels"))


__all__ = ["read_hf", "split_hf"]
