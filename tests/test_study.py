"""The reproduction study (benchmarks/study): its statistics against hand-computed values, its bookkeeping, that
no choice reads a meta-test task, the ratio protocol's splits, choices, partial results and resumption (the study
itself is a benchmark, run by hand)."""
import dataclasses
import json
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the study runs from a checkout (python -m benchmarks.study), not from an install
    sys.path.insert(0, str(ROOT))

from benchmarks.study import cli, config as study_config, ratio, stats as st  # noqa: E402
from benchmarks.study.config import BASE, PRESETS, RATIO_PRESETS, SUITES, build_config  # noqa: E402
from benchmarks.study.runs import Workspace  # noqa: E402
from benchmarks.study.search import search_meta_lr  # noqa: E402


def test_steps_to_reach_is_the_first_step_at_or_above_the_target():
    curve = [[60, 0.40], [120, 0.55], [180, 0.52], [240, 0.61]]
    assert st.steps_to_reach(curve, 0.55) == 120
    assert st.steps_to_reach(curve, 0.56) == 240
    assert st.steps_to_reach(curve, 0.62) is None
    assert st.steps_to_reach([], 0.1) is None


def test_mean_ci95_by_hand():
    # values 1, 2, 3: mean 2, sd 1, half-width t(0.975, 2) * 1 / sqrt 3 = 4.303 / 1.7320508 = 2.484338
    stats = st.mean_ci95([1.0, 2.0, 3.0])
    assert stats["mean"] == pytest.approx(2.0)
    assert stats["ci95"] == pytest.approx([2 - 2.484338, 2 + 2.484338], abs=1e-6)
    # two values 0.1, 0.3: sd 0.141421, half-width 12.706 * 0.141421 / sqrt 2 = 1.2706
    assert st.mean_ci95([0.1, 0.3])["ci95"] == pytest.approx([0.2 - 1.2706, 0.2 + 1.2706], abs=1e-6)
    assert st.mean_ci95([0.5])["ci95"] is None
    assert st.t_quantile_975(1) == 12.706 and st.t_quantile_975(100) == 1.96


def test_verdicts():
    assert st.verdict([0.001, 0.2]) == "holds"
    assert st.verdict([-0.2, -0.001]) == "fails"
    assert st.verdict([-0.1, 0.1]) == "inconclusive"
    assert st.verdict(None) == "inconclusive"


def test_paired_claim_averages_within_meta_seed_then_over_meta_seeds():
    # meta-seed 0: diffs over (task, seed) 0.1, 0.3 -> 0.2; meta-seed 1: 0.0, 0.2 -> 0.1; meta-seed 2: 0.3, 0.3 -> 0.3
    # mean 0.2, sd 0.1, half-width 4.303 * 0.1 / sqrt 3 = 0.248434 -> [-0.048434, 0.448434]: inconclusive
    a, b = {}, {}
    for m, diffs in enumerate(((0.1, 0.3), (0.0, 0.2), (0.3, 0.3))):
        for j, d in enumerate(diffs):
            key = (m, f"task{j}", 100 * m)
            b[key] = 0.5
            a[key] = 0.5 + d
    b[(9, "task0", 900)] = 0.1  # unpaired: ignored
    c = st.paired_claim(a, b)
    assert c["diff"] == pytest.approx(0.2)
    assert c["ci95"] == pytest.approx([0.2 - 0.248434, 0.2 + 0.248434], abs=1e-6)
    assert (c["verdict"], c["n_pairs"], c["n_meta_seeds"]) == ("inconclusive", 6, 3)
    assert c["per_meta_seed"] == pytest.approx([0.2, 0.1, 0.3])
    # the same differences, each meta-seed shifted up: the interval excludes 0 -> holds; reversed -> fails
    shifted = {k: v + 0.5 for k, v in a.items()}
    assert st.paired_claim(shifted, b)["verdict"] == "holds"
    assert st.paired_claim(b, shifted)["verdict"] == "fails"
    # a difference of differences
    assert st.combine({(0, "t", 0): 0.7}, {(0, "t", 0): 0.5}) == {(0, "t", 0): pytest.approx(0.2)}


def test_summary_is_over_meta_seed_means():
    acc = {(0, "t1", 0): 0.2, (0, "t2", 0): 0.4, (1, "t1", 100): 0.5, (1, "t2", 100): 0.5}
    s = st.summary(acc)
    assert s["per_meta_seed"] == pytest.approx([0.3, 0.5])
    assert s["mean"] == pytest.approx(0.4) and s["meta_seeds"] == 2 and s["n_runs"] == 4
    assert s["ci95"] == pytest.approx([0.4 - 1.2706, 0.4 + 1.2706], abs=1e-6)  # sd .141421 -> 12.706 * .1


