"""The reproduction study's script: its bookkeeping (the study itself is a benchmark, run by hand)."""
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "meta_test.py"


@pytest.fixture(scope="module")
def meta_test():
    spec = importlib.util.spec_from_file_location("meta_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_steps_to_reach_is_the_first_step_at_or_above_the_target(meta_test):
    curve = [[60, 0.40], [120, 0.55], [180, 0.52], [240, 0.61]]
    assert meta_test.steps_to_reach(curve, 0.55) == 120
    assert meta_test.steps_to_reach(curve, 0.56) == 240
    assert meta_test.steps_to_reach(curve, 0.62) is None
    assert meta_test.steps_to_reach([], 0.1) is None


def test_every_algorithm_gets_the_same_search_grid_size(meta_test):
    assert set(meta_test.LR_CENTRE) == set(meta_test.ALGORITHMS)
    assert {"cts", "reptile", "fomaml-cts", "fomaml", "leap", "mtl"} == set(meta_test.ALGORITHMS)
    grids = {a: [meta_test.LR_CENTRE[a] * f for f in meta_test.LR_FACTORS] for a in meta_test.ALGORITHMS}
    assert all(len(g) == 3 and g[0] < g[1] < g[2] for g in grids.values())
    # the quick preset keeps every stage of the full one, with less of each
    assert meta_test.PRESETS["quick"].keys() == meta_test.PRESETS["full"].keys()
    assert len(meta_test.PRESETS["full"]["seeds"]) >= 3


def test_an_unknown_override_is_one_line_and_exit_2(meta_test, tmp_path, capsys):
    assert meta_test.main(["--quick", "--out", str(tmp_path), "--set", "stepz=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key" in err[0] and "steps" in err[0]
