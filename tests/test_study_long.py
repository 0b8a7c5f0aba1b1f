"""The long-trajectory preset of the study (issue 29) on a tiny version of itself (fake 16 px tasks, a few steps):
the tuning choice reads no meta-test task and is written before any claim run, a winning grid end grows the grid,
every claim of the issue is in results.json with Holm verdicts, the figures render from results.json, and a run
resumes from its per-run records on a fresh machine, losing at most the run that was in progress."""
import dataclasses
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the study runs from a checkout (python -m benchmarks.study), not from an install
    sys.path.insert(0, str(ROOT))

from benchmarks.study import cli, long as study_long, long_report, summary  # noqa: E402
from benchmarks.study.clock import Clock  # noqa: E402
from benchmarks.study.config import LONG_PRESETS, SUITES, StudyError, build_config  # noqa: E402
from benchmarks.study.ratio import split_tasks  # noqa: E402
from benchmarks.study.runs import Workspace  # noqa: E402
from test_study import fake_task, recorded_specs  # noqa: E402,F401 (the fixture)

TINY = ["steps=4", "reset_periods=[1, 4]", "meta_seeds=[0, 1]", "tuning_meta_seed=7", "finetune_seeds_per_meta_seed=2",
        'rate_grid={"cts": [0.1, 0.316], "reptile": [0.316, 1.0], "mtl": [0.1, 0.316]}', "max_extensions=1",
        "selection_finetune_steps=1", "validation_every=2", "validation_steps=1",
        'finetune_budgets={"short": {"steps": 1, "per_class": null}, '
        '"long_2": {"steps": 4, "per_class": 2, "curve": true, "algorithms": ["cts", "mtl", "scratch"]}}']


def tiny_config(tmp_path, records=None):
    config, _ = cli.config_from_argv(["--preset", "long", "--out", str(tmp_path), "--image-size", "16",
                                      *(["--records", str(records)] if records else []),
                                      *[f"--set={s}" for s in TINY]])
    return dataclasses.replace(config, base={**config.base, "log_every": 1000})


def test_the_long_preset_answers_the_issue():
    p = LONG_PRESETS["long"]
    ks = p["reset_periods"]
    assert len(ks) >= 3 and ks[-1] / ks[0] >= 25 and p["steps"] >= 5000 and p["steps"] >= ks[-1]
    assert len(p["meta_seeds"]) >= 6 and p["finetune_seeds_per_meta_seed"] >= 2
    assert p["tuning_meta_seed"] not in p["meta_seeds"]
    assert max(p["rate_grid"]["reptile"]) > 1.0
    assert len(p["finetune_budgets"]) == 2 or len(p["finetune_budgets"]) == 3
    long_budgets = [b for b in p["finetune_budgets"].values() if b.get("curve")]
    assert long_budgets and all(b["per_class"] == 20 for b in long_budgets)
    assert study_long.next_rate(0.316, -1) == 0.1 and study_long.next_rate(3.16, 1) == 10.0
    assert study_long.next_rate(1.0, 1) == 3.16 and study_long.next_rate(0.0316, -1) == 0.01


def test_bad_long_options_are_one_line(tmp_path):
    for sets, words in ((["meta_seeds=[100, 1]"], "tuning_meta_seed"), (["reset_periods=[500, 20]"], "increasing"),
                        (["reset_periods=[20, 9000]"], "above steps")):
        with pytest.raises(StudyError, match=words):
            build_config("long", "glyph", sets, out=str(tmp_path))
    with pytest.raises(StudyError, match="FOMAML-CTS and Leap"):
        build_config("long", "glyph", [], out=str(tmp_path), optional_algorithms=True)
    with pytest.raises(StudyError, match="applies to the long preset"):
        cli.config_from_argv(["--preset", "ratio", "--from-records", "--out", str(tmp_path)])
    # nothing recorded yet: one line that says to run the study first, exit 2, nothing written
    assert cli.main(["--preset", "long", "--from-records", "--out", str(tmp_path / "o"),
                     "--records", str(tmp_path / "none")]) == 2
    assert not (tmp_path / "o" / "results.json").exists()


def test_the_tuning_choice_reads_no_meta_test_task_and_grows_a_winning_end(tmp_path, recorded_specs):
    config = tiny_config(tmp_path)
    study = study_long.LongStudy(config, Workspace(config.out, config.base), Clock())
    record = study.tuning()
    split = split_tasks(SUITES["glyph"], 7)
    assert record["split"] == split and recorded_specs
    assert not set(recorded_specs) & set(split["meta_test"])  # neither meta-training nor scoring read one
    assert set(recorded_specs) == set(split["meta_train"]) | set(split["validation"])
    for a, by_k in record["choices"].items():
        assert set(by_k) == ({"1", "4"} if a in ("cts", "reptile") else {"1"})
        for c in by_k.values():
            scores = dict((lr, s) for lr, s in c["scores"])
            assert c["chosen_lr"] == max(c["grid"], key=lambda lr: (scores[lr], -lr))
            # a 2-rate grid always wins at an end: one extension (max_extensions=1) adds the next half-decade
            assert c["extensions"] == 1 and len(c["grid"]) == 3
            assert c["at_edge"] == (c["chosen_lr"] in (min(c["grid"]), max(c["grid"])))
    assert study.records.tuning_path().is_file()
    assert all(r["role"] == "tuning" for r in study.runs.values())


