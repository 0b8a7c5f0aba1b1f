"""The newcomer's papercuts (issue 35, item 6), each with a test: curve labels, file modes, class names through
``finetune()`` -> ``save_pretrained``, preprocessor configs, cards' install line and Hub links, "did you mean zoo:NAME",
and a loading error that names ``import ctinit``."""
from __future__ import annotations

import pytest

from ctinit.report import curves_figure


def _results(**split) -> dict:
    return {"tasks": [{"spec": "builtin:a", "display": "a", "num_classes": 3}], "inits": [{"label": "zoo:x"}],
            "runs": [{"init": "zoo:x", "task": "builtin:a", "curve": [[0, 0.4], [10, 0.7]]}], "seeds": [0], **split}


@pytest.mark.parametrize("split, label", [
    ({"validation_fraction": 0.1, "score": "test"}, "validation accuracy"),
    ({"validation_fraction": 0.2, "score": "validation"}, "validation accuracy"),
    ({"validation_fraction": 0.0, "score": "test"}, "test accuracy"),
    ({}, "test accuracy"),  # recorded before validation splits existed: the curves were on the test split
])
def test_curves_are_labelled_with_the_split_they_were_measured_on(split, label):
    fig = curves_figure(_results(**split))
    assert fig.axes[0].get_ylabel() == label
    assert fig._suptitle.get_text().startswith(label + " while fine-tuning")


def _image_folder(root, classes=("alpha", "beta", "gamma"), per_class=5, size=28):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """A zoo init fine-tuned in Python on a folder of three named classes (two steps)."""
    import ctinit

    data = _image_folder(tmp_path_factory.mktemp("data") / "letters")
    model = ctinit.from_pretrained("zoo:glyph-convnet4-32")
    model.finetune(f"folder:{data}", steps=2, batch_size=4, progress=False)
    return model


def test_save_pretrained_after_finetune_keeps_the_folders_class_names(finetuned, tmp_path):
    import json

    finetuned.save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "alpha", "1": "beta", "2": "gamma"}
    assert config["label2id"] == {"alpha": 0, "beta": 1, "gamma": 2}
    finetuned.save_pretrained(tmp_path / "renamed", labels=["a", "b", "c"])  # given labels still win
    assert json.loads((tmp_path / "renamed" / "config.json").read_text())["id2label"]["2"] == "c"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_saved_files_get_the_mode_the_umask_gives(finetuned, tmp_path, umask, mode):
    import os
    import stat

    from ctinit.loading import save_init

    old = os.umask(umask)
    try:
        model_dir = finetuned.save_pretrained(tmp_path / "model")
        init_dir = save_init(finetuned.backbone, tmp_path / "init")
    finally:
        os.umask(old)
    files = [p for p in [*model_dir.iterdir(), *init_dir.iterdir()] if p.is_file()]
    assert {p.name for p in files} >= {"model.safetensors", "config.json", "preprocessor_config.json"}
    assert {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {str(p): oct(mode) for p in files}
