"""The newcomer's papercuts (issue 35, item 6), each with a test: curve labels, file modes, class names through
``finetune()`` -> ``save_pretrained``, preprocessor configs, cards' install line and Hub links, "did you mean zoo:NAME",
and a loading error that names ``import ctinit``."""
from __future__ import annotations

import pytest

from zoo_fixtures import built_zoo, tiny_zoo  # noqa: F401 - fixtures

from ctinit.report import curves_figure


def _results(**split) -> dict:
    return {"tasks": [{"spec": "builtin:a", "display": "a", "num_classes": 3}], "inits": [{"label": "zoo:x"}],
            "runs": [{"init": "zoo:x", "task": "builtin:a", "curve": [[0, 0.4], [10, 0.7]]}], "seeds": [0], **split}


@pytest.mark.parametrize("split, label", [
    ({"validation_fraction": 0.1, "score": "test"}, "validation accuracy"),
    ({"validation_fraction": 0.2, "score": "validation"}, "validation accuracy"),
    ({"validation_fraction": 0.0, "score": "test"}, "test accuracy"),
    ({}, "test accuracy"),  # recorded before validation splits existed: the curves were on the test split
])
def test_curves_are_labelled_with_the_split_they_were_measured_on(split, label):
    fig = curves_figure(_results(**split))
    assert fig.axes[0].get_ylabel() == label
    assert fig._suptitle.get_text().startswith(label + " while fine-tuning")


def _image_folder(root, classes=("alpha", "beta", "gamma"), per_class=5, size=28):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """A zoo init fine-tuned in Python on a folder of three named classes (two steps)."""
    import ctinit

    data = _image_folder(tmp_path_factory.mktemp("data") / "letters")
    model = ctinit.from_pretrained("zoo:glyph-convnet4-32")
    model.finetune(f"folder:{data}", steps=2, batch_size=4, progress=False)
    return model