def test_a_tiny_long_study_records_every_run_claims_everything_and_resumes(tmp_path, recorded_specs, monkeypatch,
                                                                           capsys):
    config = tiny_config(tmp_path / "a", records=tmp_path / "records")
    written = []
    original = cli.write_results

    def recording(out, result):
        written.append(json.loads(json.dumps(result)))
        return original(out, result)

    monkeypatch.setattr(cli, "write_results", recording)
    result = json.loads(json.dumps(cli.run(config, echo=False)))
    assert [r["partial"] for r in written] == [True, True, False]  # after tuning, after each claim meta-seed
    assert not result["partial"] and result["config"]["reset_periods"] == [1, 4]
    assert set(result["config"]["finetune_budgets"]) == {"short", "long_2"}
    assert set(result["main"]) == {"cts@K1", "cts@K4", "reptile@K1", "reptile@K4", "mtl", "scratch"}
    claims = result["claims"]
    assert {"cts_beats_reptile_K1_short", "cts_beats_reptile_K4_short", "cts_minus_reptile_trend_in_K_short",
            "cts_K4_beats_cts_K1_short", "cts_K1_beats_mtl_long_2", "cts_K4_beats_mtl_short",
            "cts_reaches_target_sooner_than_reptile_K4", "cts_same_as_reptile_K4_short", "cts_K4_beats_scratch_long_2",
            "mtl_beats_scratch_short"} <= set(claims)
    assert all(c["verdict_holm"] in ("holds", "fails", "inconclusive", "equivalent") for c in claims.values())
    trend = claims["cts_minus_reptile_trend_in_K_short"]
    assert trend["n_meta_seeds"] == 2 and len(trend["ci95"]) == 2
    assert set(result["selection"]["edge_share"]) == {"cts", "reptile", "mtl"}
    assert all(0 <= v <= 1 for v in result["selection"]["edge_share"].values())
    assert "long_2" in result["main"]["cts@K4"] and "long_2" not in result["main"]["reptile@K4"]
    flat = result["finetune_convergence"]["long_2"]["scratch"]
    assert isinstance(flat["flat"], bool) and flat["last_quarter_change"]["n_meta_seeds"] == 2
    assert result["meta_validation"]["cts@K4"]["band"]["steps"] == [2, 4]
    assert (tmp_path / "a" / "accuracy_vs_k.png").is_file() and (tmp_path / "a" / "meta_validation.png").is_file()
    # the summary command renders the table, the claims and the two figures from a copied results.json
    folder = tmp_path / "copy"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(result))
    capsys.readouterr()
    assert summary.main([str(folder / "results.json")]) == 0
    out = capsys.readouterr().out
    assert "cts_minus_reptile_trend_in_K_short" in out and "edge share" in out
    assert {p.name for p in folder.glob("*.png")} == set(long_report.FIGURES)
    # every claim run meta-trained on its meta-seed's meta-train tasks with the tuning record's rate
    tuning = json.loads(next((tmp_path / "records").glob("tuning-*.json")).read_text())
    claim_records = [json.loads(p.read_text()) for p in (tmp_path / "records").glob("run-claim-*.json")]
    assert len(claim_records) == 2 * 6 and all("/" not in json.dumps(r["split"]) for r in claim_records)
    for r in claim_records:
        if r["algorithm"] != "scratch":
            assert r["lr"] == tuning["choices"][r["algorithm"]][str(r["K"])]["chosen_lr"]
            assert r["made"]["finished_utc"] >= tuning["written_utc"]
    # a fresh machine with the records only: nothing is loaded again, the same claims
    recorded_specs.clear()
    fresh = json.loads(json.dumps(cli.run(tiny_config(tmp_path / "b", records=tmp_path / "records"), echo=False)))
    assert recorded_specs == [] and fresh["claims"] == result["claims"]
    # --from-records: the same result from the records alone, no run made; a meta-seed missing a run is left out
    recorded_specs.clear()
    reported = json.loads(json.dumps(cli.run(dataclasses.replace(tiny_config(tmp_path / "r", records=tmp_path /
                                                                             "records"), from_records=True),
                                             echo=False)))
    assert recorded_specs == [] and reported["claims"] == result["claims"] and not reported["partial"]
    assert (tmp_path / "r" / "results.json").is_file() and (tmp_path / "r" / "accuracy_vs_k.png").is_file()
    held_back = next((tmp_path / "records").glob("run-claim-mtl-*-m1-*.json"))
    held_back.rename(held_back.with_suffix(".away"))
    one = cli.run(dataclasses.replace(tiny_config(tmp_path / "r1", records=tmp_path / "records"), from_records=True),
                  echo=False)
    assert one["partial"] and one["progress"]["meta_seeds_done"] == 1 and recorded_specs == []
    held_back.with_suffix(".away").rename(held_back)
    # one run's record lost (the run in progress when a machine went away): only that run is redone
    lost = next((tmp_path / "records").glob("run-claim-reptile-K4-*-m1-*.json"))
    lost.unlink()
    again = json.loads(json.dumps(cli.run(tiny_config(tmp_path / "c", records=tmp_path / "records"), echo=False)))
    assert again["progress"]["runs_recorded"] == 1 and lost.is_file()
    assert again["main"]["cts@K4"] == result["main"]["cts@K4"]


