"""A tiny zoo built with the maintainers' script (scripts/zoo.py add), for tests/test_zoo.py and tests/test_pick.py."""
import shutil
from pathlib import Path

import pytest
import yaml

import ctinit
from ctinit.loading import save_init
from helpers import load_script

ROOT = Path(__file__).resolve().parent.parent
NAME = "tiny-convnet"
SIZE = 16


def zoo_script():
    return load_script("scripts/zoo.py", "zoo_script")


def make_run(run: Path, backbone: str = "convnet4-32", size: int = SIZE, seed: int = 0) -> Path:
    """A meta-training run folder (init/ + config.yaml) as ctinit-train writes it, without training."""
    ctinit_recipe = {"algorithm": "cts", "backbone": backbone, "image_size": size, "steps": 3, "seed": seed,
                     "tasks": ["builtin:latin"]}
    import torch

    torch.manual_seed(seed)
    save_init(ctinit.build_backbone(backbone, size), run / "init",
              {"algorithm": "cts", "config": {k: v for k, v in ctinit_recipe.items() if k != "tasks"},
               "tasks": [{"spec": "builtin:latin", "name": "latin", "num_classes": 26, "train_size": 104,
                          "test_size": 1040}], "steps": 3, "seed": seed})
    (run / "config.yaml").write_text(yaml.safe_dump(ctinit_recipe))
    return run


@pytest.fixture(scope="session")
def built_zoo(tmp_path_factory):
    """A zoo folder (registry.json + weights/tiny-convnet/) made by `scripts/zoo.py add`."""
    root = tmp_path_factory.mktemp("zoo")
    run = make_run(tmp_path_factory.mktemp("run"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ctinit.zoo, "ROOT", root)
        (root / "registry.json").write_text("[]\n")
        code = zoo_script().main(["add", str(run), NAME, "--recipe", "training/recipes/tiny.yaml", "--command",
                                  "ctinit-train --config tiny --out runs/tiny", "--seconds", "12", "--machine",
                                  "a test"])
        assert code == 0
    return root


@pytest.fixture
def tiny_zoo(built_zoo, tmp_path, monkeypatch):
    """The tiny zoo, copied so that a test may damage or change it, and made the package's zoo."""
    root = tmp_path / "zoo"
    shutil.copytree(built_zoo, root)
    monkeypatch.setattr(ctinit.zoo, "ROOT", root)
    return root
