"""The zoo's weights metadata is true (measured again from the shipped files), results carry the schema `ctinit list
--json` promises, multi-task counterparts match their CTS entry, and cards' model-index parses with huggingface_hub."""
import json
from pathlib import Path

import pytest
import yaml

import ctinit
from ctinit.hubio.cards import card_license
from ctinit_hub import zoo_metadata
from zoo_fixtures import NAME, built_zoo, make_run, tiny_zoo, zoo_script  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parent.parent
SHIPPED = json.loads((Path(ctinit.zoo.__file__).parent / "registry.json").read_text())


@pytest.mark.parametrize("entry", SHIPPED, ids=[e["name"] for e in SHIPPED])
def test_shipped_metadata_is_what_the_files_measure(entry):
    assert zoo_metadata.mismatches(entry) == []
    assert entry["flops_counted"] == zoo_metadata.FLOPS_COUNTED and entry["gflops"] == zoo_metadata.gflops(entry["flops"])
    assert entry["license"] == card_license(None, entry["tasks"])[0]
    assert (REPO / entry["recipe"]).is_file() and entry["seconds"] > 0 and entry["machine"]
    assert entry["training_data"].startswith(f"{len(entry['tasks'])} tasks") or ";" in entry["training_data"]


def test_the_check_fails_on_a_planted_wrong_parameter_count(tiny_zoo):
    entry = ctinit.zoo.get(NAME)
    assert zoo_metadata.mismatches(entry) == []
    planted = {**entry, "params": entry["params"] + 1}
    [problem] = zoo_metadata.mismatches(planted)
    assert "params" in problem and str(entry["params"] + 1) in problem and str(entry["params"]) in problem
    assert zoo_metadata.mismatches({**entry, "flops": entry["flops"] * 2}) and \
        zoo_metadata.mismatches({**entry, "size": entry["size"] - 1})


def test_flops_are_counted_on_the_entry_input_size(tiny_zoo):
    entry = ctinit.zoo.get(NAME)
    measured = zoo_metadata.measure(NAME)
    # ConvNet-4-32: 4 blocks of 3x3 convolutions (32 channels), each halving the side: 2 * MACs of every conv
    side, channels, flops = entry["image_size"], entry["channels"], 0
    for block in range(4):
        flops += 2 * side * side * 32 * (channels if block == 0 else 32) * 9
        side //= 2
    assert measured["flops"] == flops and measured["params"] == sum(
        p.numel() for p in ctinit.build_backbone("convnet4-32", entry["image_size"]).parameters())


@pytest.mark.parametrize("entry", SHIPPED, ids=[e["name"] for e in SHIPPED])
def test_shipped_results_carry_opponent_budget_and_interval(entry):
    names = {e["name"] for e in SHIPPED}
    for r in entry["results"]:
        assert r["against"] == "scratch" or r["against"] in names
        if r["budget"].startswith("converged"):  # fine-tuned to convergence: how many runs stopped early is said
            assert r["steps"] is None and set(r["stopped_early"]) == set(r["steps_run"]) == {"init", "against"}
            assert set(r["shown_converged"]) == {"init", "against"}
        else:
            assert r["budget"] == f"short: {r['steps']} steps"
        assert r["ci95"] == r["difference"]["ci95"]
        lo, hi = r["ci95"]
        assert lo <= r["difference"]["mean"] <= hi and 0 <= r["against_accuracy"] <= 1


def test_counterparts_match_their_cts_entry_and_link_both_ways():
    by_name = {e["name"]: e for e in SHIPPED}
    for entry in SHIPPED:
        if entry.get("counterpart"):
            mtl = by_name[entry["counterpart"]]
            assert entry["algorithm"] == "cts" and mtl["algorithm"] == "mtl" and mtl["counterpart_of"] == entry["name"]
            for key in ("backbone", "image_size", "channels", "tasks", "params"):
                assert mtl[key] == entry[key], key
            cts_recipe, mtl_recipe = (yaml.safe_load((REPO / e["recipe"]).read_text()) for e in (entry, mtl))
            assert mtl_recipe.pop("algorithm") == "mtl" and cts_recipe.pop("algorithm") == "cts"
            cts_recipe["meta_optimizer"] = mtl_recipe["meta_optimizer"] = None  # its rate is chosen on its own
            assert mtl_recipe == cts_recipe
            assert mtl["meta_lr_chosen"]


