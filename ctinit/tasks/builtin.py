"""The bundled offline task suite behind ``builtin:<name>`` task specs.

Each task is one ``.npz`` shipped in ``ctinit/data/builtin/`` (built by
``scripts/build_builtin_suite.py``; contents and licenses in ``ctinit/data/builtin/LICENSES.md``)
holding ``x_train`` uint8 [N,28,28], ``y_train`` int64 [N], ``x_test`` uint8 [M,28,28],
``y_test`` int64 [M], ``classes`` (unicode class names) and ``hflip`` (0-d bool: whether a
horizontal flip keeps the class). Load it with ``np.load(path, allow_pickle=False)``.

This module only names and locates the files; it imports nothing heavy.
"""

from __future__ import annotations

from pathlib import Path

from ctinit.errors import TaskSpecError

# Fashion-MNIST plus letters of seven scripts: the tasks an initialization is meta-trained on.
META_TRAIN: tuple[str, ...] = (
    "fashion-mnist",
    "latin",
    "greek",
    "cyrillic",
    "armenian",
    "hebrew",
    "devanagari",
    "arabic",
)
# Letters of four scripts never seen in meta-training: the tasks transfer is measured on.
META_TEST: tuple[str, ...] = ("georgian", "thai", "ethiopic", "bengali")
BUILTIN_TASKS: tuple[str, ...] = META_TRAIN + META_TEST

_DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "builtin"


def builtin_path(name: str) -> Path:
    """The ``.npz`` file of the bundled task ``name`` (e.g. ``"latin"``).

    Raises TaskSpecError for a name that is not one of ``BUILTIN_TASKS``, or when the file is
    missing from the installation.
    """
    if name not in BUILTIN_TASKS:
        raise TaskSpecError(
            f"unknown builtin task {name!r}: choose one of {', '.join(BUILTIN_TASKS)} "
            "(see `builtin:` in the README)"
        )
    path = _DATA_DIR / f"{name}.npz"
    if not path.is_file():
        raise TaskSpecError(
            f"builtin task {name!r} is missing its data file {path}: reinstall ctinit, or rebuild "
            "the suite with `python scripts/build_builtin_suite.py`"
        )
    return path
