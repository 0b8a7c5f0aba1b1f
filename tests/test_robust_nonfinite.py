"""Nothing non-finite is published: fine-tuning and meta-training stop on a non-finite value and export nothing."""
import pytest
import torch

import ctinit_training.engine_setup as engine_setup
import ctinit_training.meta_train as meta_train
from ctinit.cli import main as ctinit_main

from robust_support import TINY, FAST, last_error_line, files  # noqa: F401 (files is a fixture)


# ----------------------------------------------------------------------------------------------- non-finite


def test_finetune_stops_on_a_non_finite_loss(files, capsys):
    args = ["finetune", "--data", "builtin:latin", "--steps", "30", "--no-progress", "--max-train-per-class", "4"]
    assert ctinit_main([*args, "--init", str(files / "nan_run" / "init")]) == 2
    assert "the loss became non-finite by step 1" in last_error_line(capsys, "ctinit: error:")
    assert ctinit_main([*args, "--init", str(files / "good"), "--lr", "1e30"]) == 2
    line = last_error_line(capsys, "ctinit: error:")
    assert "the loss became non-finite by step" in line and "lower the learning rate" in line


@pytest.mark.parametrize("log_every", [1, 50])
def test_a_non_finite_phi_stops_the_run_and_nothing_is_exported(tmp_path, capsys, monkeypatch, log_every):
    from ctinit.meta import TrajectoryEngine

    class Poisoned(TrajectoryEngine):  # a meta-update that overflows at step 5
        def step(self):
            result = super().step()
            if self.step_count == 5:
                with torch.no_grad():
                    self.phi[:100] = float("inf")
            return result

    monkeypatch.setattr(engine_setup, "TrajectoryEngine", Poisoned)
    out = tmp_path / "run"
    code = meta_train.main(["--config", TINY, "--out", str(out), "--no-progress", *FAST, "steps=8",
                            f"log_every={log_every}", "checkpoint_every=2"])
    assert code == 2
    line = last_error_line(capsys, "ctinit-train: error: phi became non-finite by step")
    # caught at the first log record after the overflow, else at the next checkpoint
    assert f"by step {5 if log_every == 1 else 6}" in line and "the last finite checkpoint is" in line
    assert str(out / "checkpoints" / "step-4") in line
    assert not (out / "init").exists() and not (out / "init.tmp").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-4"]
    for step in (out / "checkpoints").iterdir():  # every checkpoint left is finite
        assert all(torch.isfinite(v).all() for v in weights_of_checkpoint(step).values() if v.is_floating_point())


def weights_of_checkpoint(step_dir):
    from safetensors.torch import load_file

    return load_file(str(step_dir / "rank-0.safetensors"))