def test_every_cts_entry_is_compared_with_its_counterpart_and_scratch_at_both_budgets():
    """The zoo's promise (issue 30): a CTS entry ships with its multi-task counterpart, and for some evaluation both
    paired differences exist at the short budget and fine-tuned to convergence, with every scratch run there shown
    converged (stopped early, or flat over its last quarter)."""
    for entry in (e for e in SHIPPED if e["algorithm"] == "cts"):
        assert entry.get("counterpart"), entry["name"]
        by_eval: dict = {}
        for r in entry["results"]:
            by_eval.setdefault(r["name"], set()).add((r["against"], r["budget"].split(":")[0]))
            if r["against"] == "scratch" and r["budget"].startswith("converged"):
                shown, runs = r["shown_converged"]["against"].split(" of ")
                assert shown == runs, (entry["name"], r["name"])
        wanted = {(who, budget) for who in ("scratch", entry["counterpart"]) for budget in ("short", "converged")}
        assert any(wanted <= got for got in by_eval.values()), entry["name"]


def test_counterpart_recipes_differ_from_their_cts_recipe_only_in_algorithm_and_rate():
    paths = sorted((REPO / "training" / "recipes" / "zoo").glob("*-mtl.yaml"))
    assert {p.name.replace("-mtl", "") for p in paths} == {p.name for p in (REPO / "training" / "recipes" / "zoo").glob(
        "*.yaml") if not p.stem.endswith("-mtl")}  # every CTS recipe has its counterpart's
    for mtl_path in paths:
        mtl = yaml.safe_load(mtl_path.read_text())
        cts = yaml.safe_load(mtl_path.with_name(mtl_path.name.replace("-mtl", "")).read_text())
        assert (mtl.pop("algorithm"), cts.pop("algorithm")) == ("mtl", "cts"), mtl_path.name
        assert mtl.pop("meta_optimizer")["name"] == cts.pop("meta_optimizer")["name"]  # the rate: chosen for MTL
        assert mtl == cts, mtl_path.name


@pytest.mark.parametrize("entry", SHIPPED, ids=[e["name"] for e in SHIPPED])
def test_cards_model_index_parses_with_huggingface_hub(entry):
    from huggingface_hub import ModelCard, metadata_load
    from huggingface_hub.repocard_data import model_index_to_eval_results

    readme = Path(ctinit.zoo.folder(entry["name"])) / "README.md"
    card = ModelCard.load(readme)
    assert f"| parameters | {entry['params']:,} |" in readme.read_text()
    if not entry["results"]:  # nothing measured: no model-index, and the card says so
        assert "model-index" not in metadata_load(readme) and "Not measured yet" in card.text
        return
    name, results = model_index_to_eval_results(metadata_load(readme)["model-index"])
    assert name == entry["name"] and len(card.data.eval_results) == len(results)
    expected = {(r["name"], round(r["init_accuracy"], 4)) for r in entry["results"]}
    assert {(r.dataset_name, r.metric_value) for r in results} == expected
    assert all(r.metric_type == "accuracy" and r.task_type == "image-classification" for r in results)


def test_add_links_a_counterpart_and_results_pair_against_it(tiny_zoo, tmp_path, capsys):
    script = zoo_script()
    run = make_run(tmp_path / "mtl-run", seed=1)
    assert script.main(["add", str(run), f"{NAME}-mtl", "--recipe", "training/recipes/tiny.yaml", "--command", "x",
                        "--seconds", "3", "--machine", "a test", "--counterpart-of", NAME,
                        "--meta-lr-chosen", "a test's choice"]) == 0
    capsys.readouterr()
    cts, mtl = ctinit.zoo.get(NAME), ctinit.zoo.get(f"{NAME}-mtl")
    assert cts["counterpart"] == f"{NAME}-mtl" and mtl["counterpart_of"] == NAME and mtl["meta_lr_chosen"]
    assert zoo_metadata.mismatches(mtl) == [] and mtl["params"] == cts["params"]
    seeds = {"0": 0.9, "1": 0.8, "2": 0.85}
    pick = {"spec": "npz:bars.npz", "seeds": [0, 1, 2], "steps": 5, "ranking": [
        {"init": f"zoo:{NAME}", "baseline": f"scratch:zoo:{NAME}", "values": seeds},
        {"init": f"zoo:{NAME}-mtl", "baseline": f"scratch:zoo:{NAME}", "values": {"0": 0.8, "1": 0.8, "2": 0.8}},
        {"init": f"scratch:zoo:{NAME}", "baseline": None, "values": {"0": 0.5, "1": 0.5, "2": 0.5}}]}
    (tmp_path / "pick.json").write_text(json.dumps(pick))
    assert script.main(["results", NAME, str(tmp_path / "pick.json"), "--name", "bars"]) == 0
    assert script.main(["results", NAME, str(tmp_path / "pick.json"), "--name", "bars",
                        "--against", f"{NAME}-mtl"]) == 0
    scratch, counterpart = ctinit.zoo.get(NAME)["results"]
    assert (scratch["against"], counterpart["against"]) == ("scratch", f"{NAME}-mtl")
    assert script.main(["results", NAME, str(tmp_path / "pick.json"), "--name", "bars"]) == 0  # measured again
    assert [r["against"] for r in ctinit.zoo.get(NAME)["results"]] == ["scratch", f"{NAME}-mtl"]  # in its place
    assert counterpart["difference"]["mean"] == pytest.approx(0.05, abs=1e-9)
    assert counterpart["against_accuracy"] == pytest.approx(0.8)
    assert scratch["difference"]["mean"] == pytest.approx(0.35) and counterpart["budget"] == "short: 5 steps"
    card = (tiny_zoo / "weights" / NAME / "README.md").read_text()
    assert card.index(f"**It does not beat `zoo:{NAME}-mtl` on bars, 5 fine-tuning steps**") < card.index("| evaluation |")
    # and the card's first words say it, above everything else
    verdict = card.index("**Meta-learning has not been shown better than ordinary pretraining on the same tasks**")
    assert verdict < card.index("## Weights") and f"`zoo:{NAME}-mtl`" in card[verdict:card.index("## Weights")]


