"""What the test_robust_*.py files share: the tiny recipe, the error-line checks and a folder of bad inputs."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import ctinit
import ctinit_training.meta_train as meta_train
from ctinit.loading import save_init

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "training" / "recipes" / "tiny.yaml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
FAST = ["max_train_per_class=4", "batch_size=8", "tasks=[builtin:latin, builtin:greek]"]


def last_error_line(capsys, prefix):
    """Errors after work started: the log lines before it, then one error line, no traceback."""
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    line = captured.err.strip().splitlines()[-1]
    assert line.startswith(prefix), line
    return line


def one_error_line(capsys, prefix):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(prefix), lines[0]
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    (root / "a_file").write_text("not a folder")
    x = np.zeros((12, 28, 28), np.uint8)
    np.savez(root / "huge_label.npz", x=x, y=np.array([0, 1, np.iinfo(np.int64).max] * 4))
    torch.manual_seed(0)
    backbone = ctinit.build_backbone("convnet4-32")
    save_init(backbone, root / "good", {"algorithm": "cts"})
    with torch.no_grad():
        next(backbone.parameters()).fill_(float("nan"))
    save_init(backbone, root / "nan_run" / "init", {"algorithm": "cts"})
    for name, value in (("huge", 10**12), ("text", "abc")):
        shutil.copytree(root / "good", root / name)
        config = json.loads((root / name / "config.json").read_text())
        (root / name / "config.json").write_text(json.dumps({**config, "hidden_size": value}))
    return root


def train(out, *overrides, resume=False, overwrite=False):
    # one process whatever the length (--cpu-processes auto would relaunch runs of >= 100 steps)
    return meta_train.main(["--config", TINY, "--out", str(out), "--no-progress", "--cpu-processes", "1", *FAST, *overrides,
                            *(["--resume"] if resume else []), *(["--overwrite"] if overwrite else [])])
