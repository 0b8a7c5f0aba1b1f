"""`ctinit list` fits a 100-column terminal (one line per zoo entry with its headline: absolute accuracies beside the
gain), `ctinit list NAME` and `--wide` give everything, and `--json` gives each entry's metadata and results."""
import json

import ctinit
from ctinit.catalog import WIDTH
from ctinit.cli import main as cli_main
from zoo_fixtures import NAME, built_zoo, tiny_zoo  # noqa: F401 - fixtures

SHIPPED = ctinit.zoo.entries()


def test_list_fits_100_columns_with_one_line_per_entry(capsys):
    assert cli_main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert WIDTH == 100 and max(len(line) for line in lines) <= 100, max(lines, key=len)
    for entry in SHIPPED:
        [line] = [x for x in lines if x.startswith(f"zoo:{entry['name']} ")]
        first = next((r for r in entry["results"] if r["against"] == "scratch"), None)
        if first is None:  # an entry not measured yet (a counterpart just shipped)
            assert line.endswith("not measured")
            continue
        assert f"{first['init_accuracy']:.3f} vs {first['against_accuracy']:.3f}: " \
               f"{first['difference']['mean'] * 100:+.1f}" in line
        assert entry["algorithm"] in line.split()


def test_list_name_and_wide_show_every_result(capsys):
    entry = next(e for e in SHIPPED if e["results"])
    assert cli_main(["list", f"zoo:{entry['name']}"]) == 0
    text = capsys.readouterr().out
    assert f"parameters: {entry['params']:,}" in text and f"GFLOPs per image: {entry['gflops']}" in text
    assert f"licence: {entry['license']}" in text and entry["machine"].split(",")[0] in text
    for r in entry["results"]:
        assert f"{r['init_accuracy']:.3f} vs {r['against_accuracy']:.3f}" in text
    assert cli_main(["list", "--wide"]) == 0
    wide = capsys.readouterr().out
    assert all(f"{r['difference']['mean'] * 100:+.1f} [" in wide for e in SHIPPED for r in e["results"])


def test_list_an_unknown_name_is_one_line(capsys):
    assert cli_main(["list", "glyph-convnet4-3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean zoo:glyph-convnet4-32" in err[0]


def test_list_json_gives_metadata_and_results_schema(capsys):
    assert cli_main(["list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["zoo"]}
    assert set(rows) == {e["name"] for e in SHIPPED}
    for entry in SHIPPED:
        row = rows[entry["name"]]
        for key in ("algorithm", "params", "gflops", "size", "license", "results"):
            assert row[key] == entry[key] and row[key] is not None, key
        assert row["counterpart"] == entry.get("counterpart")
        assert all({"against", "budget", "ci95"} <= set(r) for r in row["results"])
        assert row["headline"] == next((r for r in entry["results"] if r["against"] == "scratch"), None)


def test_list_of_an_entry_not_measured_says_so(tiny_zoo, capsys):
    assert cli_main(["list"]) == 0
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith(f"zoo:{NAME} ")]
    assert line.endswith("not measured") and len(line) <= 100
    assert cli_main(["list", NAME, "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["name"] == NAME and row["results"] == [] and row["headline"] is None and row["params"] > 0


def test_long_evaluation_names_are_clipped_not_wrapped(tiny_zoo, capsys):
    entry = ctinit.zoo.get(NAME)
    entry["results"] = [{"name": "x" * 300, "against": "scratch", "budget": "short: 200 steps", "steps": 200,
                         "init_accuracy": 0.9, "against_accuracy": 0.5, "verdict": "better",
                         "difference": {"mean": 0.4, "ci95": [0.3, 0.5], "n": 3}, "ci95": [0.3, 0.5]}]
    ctinit.zoo.write_entries([entry])
    assert cli_main(["list"]) == 0
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith(f"zoo:{NAME} ")]
    assert len(line) == WIDTH and line.endswith("...") and "0.900 vs 0.500: +40.0 [+30.0, +50.0]" in line
