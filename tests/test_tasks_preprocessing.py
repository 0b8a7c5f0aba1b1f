"""What is done to a task's images is said (resize, grayscale/RGB, alpha, flip), and flip is off unless the task is
marked flip-safe (ctinit/tasks/raw.py, folder.py, data.py)."""
import json

import numpy as np
import pytest
from PIL import Image

from ctinit.cli import main as cli_main
from ctinit.errors import TaskSpecError
from ctinit.tasks import load_task


def _folder(root, size=(40, 40), mode="RGB", classes=("a", "b"), per_class=4, gray_first=False):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
            image = Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8))
            if gray_first and i == 0:
                image = image.convert("L")
            image.save(root / c / f"{i}.png")
    return root


def test_a_folder_is_not_flipped_unless_marked_flip_safe_and_its_resize_is_said(tmp_path):
    root = _folder(tmp_path / "photos")
    task = load_task(f"folder:{root}", image_size=28)
    assert task.hflip is False
    assert task.notes == ["images resized from 40x40 to 28x28 (the model's input size)"]
    assert task.preprocessing(3, hflip=False) == ["photos: images resized from 40x40 to 28x28 (the model's input size)"]
    (root / "ctinit-task.json").write_text(json.dumps({"hflip": True}))
    task = load_task(f"folder:{root}", image_size=40)
    assert task.hflip is True and task.notes == []  # already the model's size: nothing to say about size
    lines = task.preprocessing(3, hflip=True)
    assert len(lines) == 1 and "flipped horizontally" in lines[0]
    assert task.preprocessing(3, hflip=True, augment=False) == []


@pytest.mark.parametrize("content", ["{not json", json.dumps({"hflip": "yes"}), json.dumps({"flip": True}),
                                     json.dumps([True])])
def test_a_malformed_folder_settings_file_is_one_clear_error(tmp_path, content):
    root = _folder(tmp_path / "photos")
    (root / "ctinit-task.json").write_text(content)
    with pytest.raises(TaskSpecError, match=r"ctinit-task\.json.*hflip"):
        load_task(f"folder:{root}", image_size=28)


def test_mixed_grayscale_and_colour_and_sizes_are_said(tmp_path):
    root = _folder(tmp_path / "mixed", gray_first=True)
    Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(root / "a" / "small.png")
    task = load_task(f"folder:{root}", image_size=28)
    assert any(n.startswith("2 grayscale images converted to RGB") for n in task.notes), task.notes
    assert any("images of 2 sizes (20x30 to 40x40) resized to 28x28" in n for n in task.notes), task.notes


def test_npz_flip_follows_its_hflip_array_and_grayscale_repeat_and_alpha_are_said(tmp_path):
    x = np.zeros((8, 28, 28), dtype=np.uint8)
    y = np.repeat(np.arange(2), 4)
    np.savez(tmp_path / "plain.npz", x=x, y=y)
    np.savez(tmp_path / "tagged.npz", x=x, y=y, hflip=np.array(True))
    np.savez(tmp_path / "rgba.npz", x=np.zeros((8, 28, 28, 4), dtype=np.uint8), y=y)
    plain = load_task(f"npz:{tmp_path / 'plain.npz'}")
    assert plain.hflip is False and plain.notes == []
    assert plain.preprocessing(3, hflip=False) == ["plain: grayscale images repeated to 3 channels (the model takes RGB)"]
    assert plain.preprocessing(1, hflip=False) == []
    assert load_task(f"npz:{tmp_path / 'tagged.npz'}").hflip is True
    assert load_task(f"npz:{tmp_path / 'rgba.npz'}").notes == ["RGBA images: the alpha channel is dropped (RGB kept)"]
    assert load_task("builtin:georgian").hflip is False and load_task("builtin:fashion-mnist").hflip is True


def test_finetune_says_the_resize_on_stderr_and_does_not_flip_an_untagged_folder(tmp_path, capsys):
    root = _folder(tmp_path / "photos", per_class=6)
    assert cli_main(["finetune", "--init", "scratch:convnet4-32", "--data", f"folder:{root}", "--steps", "2",
                     "--batch-size", "4", "--no-progress", "--json"]) == 0
    captured = capsys.readouterr()
    assert "photos: images resized from 40x40 to 28x28" in captured.err
    assert "flipped" not in captured.err and json.loads(captured.out)["recipe"]["hflip"] is False
