"""benchmarks/bf16_accuracy.py's report from recorded meta-seeds: the paired claims overall and per CPU that made
the records (bf16 arithmetic differs by CPU), computed from the records without training anything."""
import json
from types import SimpleNamespace

import pytest

from benchmarks import bf16_accuracy


def write_records(folder, shifts: dict[int, tuple[str | None, float]]) -> None:
    """One record per meta-seed: fp32 accuracies, and bf16 the same plus SHIFT (cpu None: an old record without it)."""
    suite = bf16_accuracy.SUITES["glyph"]
    recipe = bf16_accuracy.recipe_of({"finetune_batch_size": 64}, 200)
    args = SimpleNamespace(steps=1000, reset_period=20, finetune_seeds=2)
    config = bf16_accuracy.meta_seed_config(args, suite, recipe)
    for m, (cpu, shift) in shifts.items():
        fp32 = [[t, s, 0.5 + 0.01 * i + 0.001 * m] for i, (t, s) in enumerate((t, s) for t in suite["meta_test"]
                                                                              for s in (700, 701))]
        record = {"meta_seed": m, "config": config, "seconds": {"no": 10.0, "bf16": 5.0},
                  "accuracy": {"no": fp32, "bf16": [[t, s, v + shift] for t, s, v in fp32]}}
        if cpu:
            record["cpu"] = cpu
        (folder / f"meta-seed-{m}.json").write_text(json.dumps(record))


def test_report_splits_the_claims_by_the_cpu_that_made_each_record(tmp_path):
    shifts = {0: ("cpu A", 0.002), 1: ("cpu A", 0.004), 2: ("cpu A", 0.003),
              3: ("cpu B", -0.03), 4: ("cpu B", -0.02), 5: (None, 0.0)}
    write_records(tmp_path, shifts)
    out = tmp_path / "result.json"
    assert bf16_accuracy.main(["--meta-seeds", "6", "--records", str(tmp_path), "--out", str(tmp_path / "ws"),
                               "--write", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["bf16_minus_fp32"]["n_meta_seeds"] == 6
    assert result["bf16_minus_fp32"]["diff"] == pytest.approx(sum(s for _, s in shifts.values()) / 6)
    by_cpu = result["by_cpu"]
    assert sorted(by_cpu) == ["cpu A", "cpu B", "not recorded"]
    assert by_cpu["cpu A"]["meta_seeds"] == [0, 1, 2]
    assert by_cpu["cpu A"]["bf16_minus_fp32"]["diff"] == pytest.approx(0.003)
    assert by_cpu["cpu A"]["bf16_same_as_fp32"]["verdict"] == "equivalent"  # within +-1 point, tight
    assert by_cpu["cpu B"]["bf16_minus_fp32"]["diff"] == pytest.approx(-0.025)
    assert by_cpu["cpu B"]["bf16_same_as_fp32"]["verdict"] != "equivalent"
    assert by_cpu["not recorded"]["meta_seeds"] == [5]
    assert not (tmp_path / "ws" / "runs").exists()  # every meta-seed was read back, none retrained
