"""The reproduction study's script: its statistics against hand-computed values, its bookkeeping, and that its
search never reads a meta-test task (the study itself is a benchmark, run by hand)."""
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

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


def test_mean_ci95_by_hand(meta_test):
    # values 1, 2, 3: mean 2, sd 1, half-width t(0.975, 2) * 1 / sqrt 3 = 4.303 / 1.7320508 = 2.484338
    stats = meta_test.mean_ci95([1.0, 2.0, 3.0])
    assert stats["mean"] == pytest.approx(2.0)
    assert stats["ci95"] == pytest.approx([2 - 2.484338, 2 + 2.484338], abs=1e-6)
    # two values 0.1, 0.3: sd 0.141421, half-width 12.706 * 0.141421 / sqrt 2 = 1.2706
    assert meta_test.mean_ci95([0.1, 0.3])["ci95"] == pytest.approx([0.2 - 1.2706, 0.2 + 1.2706], abs=1e-6)
    assert meta_test.mean_ci95([0.5])["ci95"] is None
    assert meta_test.t_quantile_975(1) == 12.706 and meta_test.t_quantile_975(100) == 1.96


def test_verdicts(meta_test):
    assert meta_test.verdict([0.001, 0.2]) == "holds"
    assert meta_test.verdict([-0.2, -0.001]) == "fails"
    assert meta_test.verdict([-0.1, 0.1]) == "inconclusive"
    assert meta_test.verdict(None) == "inconclusive"


def test_paired_claim_averages_within_meta_seed_then_over_meta_seeds(meta_test):
    # meta-seed 0: diffs over (task, seed) 0.1, 0.3 -> 0.2; meta-seed 1: 0.0, 0.2 -> 0.1; meta-seed 2: 0.3, 0.3 -> 0.3
    # mean 0.2, sd 0.1, half-width 4.303 * 0.1 / sqrt 3 = 0.248434 -> [-0.048434, 0.448434]: inconclusive
    a, b = {}, {}
    for m, diffs in enumerate(((0.1, 0.3), (0.0, 0.2), (0.3, 0.3))):
        for j, d in enumerate(diffs):
            key = (m, f"task{j}", 100 * m)
            b[key] = 0.5
            a[key] = 0.5 + d
    b[(9, "task0", 900)] = 0.1  # unpaired: ignored
    c = meta_test.paired_claim(a, b)
    assert c["diff"] == pytest.approx(0.2)
    assert c["ci95"] == pytest.approx([0.2 - 0.248434, 0.2 + 0.248434], abs=1e-6)
    assert (c["verdict"], c["n_pairs"], c["n_meta_seeds"]) == ("inconclusive", 6, 3)
    assert c["per_meta_seed"] == pytest.approx([0.2, 0.1, 0.3])
    # the same differences, each meta-seed shifted up: the interval excludes 0 -> holds; reversed -> fails
    shifted = {k: v + 0.5 for k, v in a.items()}
    assert meta_test.paired_claim(shifted, b)["verdict"] == "holds"
    assert meta_test.paired_claim(b, shifted)["verdict"] == "fails"
    # a difference of differences
    assert meta_test.combine({(0, "t", 0): 0.7}, {(0, "t", 0): 0.5}) == {(0, "t", 0): pytest.approx(0.2)}


def test_summary_is_over_meta_seed_means(meta_test):
    acc = {(0, "t1", 0): 0.2, (0, "t2", 0): 0.4, (1, "t1", 100): 0.5, (1, "t2", 100): 0.5}
    s = meta_test.summary(acc)
    assert s["per_meta_seed"] == pytest.approx([0.3, 0.5])
    assert s["mean"] == pytest.approx(0.4) and s["meta_seeds"] == 2 and s["n_runs"] == 4
    assert s["ci95"] == pytest.approx([0.4 - 1.2706, 0.4 + 1.2706], abs=1e-6)  # sd .141421 -> 12.706 * .1


def test_beta_width_by_hand(meta_test):
    betas = [0.01, 0.0316, 0.1, 0.316, 1.0]
    w = meta_test.beta_width(betas, [0.50, 0.595, 0.60, 0.592, 0.40])
    assert w["best_beta"] == 0.1 and w["range"] == [0.0316, 0.316]
    assert w["width_decades"] == pytest.approx(math.log10(0.316 / 0.0316))
    assert not w["open_low"] and not w["open_high"]
    # non-contiguous: 1.0 is within a point but 0.1 (0.589) is not -> the range stops at 0.0316
    w = meta_test.beta_width(betas, [0.60, 0.595, 0.589, 0.50, 0.599])
    assert w["range"] == [0.01, 0.0316] and w["open_low"]
    assert meta_test.beta_width([0.1, 1.0], [0.3, 0.5])["width_decades"] == 0.0


