"""The zoo: names, the sha256 check, zoo: wherever an init is taken, ctinit list, cards, init_from, push-zoo."""
import json
from pathlib import Path

import pytest
import torch

import ctinit
from ctinit.cli import main as cli_main
from ctinit.errors import CheckpointError, ConfigError
from ctinit.tasks import load_task
from helpers import make_npz, weights
from zoo_fixtures import NAME, SIZE, built_zoo, make_run, tiny_zoo, zoo_script  # noqa: F401 - fixtures

INIT = f"zoo:{NAME}"


def one_line_error(capsys, needle):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    return err[0]


@pytest.fixture
def task(tmp_path):
    return f"npz:{make_npz(tmp_path / 'bars.npz', n_per_class=10, size=SIZE)}"


def test_the_shipped_registry_is_a_list_and_every_entry_verifies():
    entries = json.loads((Path(ctinit.zoo.__file__).parent / "registry.json").read_text())
    assert isinstance(entries, list)
    for entry in entries:
        assert set(ctinit.zoo.ENTRY_KEYS) <= set(entry), entry["name"]
        ctinit.zoo.verify(entry)


def test_entry_records_what_made_it(tiny_zoo):
    entry = ctinit.zoo.get(INIT)
    assert set(ctinit.zoo.ENTRY_KEYS) <= set(entry)
    assert (entry["backbone"], entry["image_size"], entry["channels"]) == ("convnet4-32", SIZE, 3)
    assert entry["tasks"] == ["builtin:latin"] and entry["recipe"] == "training/recipes/tiny.yaml"
    assert entry["seconds"] == 12 and entry["machine"] == "a test" and entry["revision"] is None
    weights_file = tiny_zoo / "weights" / NAME / "model.safetensors"
    assert entry["size"] == weights_file.stat().st_size and entry["sha256"] == ctinit.zoo.file_sha256(weights_file)
    assert entry["results"] == [] and entry["hub_id"] == f"ctinit/{NAME}"


def test_unknown_name_is_one_line_with_close_matches(tiny_zoo, task, capsys):
    assert cli_main(["finetune", "--init", "zoo:tiny-convnt", "--data", task, "--steps", "1"]) == 2
    line = one_line_error(capsys, "no such initialization in the zoo")
    assert f"did you mean {INIT}" in line
    with pytest.raises(ConfigError, match="did you mean"):
        ctinit.from_pretrained("zoo:tiny_convnet")


def test_damaged_file_is_one_line(tiny_zoo, task, capsys):
    path = tiny_zoo / "weights" / NAME / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes: only the hash can tell
    path.write_bytes(bytes(data))
    assert cli_main(["finetune", "--init", INIT, "--data", task, "--steps", "1"]) == 2
    assert "reinstall ctinit" in one_line_error(capsys, "model.safetensors is damaged (sha256")
    with pytest.raises(CheckpointError, match="damaged"):
        ctinit.zoo.path(NAME)
    path.write_bytes(bytes(data[:-10]))
    assert cli_main(["evaluate", "--init", INIT, "--data", task, "--out", str(path.parent.parent / "e")]) == 2
    one_line_error(capsys, "is damaged (")