def hold(folder: Path):
    """Another process holding a run's claim, as a second copy of the study command would while making it."""
    import subprocess

    code = ("import sys; from ctinit.atomic import FolderLock; FolderLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_two_processes_share_a_study_run_by_run(tmp_path, recorded_specs, monkeypatch):
    """A run another process holds is skipped, every other run is made meanwhile, and it is taken up again once
    its claim is free (its maker died: the OS released the lock) - in the tuning and among the claim runs."""
    config = tiny_config(tmp_path / "a", records=tmp_path / "records")
    claims = tmp_path / "a" / "claims"
    holders = [hold(claims / "tuning-cts-K1-lr0.1-m7"), hold(claims / "claim-scratch-m0")]
    records = tmp_path / "records"
    waits, published = [], []

    def wait(self, held):
        made = {p.name.split("-", 1)[1].rsplit("-", 1)[0] for p in records.glob("run-*.json")}
        waits.append((held, made))
        holders[len(waits) - 1].kill()
        holders[len(waits) - 1].wait()

    monkeypatch.setattr(study_long.LongStudy, "wait", wait)
    original = cli.write_results
    monkeypatch.setattr(cli, "write_results", lambda out, r: (published.append(r["progress"]["meta_seeds_done"]),
                                                               original(out, r))[1])
    result = cli.run(config, echo=False)
    assert len(waits) == 2 and [held for held, _ in waits] == [1, 1]
    tuning_made, claims_made = waits[0][1], waits[1][1]
    # the first wait came when only the held candidate was missing from the tuning; meanwhile the process made
    # scratch's claim runs (no rate to wait for) but the held one, and no meta-trained claim run had started
    assert "tuning-cts-K1-lr0.1-m7" not in tuning_made and "tuning-cts-K1-lr0.316-m7" in tuning_made
    assert "tuning-mtl-K1-lr0.1-m7" in tuning_made
    assert sorted(n for n in tuning_made if n.startswith("claim")) == ["claim-scratch-m1"]
    # the second when every claim run but the held one was made: meta-seed 1 went on while 0 waited
    assert "claim-scratch-m0" not in claims_made and "claim-scratch-m1" in claims_made
    assert len([n for n in claims_made if n.startswith("claim")]) == 2 * 6 - 1
    assert published == [0, 1, 2] and not result["partial"]
    assert (records / next(records.glob("run-claim-scratch-m0-*.json")).name).is_file()


def test_a_meta_seed_finished_elsewhere_is_published_before_the_next_one_runs(tmp_path, recorded_specs, monkeypatch):
    """With two copies, a meta-seed whose last run the other copy held is published as soon as that run is free
    or recorded, before this copy makes the next meta-seed's runs (not only after a pass over every meta-seed)."""
    config = tiny_config(tmp_path / "a", records=tmp_path / "records")
    holder = hold(tmp_path / "a" / "claims" / "claim-scratch-m0")
    records = tmp_path / "records"
    published, waits = [], []
    original_scratch, original_write = study_long.LongStudy.scratch_run, cli.write_results

    def scratch_run(self, m):
        record = original_scratch(self, m)
        if record is None:  # the other copy lets the run go once this copy has seen it held
            holder.kill()
            holder.wait()
        return record

    def write_results(out, result):
        made = sorted(p.name.split("-", 1)[1].rsplit("-", 1)[0] for p in records.glob("run-claim-*.json"))
        published.append((result["progress"]["meta_seeds_done"], made))
        return original_write(out, result)

    monkeypatch.setattr(study_long.LongStudy, "scratch_run", scratch_run)
    monkeypatch.setattr(study_long.LongStudy, "wait", lambda self, held: waits.append(held))
    monkeypatch.setattr(cli, "write_results", write_results)
    result = cli.run(config, echo=False)
    assert waits == [] and not result["partial"]
    first = next(made for done, made in published if done == 1)
    assert "claim-scratch-m0" in first and not any(n.endswith("-m1") for n in first)
    assert [done for done, _ in published] == [0, 1, 2]