def test_band_by_hand(meta_test):
    b = meta_test.band([[[0, 0.1], [10, 0.3]], [[0, 0.1], [10, 0.5]], [[0, 0.1], [5, 0.2], [10, 0.4]]])
    assert b["steps"] == [0, 10]
    assert b["mean"] == pytest.approx([0.1, 0.4])
    assert b["ci95"][0] == pytest.approx([0.1, 0.1])
    assert b["ci95"][1] == pytest.approx([0.4 - 0.248434, 0.4 + 0.248434], abs=1e-6)


def test_presets_and_grids(meta_test):
    assert set(meta_test.LR_CENTRE) == set(meta_test.ALGORITHMS)
    assert {"cts", "reptile", "fomaml-cts", "fomaml", "leap", "mtl"} == set(meta_test.ALGORITHMS)
    full, quick, large = (meta_test.PRESETS[k] for k in ("full", "quick", "large"))
    assert quick.keys() == full.keys() == large.keys()  # every preset keeps every stage
    assert len(full["meta_seeds"]) >= 3 and len(large["meta_seeds"]) >= 3 and len(quick["meta_seeds"]) >= 2
    for p in (full, quick, large):
        assert p["search_steps"] == p["steps"]  # the search runs at the final run's step count
        assert p["reset_period"] in p["k_sweep_ks"] and p["steps"] % p["snapshot_every"] == 0
        assert (p["steps"] // 2) % p["snapshot_every"] == 0  # the convergence claim reads the half-way snapshot
        assert math.log10(max(p["beta_grid"]) / min(p["beta_grid"])) >= 2 - 1e-9  # two decades at least
        assert meta_test.PAPER_META_LR in p["beta_grid"]
    assert large["paper_finetune_steps"] == 1000
    # the official 1e-2 for every rule; Leap's summed direction is K times this engine's averaged one
    assert meta_test.paper_meta_lr("cts", 100) == 0.01 and meta_test.paper_meta_lr("leap", 100) == pytest.approx(1.0)


def test_bad_options_are_one_line_and_exit_2(meta_test, tmp_path, capsys):
    for argv, words in ((["--set", "stepz=3"], ("unknown key", "steps")), (["--set", "steps=x"], ("not JSON",)),
                        (["--suite", "nope"], ("unknown suite", "glyph")), (["--preset", "large"], ("disagree",))):
        assert meta_test.main(["--quick", "--out", str(tmp_path), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and all(w in err[0] for w in words), err


def test_suites_are_the_bundled_suites_and_search_only_meta_train_tasks(meta_test):
    from ctinit.tasks import SUITES as BUNDLED

    for name, bundled in (("glyph", "glyphs"), ("colour", "colour")):
        suite = meta_test.SUITES[name]
        assert [s.split(":", 1)[1] for s in suite["meta_train"]] == list(BUNDLED[bundled][0])
        assert [s.split(":", 1)[1] for s in suite["meta_test"]] == list(BUNDLED[bundled][1])
        assert set(suite["search_validation"]) < set(suite["meta_train"])  # the search scores on meta-train tasks


def test_every_meta_test_task_has_the_limited_data_examples_per_class(meta_test):
    """The limited-data stage takes ``limited_per_class`` training images of every class (the suite's own value
    where it sets one): every meta-test task of every suite must have that many."""
    from ctinit.tasks import load_task

    for suite in meta_test.SUITES.values():
        per_class = suite.get("limited_per_class", meta_test.PRESETS["full"]["limited_per_class"])
        for spec in suite["meta_test"]:
            task = load_task(spec, image_size=suite.get("image_size", 28))
            assert int(torch.bincount(task.y_train).min()) >= per_class, spec


def fake_task(spec, image_size=28, seed=0, **_):
    from ctinit.tasks import TaskData

    g = torch.Generator().manual_seed(len(spec))
    x = torch.randint(0, 255, (12, 1, image_size, image_size), dtype=torch.uint8, generator=g)
    y = torch.arange(12) % 3
    return TaskData(name=spec.split(":")[-1], spec=spec, x_train=x, y_train=y, x_test=x[:6], y_test=y[:6],
                    num_classes=3, classes=["a", "b", "c"], hflip=False)


@pytest.fixture
def recorded_specs(monkeypatch):
    """Every task spec the study loads (meta-training, meta-validation and fine-tuning all call load_task)."""
    import ctinit.tasks
    import ctinit_training.meta_train

    specs = []

    def loader(spec, *args, **kwargs):
        specs.append(spec)
        return fake_task(spec, *args, **kwargs)

    monkeypatch.setattr(ctinit.tasks, "load_task", loader)
    monkeypatch.setattr(ctinit_training.meta_train, "load_task", loader)
    return specs


def test_the_search_never_reads_a_meta_test_task(meta_test, tmp_path, recorded_specs):
    suite = meta_test.SUITES["glyph"]
    train = [t for t in suite["meta_train"] if t not in suite["search_validation"]]
    preset = {**meta_test.PRESETS["quick"], "search_steps": 2, "search_finetune_steps": 1, "max_extensions": 1}
    result = meta_test.search_meta_lr(tmp_path, "cts", train, suite["search_validation"], preset, 2)
    assert recorded_specs and set(recorded_specs) <= set(suite["meta_train"])
    assert not set(recorded_specs) & set(suite["meta_test"])
    assert set(suite["search_validation"]) <= set(recorded_specs)  # scored on the held-out meta-train tasks
    assert len(result["scores"]) in (6, 7)  # 3 rates x 2 schedules, plus one extension if an end won
    assert {s for s, _, _ in result["scores"]} == {"constant", "cosine"}
    # a second search reuses every run and every fine-tuning result: nothing is loaded again
    recorded_specs.clear()
    again = meta_test.search_meta_lr(tmp_path, "cts", train, suite["search_validation"], preset, 2)
    assert again["scores"] == result["scores"] and recorded_specs == []


def test_a_tiny_study_prints_every_claim_in_the_issue_shape(meta_test, tmp_path, recorded_specs, capsys, monkeypatch):
    # a subset of the algorithms (FOMAML for its held-out split), two meta-seeds, 16 px fake tasks: every stage
    monkeypatch.setattr(meta_test, "ALGORITHMS", ("cts", "reptile", "fomaml"))
    monkeypatch.setattr(meta_test, "BASELINES", ("reptile", "fomaml", "scratch"))
    monkeypatch.setattr(meta_test, "BETA_ALGORITHMS", ("cts", "reptile"))
    monkeypatch.setattr(meta_test, "SCHEDULES", ("constant",))
    monkeypatch.setattr(meta_test, "LR_FACTORS", (1.0,))
    monkeypatch.setattr(meta_test, "BASE", {**meta_test.BASE, "log_every": 1000})
    sets = ["steps=4", "reset_period=2", "search_steps=4", "search_finetune_steps=1", "max_extensions=0",
            "finetune_steps=1", "limited_per_class=2", "limited_finetune_steps=1", "snapshot_every=2",
            "snapshot_finetune_steps=1", "k_sweep_ks=[2, 4]", "paper_finetune_steps=1", "beta_grid=[0.01, 1.0]"]
    argv = ["--quick", "--json", "--out", str(tmp_path), "--image-size", "16"] + [f"--set={s}" for s in sets]
    assert meta_test.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    for name, claim in result["claims"].items():
        assert claim["verdict"] in ("holds", "fails", "inconclusive")
        assert isinstance(claim["diff"], float) and len(claim["ci95"]) == 2 and claim["n_pairs"] >= 2
    assert {"cts_beats_reptile_full", "paper_protocol_cts_beats_fomaml", "cts_reaches_reptile_final_within_half",
            "longer_k_helps_cts_more_than_reptile", "cts_ahead_of_every_baseline_full"} <= set(result["claims"])
    assert all(a["meta_seeds"] >= 2 for a in result["algorithms"].values())
    assert result["beta_robustness"]["reptile"]["betas"] == [0.01, 1.0]
    assert (tmp_path / "beta.png").is_file() and (tmp_path / "results.md").is_file()
    # the search read no meta-test task: every meta-test load came after it (meta-training runs on all tasks,
    # the convergence hook and fine-tuning); the search's runs are on the search tasks only
    for run in (tmp_path / "runs").glob("search-*/study.json"):
        assert not set(json.loads(run.read_text())["config"]["tasks"]) & set(meta_test.SUITES["glyph"]["meta_test"])
        assert json.loads(run.read_text())["config"]["validation"]["every"] == 0
    fomaml = json.loads((tmp_path / "runs" / f"fomaml-K2-{result['tuned']['fomaml']['meta_lr_schedule']}-lr"
                         f"{result['tuned']['fomaml']['meta_lr']:.4g}-s1" / "study.json").read_text())
    assert fomaml["config"]["heldout_fraction"] == meta_test.FOMAML_HELDOUT_FRACTION


def test_a_run_name_shared_by_two_configs_never_overwrites_a_finished_run(meta_test, tmp_path, recorded_specs, monkeypatch):
    # 1.0 and 1.0000000000000002 (= sqrt(10) * sqrt(10) * 0.1) both print as lr1: the second gets NAME-DIGEST
    monkeypatch.setattr(meta_test, "BASE", {**meta_test.BASE, "image_size": 16, "log_every": 1000})
    tasks = ["builtin:latin", "builtin:greek"]
    first = meta_test.meta_train(tmp_path, "mtl-lr1", "mtl", 1.0, tasks, 2, 2)
    second = meta_test.meta_train(tmp_path, "mtl-lr1", "mtl", 0.1 * 10 ** 0.5 * 10 ** 0.5, tasks, 2, 2)
    assert first["init"] != second["init"] and Path(second["init"]).parent.name.startswith("mtl-lr1-")
    recorded_specs.clear()
    assert meta_test.meta_train(tmp_path, "mtl-lr1", "mtl", 1.0, tasks, 2, 2)["init"] == first["init"]
    assert meta_test.meta_train(tmp_path, "mtl-lr1", "mtl", 0.1 * 10 ** 0.5 * 10 ** 0.5, tasks, 2, 2)["init"] == second["init"]
    assert recorded_specs == []  # both reused
