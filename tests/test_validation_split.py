"""No metric on an empty split: a validation (or FOMAML held-out) split that cannot hold every class is one line,
exit 2, in pick, finetune --eval-every, evaluate and the trainer; nothing is trained first."""
import pytest

import ctinit
from ctinit.cli import main as cli_main
from ctinit.loading import save_init

from helpers import make_npz
from robust_support import one_error_line, train


@pytest.fixture
def one_per_class(tmp_path):
    return make_npz(tmp_path / "one_per_class.npz", n_per_class=1, classes=3)


def _refused(capsys, prefix):
    line = one_error_line(capsys, prefix)
    assert "cannot hold out" in line and "fewer than 2 training examples" in line, line
    return line


@pytest.mark.parametrize("command", [
    ["pick", "--inits", "INIT", "--steps", "2", "--seeds", "2"],  # INIT: a saved init (pick adds scratch itself)
    ["finetune", "--init", "scratch:convnet4-32", "--steps", "2", "--eval-every", "1"],
    ["evaluate", "--init", "scratch:convnet4-32", "--steps", "2", "--seeds", "1"],
])
def test_a_split_too_small_for_every_class_is_refused(command, one_per_class, tmp_path, capsys):
    if "INIT" in command:
        save_init(ctinit.build_backbone("convnet4-32"), tmp_path / "init", {"algorithm": "cts"})
        command = [str(tmp_path / "init") if a == "INIT" else a for a in command]
    if command[0] == "evaluate":
        command = [*command, "--out", str(tmp_path / "eval")]
    capsys.readouterr()
    assert cli_main([*command, "--data", f"npz:{one_per_class}", "--batch-size", "8", "--no-progress"]) == 2
    _refused(capsys, "ctinit: error:")
    assert not (tmp_path / "eval" / "results.json").exists()


def test_finetune_without_a_curve_needs_no_validation_split(one_per_class, capsys):
    assert cli_main(["finetune", "--init", "scratch:convnet4-32", "--steps", "1", "--batch-size", "8",
                     "--data", f"npz:{one_per_class}", "--no-progress"]) == 0


def test_the_trainers_heldout_split_too_small_is_refused(one_per_class, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, "algorithm=fomaml", "heldout_fraction=0.5", f"tasks=[npz:{one_per_class}]",
                 "max_train_per_class=null", "steps=2") == 2
    line = _refused(capsys, "ctinit-train: error:")
    assert "heldout_fraction" in line
    assert not (out / "config.yaml").exists()