def test_zoo_names_load_everywhere(tiny_zoo, task, tmp_path, capsys):
    from transformers import AutoModel

    shipped = weights(tiny_zoo / "weights" / NAME)
    model = ctinit.from_pretrained(INIT, num_classes=3)
    assert model.head.num_classes == 3
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, shipped[key]), key
    folder = ctinit.zoo.path(NAME)
    plain = AutoModel.from_pretrained(folder)
    assert all(torch.equal(v, shipped[k]) for k, v in plain.state_dict().items())
    fresh = ctinit.from_pretrained(f"scratch:{INIT}", seed=1).backbone.state_dict()
    assert fresh.keys() == shipped.keys() and all(fresh[k].shape == shipped[k].shape for k in shipped)
    assert any(not torch.equal(fresh[k], shipped[k]) for k in shipped if shipped[k].is_floating_point())

    assert cli_main(["finetune", "--init", INIT, "--data", task, "--steps", "2", "--batch-size", "8", "--json",
                     "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["init"] == INIT and report["algorithm"] == "cts" and 0 <= report["test_accuracy"] <= 1
    assert cli_main(["finetune", "--init", INIT, "--revision", "main", "--data", task, "--steps", "1"]) == 2
    one_line_error(capsys, "a revision only applies to Hub ids")

    out = tmp_path / "eval"
    assert cli_main(["evaluate", "--init", INIT, "--init", f"scratch:{INIT}", "--data", task, "--seeds", "2",
                     "--steps", "2", "--batch-size", "8", "--out", str(out), "--json", "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [e["label"] for e in results["inits"]] == [INIT, f"scratch:{INIT}"]
    assert results["inits"][0]["weights_sha256"] == ctinit.zoo.get(NAME)["sha256"]
    full = len(load_task(task).y_train)  # the validation split (1 of each class's 8) is held out of training
    assert results["tasks"][0]["validation_size"] == 3 and results["tasks"][0]["train_size"] == full - 3


def test_list_shows_the_zoo_backbones_tasks_and_recipes_offline(tiny_zoo, monkeypatch, capsys):
    def no_network(*args, **kwargs):
        raise AssertionError("ctinit list without --hub must not reach the Hub")

    monkeypatch.setattr("huggingface_hub.HfApi.list_models", no_network)
    assert cli_main(["list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"zoo", "backbones", "tasks", "recipes"}
    [row] = data["zoo"]
    assert row["name"] == NAME and row["backbone"] == "convnet4-32" and row["image_size"] == SIZE
    assert row["tasks"] == ["builtin:latin"] and row["size"] > 0 and row["gain"] == "not measured"
    assert "resnet20" in [b["name"] for b in data["backbones"]]
    assert {"spec": "builtin:georgian", "suite": "glyphs", "role": "meta-test"} in data["tasks"]
    assert "quickstart" in [r["name"] for r in data["recipes"]]
    assert cli_main(["list"]) == 0
    text = capsys.readouterr().out
    assert INIT in text and "not measured" in text and "builtin:NAME" in text and "quickstart" in text


def test_results_enter_the_registry_the_list_and_the_card(tiny_zoo, task, tmp_path, capsys):
    out = tmp_path / "eval"
    assert cli_main(["evaluate", "--init", INIT, "--init", f"scratch:{INIT}", "--data", task, "--seeds", "3",
                     "--steps", "2", "--batch-size", "8", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert zoo_script().main(["results", NAME, str(out), "--name", "bars"]) == 0
    record = json.loads(capsys.readouterr().out)
    results = json.loads((out / "results.json").read_text())
    acc = {(r["init"], r["seed"]): r["test_accuracy"] for r in results["runs"]}
    diffs = [acc[(INIT, s)] - acc[(f"scratch:{INIT}", s)] for s in range(3)]
    assert record["difference"]["n"] == 3 and record["difference"]["mean"] == pytest.approx(sum(diffs) / 3)
    assert record["tasks"] == ["npz:bars.npz"] and record["seeds"] == 3 and record["split"] == "test"
    entry = ctinit.zoo.get(NAME)
    assert entry["results"] == [record]
    card = (tiny_zoo / "weights" / NAME / "README.md").read_text()
    assert "| bars | `npz:bars.npz` |" in card and str(tmp_path) not in card
    assert ("does not beat scratch on bars" in card) == (record["verdict"] != "better")
    assert cli_main(["list", "--json"]) == 0
    gain = json.loads(capsys.readouterr().out)["zoo"][0]["gain"]
    assert gain.startswith(f"{record['difference']['mean'] * 100:+.1f} pts") and "on bars" in gain


def test_card_says_plainly_where_an_entry_does_not_beat_scratch(tiny_zoo):
    from ctinit_hub.zoo import render_zoo_card

    entry = ctinit.zoo.get(NAME)
    assert "Not measured yet" in render_zoo_card(entry) and "claims no gain" in render_zoo_card(entry)
    entry["results"] = [
        {"name": "new scripts", "tasks": ["npz:a.npz"], "seeds": 3, "steps": 300, "max_train_per_class": 20,
         "init_accuracy": 0.8, "scratch_accuracy": 0.6, "difference": {"mean": 0.2, "ci95": [0.1, 0.3], "n": 3},
         "verdict": "better"},
        {"name": "colour", "tasks": ["builtin:colour-cards"], "seeds": 3, "steps": 300, "max_train_per_class": None,
         "init_accuracy": 0.5, "scratch_accuracy": 0.55, "difference": {"mean": -0.05, "ci95": [-0.09, -0.01], "n": 3},
         "verdict": "worse"}]
    card = render_zoo_card(entry, repo_id="org/tiny")
    assert "| new scripts | `npz:a.npz` | 20 | 300 | 3 | 0.800 | 0.600 | +20.0 pts [+10.0, +30.0] | better |" in card
    assert "**It does not beat scratch on colour, 300 fine-tuning steps**: it is worse than scratch (-5.0 pts" in card
    assert "does not beat scratch on new scripts" not in card
    assert f"zoo:{NAME}" in card and "org/tiny" in card and "ctinit-train --config tiny --out runs/tiny" in card


def test_init_from_starts_phi_from_the_zoo_entry_and_names_it(tiny_zoo, tmp_path):
    from ctinit_hub.export import export_run
    from ctinit_training.meta_train import main as train_main
    from huggingface_hub import ModelCard

    entry = ctinit.zoo.get(NAME)
    out = tmp_path / "run"
    args = ["--config", "tiny", "--out", str(out), "--no-progress", f"init_from={INIT}", "algorithm=scratch",
            "backbone=convnet4-32", f"image_size={SIZE}", "steps=1", "tasks=[builtin:latin]", "batch_size=8"]
    assert train_main(args) == 0
    made = json.loads((out / "init" / "config.json").read_text())["ctinit"]
    assert made["init_from"] == {"spec": INIT, "repo_id": entry["hub_id"], "revision": None, "sha256": entry["sha256"]}
    trained, shipped = weights(out / "init"), weights(tiny_zoo / "weights" / NAME)
    assert all(torch.equal(trained[k], shipped[k]) for k in shipped if "running" not in k and "num_batches" not in k)
    card = ModelCard.load(export_run(out, tmp_path / "export") / "README.md")
    assert card.data.base_model == entry["hub_id"] and f"`{INIT}`" in card.text


def test_init_from_of_another_architecture_is_one_line(tiny_zoo, tmp_path, capsys):
    from ctinit_training.meta_train import main as train_main

    def train(out, *overrides):
        return train_main(["--config", "tiny", "--no-progress", "--out", str(tmp_path / out), "steps=1",
                           "tasks=[builtin:latin]", *overrides])

    assert train(tmp_path / "a", f"init_from={INIT}", "backbone=resnet20", f"image_size={SIZE}") == 2
    one_line_error(capsys, f"init_from {INIT}: a convnet4-32 backbone")
    assert train(tmp_path / "b", f"init_from={INIT}", "backbone=convnet4-32", "image_size=28") == 2
    assert "image_size 16 (the config says 28)" in one_line_error(capsys, "set backbone and image_size")
    assert train(tmp_path / "c", "init_from=zoo:nope", "backbone=convnet4-32", f"image_size={SIZE}") == 2
    one_line_error(capsys, "no such initialization in the zoo")
    assert not (tmp_path / "a" / "init").exists() and not (tmp_path / "b" / "init").exists()


# ------------------------------------------------------------------------------- push-zoo, over HTTP (local Hub)


def test_push_zoo_pushes_every_entry_with_card_and_recipe(tiny_zoo, local_hub, capsys):
    from ctinit_hub.__main__ import main as hub_main

    assert hub_main(["push-zoo", "--org", "me", "--dry-run"]) == 0
    item = json.loads(capsys.readouterr().out)
    assert item["repo_id"] == f"me/{NAME}" and item["commit"] is None and not local_hub.requests
    assert {"config.json", "model.safetensors", "README.md", "recipe.yaml", "preprocessor_config.json"} <= set(item["files"])

    assert hub_main(["push-zoo", "--org", "me", "--record"]) == 0
    item = json.loads(capsys.readouterr().out)
    files = local_hub.files(f"me/{NAME}")
    assert item["commit"] == local_hub.head(f"me/{NAME}")
    assert files["model.safetensors"] == (tiny_zoo / "weights" / NAME / "model.safetensors").read_bytes()
    card = files["README.md"].decode()
    assert f"me/{NAME}" in card and "library_name: ctinit" in card and "recipe.yaml" in files
    assert str(tiny_zoo) not in card  # nothing local is published
    assert ctinit.zoo.get(NAME)["hub_id"] == f"me/{NAME}" and ctinit.zoo.get(NAME)["revision"] == item["commit"]
    assert hub_main(["push-zoo", "--org", "not/an org"]) == 2
    one_line_error(capsys, "--org")


def test_a_model_fine_tuned_from_a_zoo_entry_names_it(tiny_zoo, task, tmp_path, capsys):
    out = tmp_path / "model"
    assert cli_main(["finetune", "--init", INIT, "--data", task, "--steps", "1", "--batch-size", "8", "--out",
                     str(out), "--no-progress"]) == 0
    made = json.loads((out / "config.json").read_text())["ctinit"]
    assert made["base_model"]["name"] == INIT and "repo_id" not in made["base_model"]  # not pushed: no Hub repo
    assert f"`{INIT}`" in (out / "README.md").read_text()
