"""The zoo's registry covers every shipped file of an entry (sha256, checked on every load, written by the one
function the registry writer and the loader share), damaged files say "reinstall ctinit", and an entry with a value
of the wrong type is one line, exit 2."""
import json

import pytest

import ctinit
from ctinit.cli import main as cli_main
from ctinit.errors import CheckpointError

from zoo_fixtures import NAME, built_zoo, tiny_zoo  # noqa: F401 - fixtures


def _registry(root):
    return json.loads((root / "registry.json").read_text())


def test_the_registry_lists_every_file_of_an_entry(tiny_zoo):
    entry = ctinit.zoo.get(NAME)
    assert sorted(entry["files"]) == ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]
    assert entry["files"] == ctinit.zoo.shipped_files(NAME)


@pytest.mark.parametrize("name,edit", [
    ("config.json", lambda p: p.write_text(p.read_text().replace('"image_size": 16', '"image_size": 64'))),
    ("README.md", lambda p: p.write_text(p.read_text() + "\nedited\n")),
    ("config.json", lambda p: p.unlink()),
], ids=["edited image_size", "edited card", "missing config"])
def test_an_edited_or_missing_shipped_file_says_reinstall(name, edit, tiny_zoo, capsys):
    edit(tiny_zoo / "weights" / NAME / name)
    with pytest.raises(CheckpointError, match="reinstall ctinit") as refused:
        ctinit.zoo.path(NAME)
    assert name in str(refused.value)


def test_a_file_added_to_a_zoo_folder_is_covered_when_the_registry_is_written_again(tiny_zoo):
    extra = tiny_zoo / "weights" / NAME / "preprocessor_config.json"
    extra.write_text("{}")
    ctinit.zoo.write_entries(ctinit.zoo.entries())
    assert "preprocessor_config.json" in ctinit.zoo.get(NAME)["files"]
    extra.write_text('{"size": 1}')
    with pytest.raises(CheckpointError, match="preprocessor_config.json is damaged or edited"):
        ctinit.zoo.path(NAME)


BAD_VALUES = [("image_size", "16"), ("tasks", "builtin:latin"), ("size", True), ("files", ["model.safetensors"]),
              ("results", [{"name": "x", "difference": {"mean": "big"}}]), ("hub_id", 7), ("channels", None)]


@pytest.mark.parametrize("key,value", BAD_VALUES, ids=[k for k, _ in BAD_VALUES])
def test_a_registry_entry_of_the_wrong_type_is_one_line_exit_2(key, value, tiny_zoo, capsys):
    items = _registry(tiny_zoo)
    items[0][key] = value
    (tiny_zoo / "registry.json").write_text(json.dumps(items))
    capsys.readouterr()
    assert cli_main(["list"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"has {key} of the wrong type; reinstall ctinit" in err[0] and "Traceback" not in err[0]