def test_save_pretrained_after_finetune_keeps_the_folders_class_names(finetuned, tmp_path):
    import json

    finetuned.save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "alpha", "1": "beta", "2": "gamma"}
    assert config["label2id"] == {"alpha": 0, "beta": 1, "gamma": 2}
    finetuned.save_pretrained(tmp_path / "renamed", labels=["a", "b", "c"])  # given labels still win
    assert json.loads((tmp_path / "renamed" / "config.json").read_text())["id2label"]["2"] == "c"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_saved_files_get_the_mode_the_umask_gives(finetuned, tmp_path, umask, mode):
    import os
    import stat

    from ctinit.loading import save_init

    old = os.umask(umask)
    try:
        model_dir = finetuned.save_pretrained(tmp_path / "model")
        init_dir = save_init(finetuned.backbone, tmp_path / "init")
    finally:
        os.umask(old)
    files = [p for p in [*model_dir.iterdir(), *init_dir.iterdir()] if p.is_file()]
    assert {p.name for p in files} >= {"model.safetensors", "config.json", "preprocessor_config.json"}
    assert {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {str(p): oct(mode) for p in files}


# ------------------------------------------------------------------------------------ zoo folders, cards, init names


def test_every_zoo_folder_has_a_preprocessor_config_transformers_reads():
    from transformers import AutoImageProcessor

    from ctinit import zoo

    assert zoo.entries()
    for entry in zoo.entries():
        processor = AutoImageProcessor.from_pretrained(str(zoo.path(entry["name"])))
        assert processor.size == {"height": entry["image_size"], "width": entry["image_size"]}, entry["name"]
        assert list(processor.image_mean) == [0.5] * entry["channels"] and processor.do_rescale


def test_the_zoo_script_writes_the_preprocessor_config_of_an_added_entry(built_zoo):
    from transformers import AutoImageProcessor

    from zoo_fixtures import NAME, SIZE

    processor = AutoImageProcessor.from_pretrained(str(built_zoo / "weights" / NAME))
    assert processor.size == {"height": SIZE, "width": SIZE}


def test_shipped_cards_name_no_unpublished_hub_id_and_no_pypi_install():
    from ctinit import zoo

    for entry in zoo.entries():
        card = (zoo.folder(entry["name"]) / "README.md").read_text()
        assert "pip install ctinit\n" not in card, entry["name"]
        if entry.get("revision"):
            assert f"https://huggingface.co/{entry['hub_id']}" in card
        else:  # the snippets load it by its zoo name; the Hub id appears only as "not on the Hub yet"
            assert f"--init zoo:{entry['name']}" in card and f'ctinit.zoo.path("{entry["name"]}")' in card
            lines = [line for line in card.splitlines() if entry["hub_id"] in line]
            assert lines and all("Not on the Hub yet" in line for line in lines), lines


def test_a_zoo_card_links_the_hub_once_the_entry_is_published(tiny_zoo):
    import json

    from ctinit import zoo
    from zoo_fixtures import NAME
    from ctinit_hub.zoo import render_zoo_card

    entries = json.loads((tiny_zoo / "registry.json").read_text())
    unpublished = render_zoo_card(zoo.get(NAME))
    assert "Not on the Hub yet" in unpublished and f"--init zoo:{NAME}" in unpublished
    for e in entries:
        e.update(hub_id="me/tiny", revision="0123456789abcdef0123456789abcdef01234567")
    zoo.write_entries(entries)
    published = render_zoo_card(zoo.get(NAME))
    assert "[me/tiny](https://huggingface.co/me/tiny) (commit `0123456789`)" in published
    assert "--init me/tiny" in published and 'from_pretrained("me/tiny")' in published
    assert "Not on the Hub yet" not in published


def test_the_install_line_is_true_for_what_exists(monkeypatch):
    from importlib import metadata

    from ctinit.hubio.cards import UNPUBLISHED_INSTALL, install_line

    class Meta:
        def __init__(self, urls):
            self.urls = urls

        def get_all(self, key):
            return self.urls if key == "Project-URL" else None

    monkeypatch.setattr(metadata, "metadata", lambda name: Meta(["Paper, https://arxiv.org/abs/2102.07215"]))
    assert install_line() == UNPUBLISHED_INSTALL and "not on PyPI" in UNPUBLISHED_INSTALL
    monkeypatch.setattr(metadata, "metadata", lambda name: Meta(["Repository, https://example.org/ctinit"]))
    assert install_line() == 'pip install "ctinit @ git+https://example.org/ctinit"'


@pytest.mark.parametrize("init, meant", [
    ("glyph-resnet20", "zoo:glyph-resnet20"),
    ("zoo/glyph-resnet20", "zoo:glyph-resnet20"),
    ("scratch:glyph-resnet20", "scratch:zoo:glyph-resnet20"),
    ("glyph-resnet2", "zoo:glyph-resnet20"),
])
def test_a_zoo_name_without_its_prefix_gets_did_you_mean(init, meant, monkeypatch, tmp_path):
    from ctinit.errors import CheckpointError
    from ctinit.loading import resolve_init

    monkeypatch.chdir(tmp_path)  # no local folder of that name

    def no_hub(*args, **kwargs):
        raise AssertionError("a zoo name must not be looked up on the Hub")

    monkeypatch.setattr("ctinit.loading.hub_snapshot", no_hub)
    with pytest.raises(CheckpointError, match=f"did you mean {meant}\\?"):
        resolve_init(init)


def test_a_local_folder_named_like_a_zoo_entry_is_still_used(monkeypatch, tmp_path):
    import shutil

    from ctinit import zoo
    from ctinit.loading import resolve_init

    shutil.copytree(zoo.path("glyph-resnet20"), tmp_path / "glyph-resnet20")
    monkeypatch.chdir(tmp_path)
    assert resolve_init("glyph-resnet20").path.resolve() == (tmp_path / "glyph-resnet20").resolve()


def test_a_ctinit_model_type_this_version_does_not_know_says_to_upgrade_ctinit(tmp_path):
    import json
    import shutil

    from ctinit import zoo
    from ctinit.errors import CheckpointError
    from ctinit.loading import read_config

    folder = tmp_path / "future"
    shutil.copytree(zoo.path("glyph-resnet20"), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "ctinit-future"}))
    with pytest.raises(CheckpointError, match="ctinit model type .*`import ctinit`.*upgrade ctinit"):
        read_config(folder)


def test_a_ctinit_model_type_unregistered_in_transformers_names_import_ctinit():
    from ctinit.models.configuration import unknown_model_type_advice

    assert "`import ctinit`" in unknown_model_type_advice("ctinit-resnet")
    assert unknown_model_type_advice("llama-9") is None  # not ours: transformers' own advice stands
