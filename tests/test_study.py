"""The reproduction study (benchmarks/study): its statistics against hand-computed values, its bookkeeping, that
no choice reads a meta-test task, the ratio protocol's splits, choices, partial results and resumption (the study
itself is a benchmark, run by hand)."""
import dataclasses
import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the study runs from a checkout (python -m benchmarks.study), not from an install
    sys.path.insert(0, str(ROOT))

from benchmarks.study import cli, config as study_config, ratio, report, stats as st  # noqa: E402
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
    # mean 0.2, sd 0.1, half-width t(0.975, 2) * 0.1 / sqrt 3 = 4.302653 * 0.057735 = 0.248414 -> inconclusive
    a, b = {}, {}
    for m, diffs in enumerate(((0.1, 0.3), (0.0, 0.2), (0.3, 0.3))):
        for j, d in enumerate(diffs):
            key = (m, f"task{j}", 100 * m)
            b[key] = 0.5
            a[key] = 0.5 + d
    b[(9, "task0", 900)] = 0.1  # unpaired: ignored
    c = st.paired_claim(a, b)
    assert c["diff"] == pytest.approx(0.2)
    assert c["ci95"] == pytest.approx([0.2 - 0.248414, 0.2 + 0.248414], abs=1e-6)
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


def test_the_colour_meta_test_tasks_are_many_shot():
    """Every task the ratio protocol can draw as a colour meta-test task has >= 100 training images per class."""
    from ctinit.tasks import load_task

    for spec in SUITES["colour"]["meta_test_pool"]:
        task = load_task(spec, image_size=32)
        assert int(torch.bincount(task.y_train).min()) >= 100, spec
    for m in range(10):
        split = ratio.split_tasks(SUITES["colour"], m)
        assert set(split["meta_test"]) <= set(SUITES["colour"]["meta_test_pool"])
        assert not set(split["meta_test"]) & set(split["validation"] + split["meta_train"])


def test_every_task_a_split_can_draw_has_the_limited_data_examples_per_class():
    """The limited-data stage takes ``limited_per_class`` training images of every class (the suite's own value
    where it sets one): every meta-test task of every suite must have that many, and so must every task the
    ratio protocol's splits can draw as a meta-test task."""
    from ctinit.tasks import load_task

    for suite in SUITES.values():
        per_class = suite.get("limited_per_class", PRESETS["full"]["limited_per_class"])
        drawable = suite.get("meta_test_pool") or \
            [t for t in suite["meta_train"] + suite["meta_test"] if t not in suite["pinned_meta_train"]]
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
    import ctinit_training.task_setup

    specs = []

    def loader(spec, *args, **kwargs):
        specs.append(spec)
        return fake_task(spec, *args, **kwargs)

    monkeypatch.setattr(ctinit.tasks, "load_task", loader)
    monkeypatch.setattr(ctinit_training.task_setup, "load_task", loader)
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