def test_a_result_fine_tuned_to_convergence_says_so_and_how_many_runs_stopped_early(tiny_zoo, tmp_path, capsys):
    script = zoo_script()
    label, scratch = f"zoo:{NAME}", f"scratch:zoo:{NAME}"
    runs = [{"init": init, "task": "npz:bars.npz", "seed": s, "test_accuracy": acc + 0.01 * s, "steps": steps + s,
             "stop_reason": reason}
            for init, acc, steps, reason in ((label, 0.9, 120, "early_stop"), (scratch, 0.7, 300, "early_stop"))
            for s in range(3)]
    # two scratch runs ran their maximum: one flat over its last quarter (shown converged), one still rising (not)
    runs[-2].update(stop_reason="steps", curve=[[100, 0.5], [225, 0.69], [301, 0.695]])
    runs[-1].update(stop_reason="steps", curve=[[100, 0.5], [226, 0.65], [302, 0.70]])
    evaluation = {"inits": [{"label": label, "scratch": False}, {"label": scratch, "scratch": True}],
                  "tasks": [{"spec": "npz:bars.npz"}], "seeds": [0, 1, 2], "score": "test", "runs": runs,
                  "finetune": {"steps": 1000, "epochs": 100.0, "early_stop": 10}, "max_train_per_class": 20}
    (tmp_path / "results.json").write_text(json.dumps(evaluation))
    assert script.main(["results", NAME, str(tmp_path / "results.json"), "--name", "bars"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["budget"].startswith("converged: early stopping on validation (patience 10 evaluations, at most 100")
    assert record["steps_run"] == {"init": [120, 122], "against": [300, 302]}
    assert record["stopped_early"] == {"init": "3 of 3", "against": "1 of 3"}
    assert record["shown_converged"] == {"init": "3 of 3", "against": "2 of 3"}
    assert record["difference"]["mean"] == pytest.approx(0.2)
    card = (tiny_zoo / "weights" / NAME / "README.md").read_text()
    assert "to convergence: 120-122 (opponent stopped early in 1 of 3 runs, shown converged in 2 of 3)" in card


def test_the_card_lead_says_in_how_many_comparisons_meta_learning_beat_its_counterpart():
    from ctinit.stats import paired_difference
    from ctinit_hub.zoo import counterpart_verdict

    def result(budget, mine, theirs):
        diff = paired_difference({(0, s): m for s, m in enumerate(mine)}, {(0, s): t for s, t in enumerate(theirs)})
        return {"name": "bars", "against": "x-mtl", "budget": budget, "steps": 5, "verdict": diff["verdict"],
                "difference": {k: diff[k] for k in ("mean", "ci95", "n")}}

    ahead, level = ([0.9, 0.91, 0.92], [0.8, 0.8, 0.81]), ([0.9, 0.8, 0.85], [0.85, 0.84, 0.86])
    leads = {}
    for case, rows in {"all": [ahead, ahead], "some": [ahead, level], "none": [level, level]}.items():
        entry = {"counterpart": "x-mtl", "results": [result(b, *r) for b, r in zip(("short: 5 steps", "converged"), rows)]}
        leads[case] = counterpart_verdict(entry).split("**")[1]
    assert leads == {"all": "Meta-learning beat ordinary pretraining here",
                     "some": "Meta-learning beat ordinary pretraining in 1 of these 2 comparisons, not in all",
                     "none": "Meta-learning has not been shown better than ordinary pretraining on the same tasks"}