def test_beta_width_by_hand():
    betas = [0.01, 0.0316, 0.1, 0.316, 1.0]
    w = st.beta_width(betas, [0.50, 0.595, 0.60, 0.592, 0.40])
    assert w["best_beta"] == 0.1 and w["range"] == [0.0316, 0.316]
    assert w["width_decades"] == pytest.approx(math.log10(0.316 / 0.0316))
    assert not w["open_low"] and not w["open_high"]
    # non-contiguous: 1.0 is within a point but 0.1 (0.589) is not -> the range stops at 0.0316
    w = st.beta_width(betas, [0.60, 0.595, 0.589, 0.50, 0.599])
    assert w["range"] == [0.01, 0.0316] and w["open_low"]
    assert st.beta_width([0.1, 1.0], [0.3, 0.5])["width_decades"] == 0.0


def test_band_by_hand():
    b = st.band([[[0, 0.1], [10, 0.3]], [[0, 0.1], [10, 0.5]], [[0, 0.1], [5, 0.2], [10, 0.4]]])
    assert b["steps"] == [0, 10]
    assert b["mean"] == pytest.approx([0.1, 0.4])
    assert b["ci95"][0] == pytest.approx([0.1, 0.1])
    assert b["ci95"][1] == pytest.approx([0.4 - 0.248434, 0.4 + 0.248434], abs=1e-6)


