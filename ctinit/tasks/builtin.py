"""The bundled offline task suites behind ``builtin:<name>`` task specs.

Two suites:

* the glyph suite (``builtin:latin``, ...): each task is one ``.npz`` in ``ctinit/data/builtin/`` (built by
  ``scripts/build_builtin_suite.py``; contents and licenses in ``ctinit/data/builtin/LICENSES.md``)
  holding ``x_train`` uint8 [N,28,28], ``y_train`` int64 [N], ``x_test`` uint8 [M,28,28],
  ``y_test`` int64 [M], ``classes`` (unicode class names) and ``hflip`` (0-d bool: whether a
  horizontal flip keeps the class);
* the colour suite (``builtin:colour-<task>``): heterogeneous 32x32 RGB tasks in ``ctinit/data/colour/<task>.npz``
  (built by ``scripts/build_colour_suite.py``; licenses in ``ctinit/data/colour/LICENSES.md``) with the same
  arrays (images uint8 [N,32,32,3]) plus ``source_train`` / ``source_test`` (a short hash of the source item of
  every sample; no test item is a training item) and ``domain``. Whole domains are split between meta-train and
  meta-test.

Load a file with ``np.load(path, allow_pickle=False)``.

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

# The colour suite: task -> domain. Meta-test domains (cards, mahjong, textures) have no task in meta-train.
COLOUR_PREFIX = "colour-"
COLOUR_DOMAINS: dict[str, str] = {
    "colour-emoji-faces": "emoji",
    "colour-emoji-objects": "emoji",
    "colour-icons-actions": "icons",
    "colour-icons-places": "icons",
    "colour-fashion": "fashion",
    "colour-latin": "glyphs",
    "colour-cards": "cards",
    "colour-mahjong": "mahjong",
    "colour-textures": "textures",
}
COLOUR_META_TRAIN: tuple[str, ...] = (
    "colour-emoji-faces",
    "colour-emoji-objects",
    "colour-icons-actions",
    "colour-icons-places",
    "colour-fashion",
    "colour-latin",
)
COLOUR_META_TEST: tuple[str, ...] = ("colour-cards", "colour-mahjong", "colour-textures")

# suite name -> (meta-train tasks, meta-test tasks)
SUITES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "glyphs": (META_TRAIN, META_TEST),
    "colour": (COLOUR_META_TRAIN, COLOUR_META_TEST),
}
BUILTIN_TASKS: tuple[str, ...] = META_TRAIN + META_TEST + COLOUR_META_TRAIN + COLOUR_META_TEST

_DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "builtin"
_COLOUR_DIR = Path(__file__).resolve().parent.parent / "data" / "colour"


def builtin_path(name: str) -> Path:
    """The ``.npz`` file of the bundled task ``name`` (e.g. ``"latin"`` or ``"colour-cards"``).

    Raises TaskSpecError for a name that is not one of ``BUILTIN_TASKS``, or when the file is
    missing from the installation.
    """
    if name not in BUILTIN_TASKS:
        raise TaskSpecError(
            f"unknown builtin task {name!r}: choose one of {', '.join(BUILTIN_TASKS)} "
            "(see `builtin:` in the README)"
        )
    colour = name.startswith(COLOUR_PREFIX)
    path = _COLOUR_DIR / f"{name[len(COLOUR_PREFIX):]}.npz" if colour else _DATA_DIR / f"{name}.npz"
    if not path.is_file():
        script = "build_colour_suite.py" if colour else "build_builtin_suite.py"
        raise TaskSpecError(
            f"builtin task {name!r} is missing its data file {path}: reinstall ctinit, or rebuild "
            f"the suite with `python scripts/{script}`"
        )
    return path