def test_an_interrupted_run_of_the_same_config_is_continued_from_its_checkpoint(tmp_path, recorded_specs, capsys):
    # a 2-step run with its step-2 checkpoint and no study.json or init stands for a run stopped half-way
    # (steps and checkpoint_every may differ on resume); continued to 4 steps it equals a run made in one go
    base = {**BASE, "image_size": 16, "log_every": 1000, "checkpoint_every": 2}
    tasks = ["builtin:latin", "builtin:greek"]
    ws = Workspace(tmp_path / "a", base)
    ws.meta_train("cts", "cts", 0.5, tasks, 2, 2)
    run_dir = tmp_path / "a" / "runs" / "cts"
    (run_dir / "study.json").unlink()
    shutil.rmtree(run_dir / "init")
    assert (run_dir / "checkpoints" / "step-2").is_dir()
    capsys.readouterr()
    continued = ws.meta_train("cts", "cts", 0.5, tasks, 4, 2)
    assert "continuing the interrupted run" in capsys.readouterr().err
    fresh = Workspace(tmp_path / "b", base).meta_train("cts", "cts", 0.5, tasks, 4, 2)
    a = load_file(str(Path(continued["init"]) / "model.safetensors"))
    b = load_file(str(Path(fresh["init"]) / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # another config in the same folder is not continued: it starts over
    (run_dir / "study.json").unlink()
    shutil.rmtree(run_dir / "init")
    capsys.readouterr()
    ws.meta_train("cts", "cts", 0.25, tasks, 4, 2)
    assert "continuing" not in capsys.readouterr().err


def test_t_distribution_by_hand():
    # df 1 (Cauchy): P(T <= t) = 1/2 + atan(t) / pi; df 2: 1/2 + t / (2 sqrt(2 + t^2))
    assert st.t_cdf(2.0, 1) == pytest.approx(0.5 + math.atan(2.0) / math.pi, abs=1e-12)
    assert st.t_cdf(-1.5, 2) == pytest.approx(0.5 - 1.5 / (2 * math.sqrt(4.25)), abs=1e-12)
    assert st.t_quantile(0.975, 2) == pytest.approx(4.303, abs=1e-3)  # the table's value
    assert st.t_quantile(0.95, 9) == pytest.approx(1.833, abs=1e-3)


def test_paired_claim_p_value_by_hand():
    # per-meta-seed differences 0.1, 0.3 (df 1): mean 0.2, se 0.1, t = 2 -> p = 2 (1 - P(T <= 2)) = 1 - 2 atan(2)/pi
    a = {(0, "t", 0): 0.6, (1, "t", 100): 0.8}
    b = {(0, "t", 0): 0.5, (1, "t", 100): 0.5}
    assert st.paired_claim(a, b)["p"] == pytest.approx(1 - 2 * math.atan(2.0) / math.pi, abs=1e-9)


def test_holm_by_hand():
    # sorted p .01, .02, .04 x 3, 2, 1 -> .03, .04, .04 (monotone); None is not tested
    assert st.holm({"a": 0.04, "b": 0.01, "c": 0.02, "d": None}) == pytest.approx(
        {"a": 0.04, "b": 0.03, "c": 0.04, "d": None})
    # step-down keeps the order: .03 x 2 = .06 would be below .5 x 1 -> .5
    assert st.holm({"a": 0.03, "b": 0.5}) == pytest.approx({"a": 0.06, "b": 0.5})


def test_holm_verdicts_of_differences_equivalences_and_composites():
    claims = {"x_beats_y": {"diff": 0.1, "p": 0.01}, "x_beats_z": {"diff": -0.1, "p": 0.02},
              "x_beats_w": {"diff": 0.1, "p": 0.04},
              "x_same_as_y": {"diff": 0.0, "p": 0.001, "margin": 0.02},
              "x_ahead_of_every": {"diff": 0.1, "parts": ["x_beats_y", "x_beats_w"]}}
    st.holm_verdicts(claims)
    # family of 4: .001 x 4 = .004, .01 x 3 = .03, .02 x 2 = .04, .04 x 1 -> .04
    assert [claims[k]["p_holm"] for k in ("x_same_as_y", "x_beats_y", "x_beats_z", "x_beats_w")] == \
        pytest.approx([0.004, 0.03, 0.04, 0.04])
    assert [claims[k]["verdict_holm"] for k in ("x_beats_y", "x_beats_z", "x_beats_w", "x_same_as_y")] == \
        ["holds", "fails", "holds", "equivalent"]
    assert claims["x_ahead_of_every"]["verdict_holm"] == "holds" and "p_holm" not in claims["x_ahead_of_every"]
    claims["x_beats_w"]["p"] = 0.2  # now .2 x 1: inconclusive, and the composite with it
    st.holm_verdicts(claims)
    assert claims["x_beats_w"]["verdict_holm"] == "inconclusive"
    assert claims["x_ahead_of_every"]["verdict_holm"] == "inconclusive"


def test_equivalence_by_two_one_sided_tests_by_hand():
    # per-meta-seed differences 0.00, 0.01, 0.02 (n 3): mean .01, sd .01, se .0057735, t(.95, 2) = 2.919986
    # 90% interval .01 -+ .016859 = [-.006859, .026859]: not inside +-.02 -> inconclusive; inside +-.03 -> equivalent
    a = {(m, "t", 0): 0.5 + d for m, d in enumerate((0.0, 0.01, 0.02))}
    b = {(m, "t", 0): 0.5 for m in range(3)}
    c = st.equivalence_claim(a, b, 0.02)
    assert c["ci90"] == pytest.approx([0.01 - 0.016859, 0.01 + 0.016859], abs=1e-5)
    assert c["verdict"] == "inconclusive"
    # TOST p: the larger of P(T >= (.01 + .02) / se) and P(T <= (.01 - .02) / se) = P(T <= -1.732051), df 2
    assert c["p"] == pytest.approx(0.5 - 1.732051 / (2 * math.sqrt(2 + 3.0)), abs=1e-6)
    assert st.equivalence_claim(a, b, 0.03)["verdict"] == "equivalent"
    far = {k: v + 0.1 for k, v in a.items()}
    assert st.equivalence_claim(far, b, 0.02)["verdict"] == "different"


def test_each_meta_seed_draws_its_own_recorded_split():
    glyph = SUITES["glyph"]
    every = set(glyph["meta_train"] + glyph["meta_test"])
    for seed in range(10):
        split = ratio.split_tasks(glyph, seed)
        assert split == ratio.split_tasks(glyph, seed)  # seeded: the same split again
        parts = [set(split[k]) for k in ("meta_train", "validation", "meta_test")]
        assert set.union(*parts) == every and sum(map(len, parts)) == len(every)  # disjoint, complete
        assert len(split["meta_test"]) == 3 and len(split["validation"]) == 2 and len(split["meta_train"]) >= 6
        assert "builtin:fashion-mnist" in split["meta_train"]
    assert len({tuple(ratio.split_tasks(glyph, s)["meta_test"]) for s in range(10)}) == 10
    # 11 drawable tasks, 3 a meta-seed, in rotation: 4 meta-seeds draw every one as a meta-test task
    assert len({t for s in range(4) for t in ratio.split_tasks(glyph, s)["meta_test"]}) == 11


def test_the_ratio_preset_answers_the_issue():
    preset = RATIO_PRESETS["ratio"]
    assert preset["steps"] / preset["reset_period"] >= 100
    assert len(preset["meta_seeds"]) >= 10 and preset["finetune_seeds_per_meta_seed"] >= 2
    assert {"cts", "reptile", "mtl"} <= set(preset["algorithms"])
    assert {"fomaml", "fomaml-cts", "leap"} <= set(preset["optional_algorithms"])
    assert set(preset["algorithms"] + preset["optional_algorithms"]) <= set(preset["rate_grid"])
    # on glyph a claim averages over >= 8 distinct unseen tasks across meta-seeds; colour draws only its 3
    # many-shot tasks (>= 100 training images per class, test_the_colour_meta_test_tasks_are_many_shot)
    glyph_tests = {t for m in preset["meta_seeds"] for t in ratio.split_tasks(SUITES["glyph"], m)["meta_test"]}
    assert len(glyph_tests) >= 8
    colour = SUITES["colour"]
    drawn = [tuple(ratio.split_tasks(colour, m)["meta_test"]) for m in preset["meta_seeds"]]
    assert {t for d in drawn for t in d} == set(colour["meta_test_pool"]) and len(set(drawn)) == 3
    full = build_config("ratio", "glyph", [], optional_algorithms=True)
    assert full.algorithms[0] == "cts" and "leap" in full.algorithms and full.baselines[-1] == "scratch"
    assert build_config("ratio", "glyph", []).baselines == ("reptile", "mtl", "scratch")


def test_the_committed_ratio_records_are_reused_by_this_code():
    # a change to anything a meta-seed computes changes the fingerprint, and the committed records would be redone
    for suite in ("glyph", "colour"):
        names = {p.name.split("-")[-1] for p in (ROOT / "benchmarks/recorded/study-ratio" / suite).glob("meta_seed_*")}
        assert names == {ratio.fingerprint(build_config("ratio", suite, [])) + ".json"}


def test_the_summary_renders_the_recorded_results_and_refuses_other_files(tmp_path, capsys, monkeypatch):
    from benchmarks.study import summary

    monkeypatch.chdir(ROOT)
    path = Path("benchmarks/recorded/study-ratio/glyph/results.json")
    result = json.loads(path.read_text())
    assert summary.main([str(path)]) == 0
    out = capsys.readouterr().out
    c = result["claims"]["cts_beats_scratch_full"]
    assert f"scratch {c['diff']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}] ({c['verdict']}, " in out
    assert f"over {result['progress']['meta_seeds_done']} meta-seeds" in out
    assert "`benchmarks/recorded/study-ratio/glyph/`" in out  # where the records are, as the command named it
    (tmp_path / "other.json").write_text(json.dumps({"protocol": "staged"}))
    assert summary.main([str(tmp_path / "other.json")]) == 2 and summary.main([]) == 2
    assert "not a ratio study's results" in capsys.readouterr().err


def test_a_changed_finetuning_default_changes_the_fingerprint(monkeypatch):
    import ctinit.finetune
    from ctinit.finetune import FinetuneConfig

    from benchmarks.study import runs

    config = build_config("ratio", "glyph", [])
    before = ratio.fingerprint(config)
    assert runs.changed_settings() == {} and runs.current_settings() == runs.RECORDED_SETTINGS

    @dataclasses.dataclass
    class Changed(FinetuneConfig):
        gamma: float = 0.5

    monkeypatch.setattr(ctinit.finetune, "FinetuneConfig", Changed)
    assert runs.changed_settings()["finetune"]["gamma"] == 0.5
    assert ratio.fingerprint(config) != before


def test_a_tiny_ratio_study_chooses_inside_each_meta_seed_writes_partial_results_and_resumes(
        tmp_path, recorded_specs, monkeypatch):
    sets = ["steps=2", "reset_period=1", "meta_seeds=[0, 1]", "finetune_seeds_per_meta_seed=2",
            "selection_finetune_steps=1", "finetune_steps=1", "limited_per_class=2", "limited_finetune_steps=1",
            'rate_grid={"cts": [0.1, 1.0], "reptile": [0.5, 1.0], "mtl": [0.1, 0.3]}']
    config, _ = cli.config_from_argv(["--preset", "ratio", "--out", str(tmp_path), "--image-size", "16",
                                      *[f"--set={s}" for s in sets]])
    config = dataclasses.replace(config, base={**config.base, "log_every": 1000})
    written = []
    original = cli.write_results

    def recording(out, result):
        written.append(json.loads((json.dumps(result))))
        return original(out, result)

    monkeypatch.setattr(cli, "write_results", recording)
    result = json.loads(json.dumps(cli.run(config, echo=False)))
    # partial after the first meta-seed (with its counts), complete after the second
    assert [r["partial"] for r in written] == [True, False]
    assert written[0]["progress"]["meta_seeds_done"] == 1 and written[0]["progress"]["meta_seeds_planned"] == 2
    assert written[0]["algorithms"]["cts"]["meta_seeds"] == 1
    assert "PARTIAL" in report.markdown(written[0]) and (tmp_path / "beta.png").is_file()
    splits = {int(m): s for m, s in result["config"]["splits"].items()}
    assert splits == {m: ratio.split_tasks(SUITES["glyph"], m) for m in (0, 1)}
    assert result["config"]["meta_test_tasks"] == sorted({t for s in splits.values() for t in s["meta_test"]})
    # every run meta-trained on its meta-seed's meta-train tasks only: never a validation or meta-test task
    for record in (tmp_path / "runs").glob("*/study.json"):
        run = json.loads(record.read_text())["config"]
        assert run["tasks"] == splits[run["seed"]]["meta_train"]
    for a in ("cts", "reptile", "mtl"):
        for m in ("0", "1"):
            chosen = result["selection"][a][m]
            assert chosen["chosen_lr"] == max(chosen["scores"], key=lambda s: (s[1], -s[0]))[0]
        assert result["main"][a]["chosen_lr"] == {m: result["selection"][a][m]["chosen_lr"] for m in ("0", "1")}
    # per-meta-seed means over 2 fine-tuning seeds x 3 tasks, then over meta-seeds; per-task numbers too
    runs = result["main"]["cts"]["runs_full"]
    assert len(runs) == 2 * 3 * 2 and result["main"]["cts"]["full"]["meta_seeds"] == 2
    assert set(result["main"]["cts"]["per_task"]) == {t.split(":")[-1] for t in result["config"]["meta_test_tasks"]}
    assert all("verdict_holm" in c for c in result["claims"].values())
    assert {"cts_beats_reptile_full", "cts_beats_scratch_limited", "cts_same_as_mtl_full",
            "cts_ahead_of_every_baseline_full"} <= set(result["claims"])
    assert result["beta_curves_on_meta_test"]["note"] == "measured on meta-test tasks, not used for selection"
    # no local path is recorded (the machine's description is free text: a CPU's name may hold a slash)
    assert "/" not in json.dumps({k: v for k, v in result["config"].items() if k != "made"})
    made = result["config"]["made"]
    assert set(made) == {"0", "1"} and all(m["wall_seconds"] >= 0 and m["cpu_seconds"] >= 0 for m in made.values())
    assert made["0"]["machine"]["torch"] == torch.__version__
    # a rerun reuses every meta-training run and fine-tuning result: no task is loaded again
    recorded_specs.clear()
    again = json.loads(json.dumps(cli.run(config, echo=False)))
    assert recorded_specs == [] and again["claims"] == result["claims"]
    lines = (tmp_path / "finetune.jsonl").read_text().splitlines()
    assert len(lines) == len({json.loads(line)["key"] for line in lines})  # one line per finished result
    # a fresh output folder with the finished meta-seeds' records (what the repository keeps): nothing is redone
    recorded_specs.clear()
    fresh = dataclasses.replace(config, out=tmp_path / "fresh", records=tmp_path / "meta_seeds")
    resumed = json.loads(json.dumps(cli.run(fresh, echo=False)))
    assert recorded_specs == [] and not (tmp_path / "fresh" / "runs").exists()
    assert resumed["claims"] == result["claims"] and resumed["progress"]["meta_seeds_reused"] == 2
    record = json.loads(ratio.record_path(fresh, 1).read_text())
    assert "/" not in json.dumps(record["choices"]) and record["split"] == splits[1]
    assert record["made"] == result["config"]["made"]["1"] and resumed["config"]["made"] == result["config"]["made"]
    # a record made under another config is not reused; more meta-seeds (or another margin) keep the records
    other = dataclasses.replace(fresh, preset={**fresh.preset, "finetune_steps": 2})
    assert ratio.load_record(other, 1, splits[1]) is None and ratio.load_record(fresh, 1, splits[1]) == record
    more = dataclasses.replace(fresh, preset={**fresh.preset, "meta_seeds": [0, 1, 2], "equivalence_margin": 0.03})
    assert ratio.load_record(more, 1, splits[1]) == record
    # finished meta-training runs made with other execution choices are reused (they change rounding only)
    from benchmarks.study.runs import training_config
    assert training_config({"steps": 2, "channels_last": True, "compile": "off"}) == \
        training_config({"steps": 2, "channels_last": "auto", "compile": "auto"})