def test_presets_and_grids():
    assert set(study_config.LR_CENTRE) == set(study_config.ALGORITHMS)
    assert {"cts", "reptile", "fomaml-cts", "fomaml", "leap", "mtl"} == set(study_config.ALGORITHMS)
    full, quick, large = (PRESETS[k] for k in ("full", "quick", "large"))
    assert quick.keys() == full.keys() == large.keys()  # every preset keeps every stage
    assert len(full["meta_seeds"]) >= 3 and len(large["meta_seeds"]) >= 3 and len(quick["meta_seeds"]) >= 2
    for p in (full, quick, large):
        assert p["search_steps"] == p["steps"]  # the search runs at the final run's step count
        assert p["reset_period"] in p["k_sweep_ks"] and p["steps"] % p["snapshot_every"] == 0
        assert (p["steps"] // 2) % p["snapshot_every"] == 0  # the convergence claim reads the half-way snapshot
        assert math.log10(max(p["beta_grid"]) / min(p["beta_grid"])) >= 2 - 1e-9  # two decades at least
        assert study_config.PAPER_META_LR in p["beta_grid"]
    assert large["paper_finetune_steps"] == 1000
    # the official 1e-2 for every rule; Leap's summed direction is K times this engine's averaged one
    assert study_config.paper_meta_lr("cts", 100) == 0.01 and study_config.paper_meta_lr("leap", 100) == pytest.approx(1.0)


def test_bad_options_are_one_line_and_exit_2(tmp_path, capsys):
    for argv, words in ((["--set", "stepz=3"], ("unknown key", "steps")), (["--set", "steps=x"], ("not JSON",)),
                        (["--suite", "nope"], ("unknown suite", "glyph")), (["--preset", "large"], ("disagree",))):
        assert cli.main(["--quick", "--out", str(tmp_path), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and all(w in err[0] for w in words), err


def test_suites_are_the_bundled_suites_and_search_only_meta_train_tasks():
    from ctinit.tasks import SUITES as BUNDLED

    for name, bundled in (("glyph", "glyphs"), ("colour", "colour")):
        suite = SUITES[name]
        assert [s.split(":", 1)[1] for s in suite["meta_train"]] == list(BUNDLED[bundled][0])
        assert [s.split(":", 1)[1] for s in suite["meta_test"]] == list(BUNDLED[bundled][1])
        assert set(suite["search_validation"]) < set(suite["meta_train"])  # the search scores on meta-train tasks


def test_every_task_a_split_can_draw_has_the_limited_data_examples_per_class():
    """The limited-data stage takes ``limited_per_class`` training images of every class (the suite's own value
    where it sets one): every meta-test task of every suite must have that many, and so must every task the
    ratio protocol's splits can draw as a meta-test task."""
    from ctinit.tasks import load_task

    for suite in SUITES.values():
        per_class = suite.get("limited_per_class", PRESETS["full"]["limited_per_class"])
        drawable = [t for t in suite["meta_train"] + suite["meta_test"] if t not in suite["pinned_meta_train"]]
        assert set(suite["meta_test"]) <= set(drawable)
        for spec in drawable:
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


def test_the_search_never_reads_a_meta_test_task(tmp_path, recorded_specs):
    suite = SUITES["glyph"]
    train = [t for t in suite["meta_train"] if t not in suite["search_validation"]]
    config = build_config("quick", "glyph", ["search_steps=2", "search_finetune_steps=1", "max_extensions=1"],
                          out=str(tmp_path))
    ws = Workspace(tmp_path, config.base)
    result = search_meta_lr(ws, config, "cts", train, suite["search_validation"], 2)
    assert recorded_specs and set(recorded_specs) <= set(suite["meta_train"])
    assert not set(recorded_specs) & set(suite["meta_test"])
    assert set(suite["search_validation"]) <= set(recorded_specs)  # scored on the held-out meta-train tasks
    assert len(result["scores"]) in (6, 7)  # 3 rates x 2 schedules, plus one extension if an end won
    assert {s for s, _, _ in result["scores"]} == {"constant", "cosine"}
    # a second search reuses every run and every fine-tuning result: nothing is loaded again
    recorded_specs.clear()
    again = search_meta_lr(Workspace(tmp_path, config.base), config, "cts", train, suite["search_validation"], 2)
    assert again["scores"] == result["scores"] and recorded_specs == []


def test_a_tiny_study_prints_every_claim_in_the_issue_shape(tmp_path, recorded_specs, capsys):
    # a subset of the algorithms (FOMAML for its held-out split), two meta-seeds, 16 px fake tasks: every stage
    sets = ["steps=4", "reset_period=2", "search_steps=4", "search_finetune_steps=1", "max_extensions=0",
            "finetune_steps=1", "limited_per_class=2", "limited_finetune_steps=1", "snapshot_every=2",
            "snapshot_finetune_steps=1", "k_sweep_ks=[2, 4]", "paper_finetune_steps=1", "beta_grid=[0.01, 1.0]"]
    argv = ["--quick", "--json", "--out", str(tmp_path), "--image-size", "16"] + [f"--set={s}" for s in sets]
    config, as_json = cli.config_from_argv(argv)
    config = dataclasses.replace(config, algorithms=("cts", "reptile", "fomaml"),
                                 baselines=("reptile", "fomaml", "scratch"), beta_algorithms=("cts", "reptile"),
                                 schedules=("constant",), lr_factors=(1.0,), base={**config.base, "log_every": 1000})
    assert as_json and config.base["image_size"] == 16
    result = json.loads(json.dumps(cli.run(config)))
    assert result == json.loads((tmp_path / "results.json").read_text()) and not result["partial"]
    for name, claim in result["claims"].items():
        if name.startswith("cts_same_as_"):  # equivalence: two one-sided tests
            assert claim["verdict"] in ("equivalent", "different", "inconclusive") and len(claim["ci90"]) == 2
            assert claim["verdict_holm"] in ("equivalent", "inconclusive") and claim["margin"] == 0.02
            continue
        assert claim["verdict"] in ("holds", "fails", "inconclusive")
        assert claim["verdict_holm"] in ("holds", "fails", "inconclusive")
        assert isinstance(claim["diff"], float) and len(claim["ci95"]) == 2 and claim["n_pairs"] >= 2
    assert {"cts_same_as_reptile_full", "cts_same_as_fomaml_full"} <= set(result["claims"])
    assert {"cts_beats_reptile_full", "paper_protocol_cts_beats_fomaml", "cts_reaches_reptile_final_within_half",
            "longer_k_helps_cts_more_than_reptile", "cts_ahead_of_every_baseline_full"} <= set(result["claims"])
    assert all(a["meta_seeds"] >= 2 for a in result["algorithms"].values())
    assert result["beta_robustness"]["reptile"]["betas"] == [0.01, 1.0]
    assert (tmp_path / "beta.png").is_file() and (tmp_path / "results.md").is_file()
    # the search read no meta-test task: every meta-test load came after it (meta-training runs on all tasks,
    # the convergence hook and fine-tuning); the search's runs are on the search tasks only
    for run in (tmp_path / "runs").glob("search-*/study.json"):
        assert not set(json.loads(run.read_text())["config"]["tasks"]) & set(SUITES["glyph"]["meta_test"])
        assert json.loads(run.read_text())["config"]["validation"]["every"] == 0
    fomaml = json.loads((tmp_path / "runs" / f"fomaml-K2-{result['tuned']['fomaml']['meta_lr_schedule']}-lr"
                         f"{result['tuned']['fomaml']['meta_lr']:.4g}-s1" / "study.json").read_text())
    assert fomaml["config"]["heldout_fraction"] == study_config.FOMAML_HELDOUT_FRACTION


def test_a_run_name_shared_by_two_configs_never_overwrites_a_finished_run(tmp_path, recorded_specs):
    # 1.0 and 1.0000000000000002 (= sqrt(10) * sqrt(10) * 0.1) both print as lr1: the second gets NAME-DIGEST
    ws = Workspace(tmp_path, {**BASE, "image_size": 16, "log_every": 1000})
    tasks = ["builtin:latin", "builtin:greek"]
    first = ws.meta_train("mtl-lr1", "mtl", 1.0, tasks, 2, 2)
    second = ws.meta_train("mtl-lr1", "mtl", 0.1 * 10 ** 0.5 * 10 ** 0.5, tasks, 2, 2)
    assert first["init"] != second["init"] and Path(second["init"]).parent.name.startswith("mtl-lr1-")
    recorded_specs.clear()
    assert ws.meta_train("mtl-lr1", "mtl", 1.0, tasks, 2, 2)["init"] == first["init"]
    assert ws.meta_train("mtl-lr1", "mtl", 0.1 * 10 ** 0.5 * 10 ** 0.5, tasks, 2, 2)["init"] == second["init"]
    assert recorded_specs == []  # both reused
