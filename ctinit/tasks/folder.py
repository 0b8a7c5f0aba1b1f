"""The ``folder:DIR`` reader: one sub-folder of images per class, optionally under ``DIR/train`` and ``DIR/test``
(images read by :mod:`ctinit.images`, the reader ``ctinit predict`` uses too).

Training images are not flipped unless the folder says they are flip-safe (a mirrored image keeps its class, as for
most photos but not for glyphs, digits or text): a file ``DIR/ctinit-task.json`` holding ``{"hflip": true}``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..images import IMAGE_SUFFIXES, is_image_file, read_image_array
from .raw import RawTask, _resize_hwc, resize_notes, stack_images, task_error


def _class_dirs(directory: Path) -> list[Path]:
    return sorted((p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.name)


def _read_class_tree(directory: Path, spec: str) -> tuple[list[str], dict[str, list[Path]]]:
    dirs = _class_dirs(directory)
    if not dirs:
        raise task_error(
            f"{directory}: no class sub-folders (task spec {spec!r}); put the images of each class "
            f"in their own folder, e.g. {directory / 'cat'}/001.png"
        )
    files: dict[str, list[Path]] = {}
    for d in dirs:
        images = sorted(p for p in d.iterdir() if is_image_file(p))
        if not images:
            raise task_error(
                f"{d}: empty class folder (no {'/'.join(e[1:] for e in IMAGE_SUFFIXES)} images); "
                f"add images or remove the folder"
            )
        files[d.name] = images
    return [d.name for d in dirs], files


def _is_split_folder(directory: Path) -> bool:
    train, test = directory / "train", directory / "test"
    return train.is_dir() and test.is_dir() and bool(_class_dirs(train)) and bool(_class_dirs(test))


#: The folder's own settings file (only ``hflip`` so far); a file, so class sub-folders never clash with it.
SETTINGS_NAME = "ctinit-task.json"


def flip_safe(directory: Path) -> bool:
    """``hflip`` of DIR/ctinit-task.json (False without the file); a malformed file is one clear error."""
    path = directory / SETTINGS_NAME
    if not path.is_file():
        return False
    fix = 'it must hold a JSON object such as {"hflip": true}'
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise task_error(f"{path}: not readable as JSON ({' '.join(str(e).split())}); {fix}") from None
    if not isinstance(settings, dict) or set(settings) - {"hflip"} or not isinstance(settings.get("hflip", False), bool):
        raise task_error(f"{path}: {fix} (the only key is hflip, true or false)")
    return settings.get("hflip", False)


def read_folder(directory: Path, spec: str, image_size: int) -> RawTask:
    where = str(directory)
    if not directory.exists():
        raise task_error(f"{where}: directory not found (task spec {spec!r}); check the path")
    if not directory.is_dir():
        raise task_error(f"{where}: is not a directory (task spec {spec!r}); folder: specs need DIR/<class>/<image> folders")
    if _is_split_folder(directory):
        train_names, train_files = _read_class_tree(directory / "train", spec)
        test_names, test_files = _read_class_tree(directory / "test", spec)
        classes = sorted(set(train_names) | set(test_names))
        split_files = [train_files, test_files]
    else:
        classes, files = _read_class_tree(directory, spec)
        split_files = [files]
    index = {c: i for i, c in enumerate(classes)}
    groups, labels, sizes = [], [], set()
    for files in split_files:
        arrays, ys = [], []
        for cname in sorted(files):
            for p in files[cname]:
                # resized as it is read: one image at full size at a time, never the whole folder
                image = read_image_array(p, reduce_to=image_size)
                sizes.add(image.shape[:2])
                arrays.append(image if image.shape[:2] == (image_size, image_size) else _resize_hwc(image, image_size))
                ys.append(index[cname])
        groups.append(arrays)
        labels.append(np.asarray(ys, dtype=np.int64))
    notes = resize_notes(sizes, image_size)  # said from the sizes as read (the images are already resized)
    xs = stack_images(groups, image_size, notes)
    hflip = flip_safe(directory)
    if len(xs) == 2:
        return RawTask(where, xs[0], labels[0], xs[1], labels[1], classes=classes, hflip=hflip, notes=notes,
                    names=("train images", "train labels"), test_names=("test images", "test labels"))
    return RawTask(where, xs[0], labels[0], None, None, classes=classes, names=("images", "labels"), hflip=hflip,
                   notes=notes)


__all__ = ["read_folder"]
