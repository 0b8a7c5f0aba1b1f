"""Export a run as a Hub model repo folder, its card, and push/pull/list with huggingface_hub mocked.

The real push test runs only when HF_TOKEN and CTINIT_TEST_HUB_NAMESPACE are set (it creates and deletes a
private repo in that namespace)."""
import datetime
import json
import os
import shutil
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import ctinit
from ctinit.cli import main as cli_main
from ctinit.hubio.names import WEIGHTS_NAME
from ctinit.loading import load_init, save_init
from ctinit_hub.__main__ import main as hub_main

from helpers import weights

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "training" / "recipes" / "tiny.yaml"
TOKEN = "hf_TestTokenThatMustNeverBePrinted123"
SHA = "a" * 40


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real (tiny) meta-training run."""
    from ctinit_training.meta_train import main as meta_train_main

    out = tmp_path_factory.mktemp("run")
    code = meta_train_main(["--config", str(TINY), "--out", str(out), "--no-progress", "steps=2", "reset_period=2",
                            "log_every=2", "max_train_per_class=4", "batch_size=8",
                            "tasks=[builtin:fashion-mnist, builtin:latin]"])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def export(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "cts-tiny"
    assert hub_main(["export", str(run), str(out)]) == 0
    return out


@pytest.fixture
def export_copy(export, tmp_path):
    dst = tmp_path / "cts-tiny"
    shutil.copytree(export, dst)
    return dst


def test_export_holds_config_weights_recipe_and_loads_bitwise(run, export):
    from safetensors import safe_open
    from transformers import AutoImageProcessor, AutoModel

    from ctinit_training.config import load_config

    names = {p.name for p in export.iterdir()}
    assert names == {"config.json", WEIGHTS_NAME, "README.md", "recipe.yaml", "preprocessor_config.json"}
    config = json.loads((export / "config.json").read_text())
    made = config["ctinit"]
    assert config["model_type"] == "ctinit-convnet" and made["algorithm"] == "cts" and made["steps"] == 2
    assert made["seed"] == 0 and made["library_version"] == ctinit.__version__
    assert [(t["name"], t["num_classes"], t["train_size"]) for t in made["tasks"]] == [("fashion-mnist", 10, 40), ("latin", 26, 104)]
    with safe_open(str(export / WEIGHTS_NAME), "pt") as f:
        assert f.metadata()["format"] == "pt" and f.metadata()["algorithm"] == "cts" and f.metadata()["library"] == "ctinit"
    phi = weights(run / "init")
    exported = weights(export)
    assert set(phi) == set(exported) and all(torch.equal(phi[k], exported[k]) for k in phi)
    loaded = load_init(export).state_dict()
    auto = AutoModel.from_pretrained(str(export)).state_dict()  # after `import ctinit`, no trust_remote_code
    for k, v in phi.items():
        assert torch.equal(loaded[k], v) and torch.equal(auto[k], v)
    assert (export / "recipe.yaml").read_text() == (run / "config.yaml").read_text()
    assert load_config(export / "recipe.yaml").tasks == ["builtin:fashion-mnist", "builtin:latin"]
    processor = AutoImageProcessor.from_pretrained(str(export))
    assert list(processor.image_mean) == [0.5] * 3 and processor.size["height"] == 28


def test_card_parses_and_carries_the_metadata(export):
    from huggingface_hub import ModelCard

    card = ModelCard.load(export / "README.md")
    assert card.data.library_name == "ctinit" and card.data.license == "apache-2.0"
    assert card.data.pipeline_tag == "image-feature-extraction"
    assert {"ctinit", "meta-learning", "cts"} <= set(card.data.tags)
    assert card.data.datasets == ["zalando-datasets/fashion_mnist"]
    assert not card.data.eval_results  # not evaluated yet
    text = card.text
    assert 'ctinit.from_pretrained("YOUR-ORG/cts-tiny")' in text and ".finetune(" in text
    assert "| algorithm | `cts`: Continual Trajectory Shifting (CTS) |" in text
    assert "| fashion-mnist | `builtin:fashion-mnist` | 10 | 40 |" in text
    assert "reset_period: 2" in text  # the recipe
    assert "Shin, Jaewoong and Lee, Hae Beom and Gong, Boqing and Hwang, Sung Ju" in text and "2102.07215" in text
    assert "<!-- ctinit:results -->" in text and "<!-- /ctinit:results -->" in text


def test_export_of_a_transformers_backbone_says_it_loads_without_ctinit(tmp_path):
    from huggingface_hub import ModelCard

    torch.manual_seed(0)
    made = {"algorithm": "reptile", "config": {"backbone": "hf-vit-tiny", "reset_period": 5}, "steps": 5, "seed": 0,
            "tasks": [{"spec": "hf:ylecun/mnist", "name": "mnist", "num_classes": 10, "train_size": 60, "test_size": 10}]}
    save_init(ctinit.build_backbone("hf-vit-tiny"), tmp_path / "run" / "init", made)
    assert hub_main(["export", str(tmp_path / "run"), str(tmp_path / "out"), "--repo", "me/vit-init", "--license", "mit"]) == 0
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.license == "mit" and card.data.datasets == ["ylecun/mnist"] and "vit" in card.data.tags
    # the Hub shows transformers' snippet; the ctinit tag keeps it in `ctinit list`
    assert card.data.library_name == "transformers" and "ctinit" in card.data.tags
    assert 'AutoModelForImageClassification.from_pretrained("me/vit-init", num_labels=10)' in card.text
    assert "`ViTModel`" in card.text and "YOUR-ORG" not in card.text
    assert not (tmp_path / "out" / "recipe.yaml").exists()  # an init dir without a run recipe


def test_export_bad_input_is_one_line(run, export, tmp_path, capsys):
    def fails(args, needle):
        assert hub_main(args) == 2
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ctinit-hub: error:") and needle in lines[0], captured.err
        assert "Traceback" not in captured.err

    fails(["export", str(tmp_path / "missing"), str(tmp_path / "o1")], "no such run directory")
    fails(["export", str(run), str(export)], "exists and is not empty")
    assert hub_main(["export", str(run), str(tmp_path / "o2")]) == 0
    assert hub_main(["export", str(run), str(tmp_path / "o2"), "--overwrite"]) == 0
    capsys.readouterr()
    fails(["export", str(run), str(tmp_path / "o3"), "--repo", "not a repo"], "write the Hub id as ORG/NAME")
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    data = (broken / "init" / WEIGHTS_NAME).read_bytes()
    (broken / "init" / WEIGHTS_NAME).write_bytes(data[:64])
    fails(["export", str(broken), str(tmp_path / "o4")], "unreadable safetensors")
    (broken / "init" / WEIGHTS_NAME).unlink()
    (broken / "init" / "pytorch_model.bin").write_bytes(b"pickle")
    fails(["export", str(broken), str(tmp_path / "o5")], "only pickle weights")
    assert not (tmp_path / "o4").exists() and not (tmp_path / "o5").exists()  # nothing half-written


# ------------------------------------------------------------------------------ push / pull over HTTP (local Hub)


@pytest.fixture
def hub(local_hub, monkeypatch):
    """The local Hub (tests/local_hub.py), reached over HTTP with ``TOKEN``: a token that must never be printed."""
    local_hub.add_token(TOKEN, "me", orgs=("org",))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return local_hub


def uploaded(hub, repo_id, revision="main"):
    """The files of a repo on the local Hub, without the .gitattributes every new repo starts with."""
    return {p: d for p, d in hub.files(repo_id, revision).items() if p != ".gitattributes"}


def test_push_creates_repo_uploads_and_prints_commit_url(export_copy, hub, capsys):
    code = hub_main(["push", str(export_copy), "--repo", "me/tiny", "--private", "--revision", "dev",
                     "--commit-message", "first init"])
    out, err = capsys.readouterr()
    assert code == 0, err
    commit = hub.head("me/tiny", "dev")
    assert out.strip() == f"{hub.url}/me/tiny/commit/{commit}"
    assert TOKEN not in out + err
    assert hub.repos["me/tiny"].private and hub.head("me/tiny") != commit  # the branch holds the upload, not main
    assert hub.repos["me/tiny"].messages[commit] == "first init"
    assert f"ctinit/{ctinit.__version__}" in hub.user_agents[-1]  # HfApi(library_name="ctinit", library_version=...)
    files = uploaded(hub, "me/tiny", "dev")
    card = files["README.md"].decode()
    assert 'ctinit.from_pretrained("me/tiny")' in card and "YOUR-ORG" not in card
    assert "YOUR-ORG/cts-tiny" in (export_copy / "README.md").read_text()  # the user's folder is never edited
    assert set(files) == {p.name for p in export_copy.iterdir()}
    for data in files.values():
        assert TOKEN.encode() not in data


def test_push_keeps_an_existing_remote_card_unless_overwrite_card(export_copy, hub, capsys):
    assert hub_main(["push", str(export_copy), "--repo", "me/tiny"]) == 0
    on_hub = hub.files("me/tiny")["README.md"]
    (export_copy / "README.md").write_text((export_copy / "README.md").read_text() + "\nedited here\n")
    (export_copy / "notes.txt").write_text("new\n")
    assert hub_main(["push", str(export_copy), "--repo", "me/tiny", "--create-pr"]) == 0
    assert "kept the model card" in capsys.readouterr().err
    pr = hub.files("me/tiny", "refs/pr/1")
    assert pr["README.md"] == on_hub and "notes.txt" in pr and "notes.txt" not in hub.files("me/tiny")
    assert hub_main(["push", str(export_copy), "--repo", "me/tiny", "--overwrite-card"]) == 0
    assert b"edited here" in hub.files("me/tiny")["README.md"]


def test_push_refuses_the_token_in_a_large_binary_file_or_a_file_name(export_copy, hub, capsys):
    def refused(needle):
        assert hub_main(["push", str(export_copy), "--repo", "me/tiny"]) == 2
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], err
        assert TOKEN not in out + err and "Traceback" not in err
        assert not hub.requests  # refused before any request

    blob = bytearray(os.urandom(2 << 20))  # 2 MiB of binary, the token across the 1 MiB chunk edge
    at = (1 << 20) - 10
    blob[at:at + len(TOKEN)] = TOKEN.encode()
    (export_copy / "extra.bin.data").write_bytes(bytes(blob))
    refused("extra.bin.data: contains a Hugging Face token")
    (export_copy / "extra.bin.data").unlink()
    other = "hf_" + "Q" * 34  # token-shaped, not the user's own
    (export_copy / "weights.dat").write_bytes(os.urandom(3 << 20) + other.encode())
    refused("weights.dat: contains a Hugging Face token")
    (export_copy / "weights.dat").unlink()
    (export_copy / "sub").mkdir()
    (export_copy / "sub" / f"{TOKEN}.txt").write_text("harmless")
    refused("a file name holds a Hugging Face token (sub/hf_***.txt)")


def test_push_refusals_are_one_line_and_never_show_the_token(export_copy, hub, monkeypatch, capsys):
    def fails(needle, args=None):
        assert hub_main(args or ["push", str(export_copy), "--repo", "me/tiny"]) == 2
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert len(lines) == 1 and needle in lines[-1], err
        assert TOKEN not in out + err and "Traceback" not in err

    (export_copy / "notes.md").write_text(f"my token is {TOKEN}\n")
    fails("notes.md: contains a Hugging Face token")
    (export_copy / "notes.md").unlink()
    (export_copy / "optimizer.pt").write_bytes(b"pickle")
    fails("holds pickle files")
    (export_copy / "optimizer.pt").unlink()
    fails("write a Hub id as ORG/NAME", ["push", str(export_copy), "--repo", "tiny"])
    assert not hub.requests
    hub.add_token(TOKEN, "someone-else", write=False)  # the Hub answers 403: a token that cannot write to me/
    fails("not allowed to write (HTTP 403)")
    assert "YOUR-ORG/cts-tiny" in (export_copy / "README.md").read_text()  # the user's folder is never edited
    assert "me/tiny" not in hub.repos
    monkeypatch.delenv("HF_TOKEN")
    fails("no Hugging Face token: set HF_TOKEN")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    requests = len(hub.requests)
    fails("HF_HUB_OFFLINE is set")
    assert len(hub.requests) == requests and "me/tiny" not in hub.repos


def test_pull_prints_the_resolved_commit_and_refuses_pickle_repos(export, hub, tmp_path, capsys):
    from huggingface_hub import HfApi

    assert hub_main(["push", str(export), "--repo", "me/tiny"]) == 0
    HfApi().create_tag("me/tiny", tag="v1")
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "more.txt").write_text("after v1\n")
    HfApi().upload_folder(repo_id="me/tiny", folder_path=str(tmp_path / "extra"))
    v1 = hub.repos["me/tiny"].tags["v1"]
    capsys.readouterr()
    assert hub_main(["pull", "me/tiny", "--revision", "v1", "--out", str(tmp_path / "pulled")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [v1, str(tmp_path / "pulled")]  # the commit the tag names, not main's
    assert (tmp_path / "pulled" / "README.md").is_file() and not (tmp_path / "pulled" / "more.txt").exists()
    assert hub.count("GET", f"/me/tiny/resolve/{v1}/") >= 1  # the files of that commit were downloaded

    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "config.json").write_text("{}")
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"pickle")
    HfApi().create_repo("me/pickled")
    HfApi().upload_folder(repo_id="me/pickled", folder_path=str(tmp_path / "pickled"))
    assert hub_main(["pull", "me/pickled"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "only pickle weights on the Hub" in err[0]
    assert hub.count("GET", "/me/pickled/resolve/") == 0 and hub.count("HEAD", "/me/pickled/resolve/") == 0


def test_list_shows_ctinit_models_as_a_table(monkeypatch, capsys):
    seen = {}

    def list_models(self, **kwargs):
        seen.update(kwargs)
        return [SimpleNamespace(id="me/cts-resnet20", tags=["ctinit", "cts", "meta-learning"], downloads=12, likes=3,
                                last_modified=datetime.datetime(2025, 1, 2)),
                SimpleNamespace(id="you/reptile-convnet", tags=["ctinit", "reptile"], downloads=None, likes=0,
                                last_modified=None)]

    monkeypatch.setattr("huggingface_hub.HfApi.list_models", list_models)
    assert cli_main(["list", "--author", "me"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert seen["filter"] == "ctinit" and seen["author"] == "me"
    assert lines[0].split() == ["id", "algorithm", "downloads", "likes", "updated"]
    assert lines[1].split() == ["me/cts-resnet20", "cts", "12", "3", "2025-01-02"]
    assert lines[2].split() == ["you/reptile-convnet", "reptile", "-", "0", "-"]

    def offline(self, **kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr("huggingface_hub.HfApi.list_models", offline)
    assert cli_main(["list", "--hub"]) == 2  # the Hub listing moved under --hub (plain `list` is offline)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the Hub cannot be reached" in err[0]


# ------------------------------------------------------------------------------ the real Hub (opt-in)


@pytest.mark.skipif(not (os.environ.get("HF_TOKEN") and os.environ.get("CTINIT_TEST_HUB_NAMESPACE")),
                    reason="set HF_TOKEN and CTINIT_TEST_HUB_NAMESPACE to push to the real Hub")
@pytest.mark.user_hub_env  # it needs the user's token (conftest.py clears HF_* for the others)
def test_push_and_pull_against_the_real_hub(export_copy, tmp_path, capsys):
    from huggingface_hub import HfApi

    repo = f"{os.environ['CTINIT_TEST_HUB_NAMESPACE']}/ctinit-test-{uuid.uuid4().hex[:8]}"
    try:
        assert hub_main(["push", str(export_copy), "--repo", repo, "--private"]) == 0
        url = capsys.readouterr().out.strip()
        assert url.startswith("https://") and "/commit/" in url
        assert hub_main(["pull", repo, "--out", str(tmp_path / "pulled")]) == 0
        out, err = capsys.readouterr()
        commit = out.strip().splitlines()[0]
        assert len(commit) == 40 and os.environ["HF_TOKEN"] not in out + err
        pulled = load_init(f"{repo}@{commit}").state_dict()
        for k, v in weights(export_copy).items():
            assert torch.equal(pulled[k], v)
    finally:
        HfApi().delete_repo(repo, missing_ok=True)


def test_meta_train_push_to_hub_exports_and_uploads_at_the_end(hub, tmp_path, capsys):
    from ctinit_training.meta_train import main as meta_train_main

    args = ["--config", str(TINY), "--out", str(tmp_path / "run"), "--no-progress", "steps=2", "reset_period=2",
            "log_every=2", "max_train_per_class=4", "batch_size=8", "tasks=[builtin:fashion-mnist, builtin:latin]"]
    assert meta_train_main(args + ["--push-to-hub", "not a repo"]) == 2  # refused before any training
    assert "write a Hub id as ORG/NAME" in capsys.readouterr().err and not (tmp_path / "run").exists()
    assert meta_train_main(args + ["--push-to-hub", "me/tiny", "--private"]) == 0
    files = uploaded(hub, "me/tiny")
    assert {"config.json", WEIGHTS_NAME, "README.md", "recipe.yaml", "preprocessor_config.json"} <= set(files)
    assert hub.repos["me/tiny"].private
    assert 'ctinit.from_pretrained("me/tiny")' in files["README.md"].decode()
    for data in files.values():
        assert str(tmp_path).encode() not in data and TOKEN.encode() not in data
    assert f"pushed to me/tiny: {hub.url}/me/tiny/commit/{hub.head('me/tiny')}" in capsys.readouterr().err
