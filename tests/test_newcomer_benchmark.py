"""benchmarks/newcomer.py in its tiny mode (4 classes x 6 images, 2 steps): the script runs the newcomer's commands
end to end against the installed ctinit and records them. Its times are not checked (speed is the benchmark's job)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import load_script

ROOT = Path(__file__).resolve().parent.parent


def newcomer():
    return load_script("benchmarks/newcomer.py")


def test_options_the_installed_ctinit_lacks_are_left_out():
    bench = newcomer()
    extra = ["--steps", "2", "--seeds", "1", "--inits", "zoo:a", "zoo:b", "--json"]
    assert bench.supported(extra, {"--steps", "--inits", "--json"}) == ["--steps", "2", "--inits", "zoo:a", "zoo:b", "--json"]
    assert bench.supported(extra, set()) == []


def test_the_recommended_init_is_read_from_picks_output():
    bench = newcomer()
    ranking = [{"init": "zoo:x", "scratch": False}, {"init": "scratch:zoo:x", "scratch": True}]
    as_json = lambda **d: {"stdout": json.dumps(d) + "\n"}  # noqa: E731
    assert bench.recommended_init(as_json(recommendation="zoo:x", ranking=ranking)) == "zoo:x"
    assert bench.recommended_init(as_json(recommendation="scratch", ranking=ranking)) == "scratch:zoo:x"
    assert bench.recommended_init(as_json(recommendation="scratch", ranking=ranking,
                                          command="ctinit finetune --init zoo:y --data folder:d --out m")) == "zoo:y"
    text = "rank init ...\nrecommendation: zoo:z (ctinit finetune --init zoo:z ...)\n"
    assert bench.recommended_init({"stdout": text}) == "zoo:z"


def test_the_tiny_newcomer_path_runs_end_to_end_and_records_it(tmp_path):
    out = tmp_path / "newcomer.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "newcomer.py"), "--tiny", "--installed",
                             "--out", str(out)], capture_output=True, text=True, env=env, timeout=1800)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    record = json.loads(out.read_text())
    assert record["tiny"] and record["completed"] and record["images"] == 24 and record["machine"]["cpu"]
    steps = record["steps"]
    for name in ("help", "list", "pick", "finetune", "predict"):
        assert steps[name]["exit"] == 0, (name, steps[name]["stderr_tail"])
        assert steps[name]["seconds"] > 0
    assert steps["argument_error"]["exit"] == 2 and "--init" in steps["argument_error"]["stderr_tail"]
    assert steps["finetune"]["command"].startswith(f"ctinit finetune --init {record['recommended_init']} "
                                                   "--data folder:data --out model")
    assert len(steps["predict"]["stdout"].strip().splitlines()) == 3  # one line per image
    assert record["total_seconds"] == round(sum(record["seconds"][s] for s in ("list", "pick", "finetune", "predict")), 3)
    assert set(record["targets"]) == {"pick_seconds", "pick_to_prediction_seconds", "help_seconds", "error_seconds"}
    assert "/tmp/" not in json.dumps({k: v for k, v in record.items() if k != "command"})  # no local path recorded
