"""scripts/make_new_task.py: the evaluation tasks outside both bundled suites really are outside them."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from ctinit.tasks import BUILTIN_TASKS

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def new_task():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        spec = importlib.util.spec_from_file_location("make_new_task", ROOT / "scripts" / "make_new_task.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(ROOT / "scripts"))


def test_glyph_scripts_are_not_suite_tasks(new_task):
    suite = new_task.glyph_suite
    assert not set(new_task.GLYPH_SCRIPTS) & set(BUILTIN_TASKS)
    suite_letters = {ch for _, letters in suite.GLYPH_TASKS.values() for ch in letters if ord(ch) > 0x7F}
    for name, (_, points) in new_task.GLYPH_SCRIPTS.items():
        assert len(points) >= new_task.MIN_CLASSES, name
        assert not {chr(p) for p in points} & suite_letters, name  # no letter of a suite script


def test_colour_tasks_use_items_the_suite_does_not(new_task):
    colour = new_task.colour_suite
    suite_icons = {n for names in colour.ICON_CLASSES.values() for n in names}
    for names in (new_task.ICONS_DEVICES, new_task.ICONS_STATUS):
        assert len(names) >= 20 and len(set(names)) == len(names) and not set(names) & suite_icons
    assert not set(new_task.ICONS_DEVICES) & set(new_task.ICONS_STATUS)
    suite_groups = {g for groups in colour.EMOJI_GROUPS.values() for g in groups}
    assert "Symbols" not in suite_groups
    assert colour.TEXTURE_PACKAGE != "gimp-data-extras"
    n_train, n_test = new_task.COLOUR_PER_CLASS
    assert n_train >= 20 and n_test >= 10
    for name, (domain, draws_like, hflip, _) in new_task.COLOUR_TASKS.items():
        assert f"colour-{name}" not in BUILTIN_TASKS and draws_like in colour.PER_CLASS


@pytest.mark.parametrize("argv, message", [
    (["nope"], "unknown glyph script 'nope'"),
    (["--colour", "tamil"], "unknown colour task 'tamil'"),
    (["emoji-symbols"], "(or --colour)"),
])
def test_unknown_name_is_one_line(new_task, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        new_task.main(argv[:-1] + [argv[-1], str(tmp_path / "t.npz")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("make_new_task.py: error: ") and message in err
    assert not (tmp_path / "t.npz").exists()


@pytest.mark.parametrize("shape", [(40, 28, 28), (40, 32, 32, 3)])
def test_preview_grid(new_task, tmp_path, shape):
    from PIL import Image

    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, shape, dtype=np.uint8), "y_train": rng.integers(0, 4, shape[0])}
    new_task.colour_suite.write_preview(arrays, tmp_path / "p" / "grid.png", rows=4)
    with Image.open(tmp_path / "p" / "grid.png") as im:
        assert im.size == (4 * 4 * shape[1],) * 2 and im.mode == ("RGB" if len(shape) == 4 else "L")
