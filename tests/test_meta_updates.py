"""A meta-training run that would never meta-update is refused at config time, and `ctinit-hub export` refuses an
initialization that never moved from its random start (phi_distance 0) labelled as meta-learned."""
import json

import pytest

import ctinit
from ctinit.loading import save_init
from ctinit_hub.__main__ import main as hub_main

from robust_support import one_error_line, train


@pytest.mark.parametrize("overrides", [
    ["algorithm=reptile", "reset_period=1000", "steps=20"],
    ["algorithm=leap", "reset_period=30", "steps=20"],
    ["algorithm=fomaml-k", "reset_period=21", "steps=20"],
    ["algorithm=cts", "meta_interval=8", "reset_period=10", "steps=5"],
])
def test_a_run_that_never_meta_updates_is_refused_at_config_time(overrides, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, *overrides) == 2
    line = one_error_line(capsys, "ctinit-train: error:")
    assert "phi would never be updated" in line and "<= steps" in line
    assert not (out / "config.yaml").exists()


@pytest.mark.parametrize("overrides", [
    ["algorithm=reptile", "reset_period=20", "steps=20"],  # one meta-update, at the last step
    ["algorithm=mtl", "reset_period=1000", "steps=2"],  # MTL's K is 1 whatever the recipe says
    ["algorithm=scratch", "reset_period=1000", "steps=2"],  # scratch never meta-updates, and says so
])
def test_runs_that_meta_update_or_are_scratch_are_accepted(overrides, tmp_path):
    out = tmp_path / "run"
    assert train(out, *overrides, "log_every=20") == 0
    info = json.loads((out / "init" / "config.json").read_text())["ctinit"]
    assert (info["phi_distance"] > 0) == (info["algorithm"] != "scratch")


def _untrained_run(root, with_record):
    backbone = ctinit.build_backbone("convnet4-32")
    info = {"algorithm": "reptile", **({"phi_distance": 0.0} if with_record else {})}
    save_init(backbone, root / "init", info)
    (root / "metrics.jsonl").write_text(json.dumps({"step": 20, "phi_distance": 0.0}) + "\n")
    return root


@pytest.mark.parametrize("with_record", [True, False])  # False: a run from before inits recorded phi_distance
def test_export_refuses_an_init_that_never_moved(with_record, tmp_path, capsys):
    run = _untrained_run(tmp_path / "run", with_record)
    assert hub_main(["export", str(run), str(tmp_path / "export")]) == 2
    assert "phi_distance is 0" in one_error_line(capsys, "ctinit-hub: error:")
    assert not (tmp_path / "export").exists()
