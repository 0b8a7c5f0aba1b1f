"""The bundled colour suite (builtin:colour-*): shapes, classes, the domain split and train/test source items."""
import struct
from pathlib import Path

import numpy as np
import pytest

from ctinit.tasks import COLOUR_META_TEST, COLOUR_META_TRAIN, META_TEST, META_TRAIN, SUITES, builtin_path, load_task
from ctinit.tasks.builtin import COLOUR_DOMAINS
from helpers import load_script

ROOT = Path(__file__).resolve().parent.parent
COLOUR = COLOUR_META_TRAIN + COLOUR_META_TEST


def _arrays(name):
    with np.load(builtin_path(name), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("name", COLOUR)
def test_task_file(name):
    a = _arrays(name)
    n_classes = len(a["classes"])
    assert n_classes >= 10
    for split in ("train", "test"):
        x, y, src = a[f"x_{split}"], a[f"y_{split}"], a[f"source_{split}"]
        assert x.dtype == np.uint8 and x.ndim == 4 and x.shape[1:] == (32, 32, 3)
        assert y.dtype == np.int64 and y.shape == (len(x),) and src.shape == (len(x),)
        assert set(np.unique(y)) == set(range(n_classes))  # every class in both splits
        assert src.dtype.kind == "U" and all(len(s) == 16 for s in src[:50])
    assert len(a["x_train"]) >= 300
    assert str(a["domain"]) == COLOUR_DOMAINS[name]
    # No test sample was drawn from a source item (theme file, deck, tileset, emoji, pattern region, image) that
    # a training sample was drawn from.
    assert not set(a["source_test"]) & set(a["source_train"])
    # Images are colour, not gray repeated three times.
    x = a["x_train"][:200].astype(np.int16)
    assert np.abs(x[..., 0] - x[..., 1]).mean() > 5


@pytest.mark.parametrize("name", COLOUR_META_TEST)
def test_meta_test_tasks_are_many_shot(name):
    """The meta-test tasks can be fine-tuned many-shot: at least 100 training samples in every class."""
    a = _arrays(name)
    assert np.bincount(a["y_train"], minlength=len(a["classes"])).min() >= 100


def test_source_items_per_task_are_many():
    """Generalization needs several source items per class in training (several themes, decks, emoji ...)."""
    for name in ("colour-cards", "colour-mahjong", "colour-icons-actions", "colour-emoji-objects"):
        a = _arrays(name)
        per_class = [len(set(a["source_train"][a["y_train"] == c])) for c in range(len(a["classes"]))]
        assert min(per_class) >= 3, name


def test_domain_split():
    train_domains = {COLOUR_DOMAINS[t] for t in COLOUR_META_TRAIN}
    test_domains = {COLOUR_DOMAINS[t] for t in COLOUR_META_TEST}
    assert len(COLOUR_META_TRAIN) >= 6 and len(train_domains) >= 4
    assert len(COLOUR_META_TEST) >= 3 and not train_domains & test_domains
    assert set(COLOUR_DOMAINS) == set(COLOUR)
    assert SUITES["glyphs"] == (META_TRAIN, META_TEST) and SUITES["colour"] == (COLOUR_META_TRAIN, COLOUR_META_TEST)


def test_suite_size_within_budget():
    """The meta-train tasks together stay under 25 MB, the many-shot meta-test tasks under 40 MB."""
    assert sum(builtin_path(n).stat().st_size for n in COLOUR_META_TRAIN) <= 25e6
    assert sum(builtin_path(n).stat().st_size for n in COLOUR_META_TEST) <= 40e6
    assert (builtin_path("colour-cards").parent / "LICENSES.md").is_file()


def test_load_task_rgb():
    td = load_task("builtin:colour-cards", image_size=32)
    assert td.name == "colour-cards" and td.num_classes == 52
    assert tuple(td.x_train.shape[1:]) in ((32, 32, 3), (3, 32, 32))
    assert not td.hflip


def _build_module():
    return load_script("scripts/build_colour_suite.py")


def test_build_helpers():
    b = _build_module()
    text = ("# group: Animals & Nature\n# subgroup: animal-bird\n"
            "1F426                                                  ; fully-qualified     # 🐦 E0.6 bird\n"
            "1F54A FE0F                                             ; fully-qualified     # 🕊️ E0.7 dove\n"
            "1F54A                                                  ; unqualified         # 🕊 E0.7 dove\n"
            "1F426 200D 2B1B                                        ; fully-qualified     # 🐦‍⬛ E15.0 black bird\n")
    assert b.parse_emoji_test(text) == [("Animals & Nature", "animal-bird", "\U0001F426"),
                                        ("Animals & Nature", "animal-bird", "\U0001F54A")]
    name = b"Test\0"
    pixels = bytes(range(2 * 3 * 3))
    pat = struct.pack(">5I", 24 + len(name), 1, 3, 2, 3) + b"GPAT" + name + pixels
    img = b.read_gimp_pattern(pat)
    assert img.shape == (2, 3, 3) and img[1, 2].tolist() == [15, 16, 17]
    gray = struct.pack(">5I", 24 + len(name), 1, 2, 1, 1) + b"GPAT" + name + bytes([7, 9])
    assert b.read_gimp_pattern(gray).tolist() == [[[7, 7, 7], [9, 9, 9]]]
    with pytest.raises(ValueError):
        b.read_gimp_pattern(pat.replace(b"GPAT", b"XXXX"))
    assert b.source_id("a", b"b") == b.source_id("a", b"b") != b.source_id("ab", b"")
    train, test = b.split_items(list(range(10)), 0.25, np.random.default_rng(0), min_test=2)
    assert sorted(train + test) == list(range(10)) and len(test) == 2


def test_colour_recipes():
    from ctinit_training.config import load_config

    for name, backbone in (("hetero", "resnet20"), ("quickstart-colour", "convnet4-32")):
        config = load_config(ROOT / "training" / "recipes" / f"{name}.yaml")
        assert config.tasks == [f"builtin:{t}" for t in COLOUR_META_TRAIN]
        assert config.image_size == 32 and config.backbone == backbone


def test_quickstart_colour_suite(tmp_path):
    """The colour main job end to end at toy size: it meta-trains on the colour meta-train tasks and fine-tunes
    on the colour meta-test tasks."""
    import json

    from ctinit_training.quickstart import main

    assert main(["--suite", "colour", "--out", str(tmp_path), "--finetune-steps", "2", "--finetune-batch-size", "8",
                 "--no-progress", "steps=2", "batch_size=4", "reset_period=2", "max_train_per_class=2"]) == 0
    report = json.loads((tmp_path / "quickstart.json").read_text())
    assert report["suite"] == "colour" and sorted(report["per_task"]) == sorted(COLOUR_META_TEST)
    assert all(0.0 <= v <= 1.0 for row in report["per_task"].values() for v in row.values())
