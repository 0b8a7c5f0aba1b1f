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


# ------------------------------------------------------------------------------ push / pull / list, mocked


@pytest.fixture
def fake_hub(monkeypatch):
    """HfApi's write methods recorded instead of called; a token that must never be printed."""
    from huggingface_hub import constants

    calls = {}
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr("ctinit_hub.remote.get_token", lambda: TOKEN)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def record(name, result=None):
        def method(self, *args, **kwargs):
            calls[name] = (args, kwargs, getattr(self, "token", None))
            return result
        return method

    commit = SimpleNamespace(commit_url=f"https://huggingface.co/me/tiny/commit/{SHA}", oid=SHA, pr_url=None)
    calls["remote_card"] = False
    monkeypatch.setattr("ctinit.hubio.upload.get_token", lambda: TOKEN)
    monkeypatch.setattr("huggingface_hub.HfApi.file_exists",
                        lambda self, repo_id, filename, **kw: calls["remote_card"] and filename == "README.md")
    real_init = __import__("huggingface_hub").HfApi.__init__

    def init(self, *args, **kwargs):
        calls["HfApi"] = kwargs
        real_init(self, *args, **kwargs)

    monkeypatch.setattr("huggingface_hub.HfApi.__init__", init)

    def upload(self, *args, **kwargs):  # record what the staged folder held at upload time
        folder = Path(kwargs["folder_path"])
        calls["upload_folder"] = (args, kwargs, getattr(self, "token", None))
        calls["uploaded"] = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        return commit

    monkeypatch.setattr("huggingface_hub.HfApi.create_repo", record("create_repo"))
    monkeypatch.setattr("huggingface_hub.HfApi.create_branch", record("create_branch"))
    monkeypatch.setattr("huggingface_hub.HfApi.upload_folder", upload)
    return calls


def test_push_creates_repo_uploads_and_prints_commit_url(export_copy, fake_hub, capsys):
    code = hub_main(["push", str(export_copy), "--repo", "me/tiny", "--private", "--revision", "dev",
                     "--commit-message", "first init"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.strip() == f"https://huggingface.co/me/tiny/commit/{SHA}"
    assert TOKEN not in out + err
    args, kwargs, token = fake_hub["create_repo"]
    assert args == ("me/tiny",) and kwargs["private"] is True and kwargs["exist_ok"] is True and token == TOKEN
    assert fake_hub["create_branch"][1]["branch"] == "dev"
    assert fake_hub["HfApi"]["library_name"] == "ctinit" and fake_hub["HfApi"]["library_version"] == ctinit.__version__
    up = fake_hub["upload_folder"][1]
    # uploaded from a temporary copy: the user's folder is never edited
    assert up["repo_id"] == "me/tiny" and up["folder_path"] != str(export_copy) and up["revision"] == "dev"
    assert up["commit_message"] == "first init" and "*.bin" in up["ignore_patterns"] and up["create_pr"] is False
    uploaded = fake_hub["uploaded"]["README.md"].decode()
    assert 'ctinit.from_pretrained("me/tiny")' in uploaded and "YOUR-ORG" not in uploaded
    assert "YOUR-ORG/cts-tiny" in (export_copy / "README.md").read_text()
    assert set(fake_hub["uploaded"]) == {p.name for p in export_copy.iterdir()}
    for data in fake_hub["uploaded"].values():
        assert TOKEN.encode() not in data


def test_push_keeps_an_existing_remote_card_unless_overwrite_card(export_copy, fake_hub, capsys):
    fake_hub["remote_card"] = True
    assert hub_main(["push", str(export_copy), "--repo", "me/tiny", "--create-pr"]) == 0
    assert "README.md" not in fake_hub["uploaded"] and "config.json" in fake_hub["uploaded"]
    assert fake_hub["upload_folder"][1]["create_pr"] is True and "create_branch" not in fake_hub
    assert "kept the model card" in capsys.readouterr().err
    assert hub_main(["push", str(export_copy), "--repo", "me/tiny", "--overwrite-card"]) == 0
    assert "README.md" in fake_hub["uploaded"]


def test_push_refuses_the_token_in_a_large_binary_file_or_a_file_name(export_copy, fake_hub, capsys):
    def refused(needle):
        assert hub_main(["push", str(export_copy), "--repo", "me/tiny"]) == 2
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], err
        assert TOKEN not in out + err and "Traceback" not in err
        assert "upload_folder" not in fake_hub

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


def test_push_refusals_are_one_line_and_never_show_the_token(export_copy, fake_hub, monkeypatch, capsys):
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

    def forbidden(self, *args, **kwargs):
        from huggingface_hub import errors

        exc = errors.HfHubHTTPError.__new__(errors.HfHubHTTPError)
        Exception.__init__(exc, f"403 Forbidden for token {TOKEN}")
        exc.response = SimpleNamespace(status_code=403, headers={})
        raise exc

    monkeypatch.setattr("huggingface_hub.HfApi.upload_folder", forbidden)
    fails("not allowed to write (HTTP 403)")
    assert "YOUR-ORG/cts-tiny" in (export_copy / "README.md").read_text()  # restored after the failed upload
    monkeypatch.setattr("ctinit.hubio.upload.get_token", lambda: None)
    fails("no Hugging Face token: set HF_TOKEN")
    monkeypatch.setattr("ctinit.hubio.upload.get_token", lambda: TOKEN)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    fails("HF_HUB_OFFLINE is set")
    assert "upload_folder" not in fake_hub


def test_pull_prints_the_resolved_commit_and_refuses_pickle_repos(export, fake_hub, monkeypatch, tmp_path, capsys):
    files = ["config.json", WEIGHTS_NAME, "README.md", "recipe.yaml"]
    monkeypatch.setattr("huggingface_hub.HfApi.model_info",
                        lambda self, repo_id, revision=None, **kw: SimpleNamespace(
                            sha=SHA, siblings=[SimpleNamespace(rfilename=f) for f in files]))
    seen = {}

    def download(repo_id, **kwargs):
        seen.update(kwargs, repo_id=repo_id)
        shutil.copytree(export, kwargs["local_dir"], dirs_exist_ok=True)
        return kwargs["local_dir"]

    monkeypatch.setattr("huggingface_hub.snapshot_download", download)
    assert hub_main(["pull", "me/tiny", "--revision", "v1", "--out", str(tmp_path / "pulled")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [SHA, str(tmp_path / "pulled")]
    assert seen["repo_id"] == "me/tiny" and seen["revision"] == SHA and "*.bin" in seen["ignore_patterns"]  # the commit model_info reported
    assert (tmp_path / "pulled" / "README.md").is_file()

    files[:] = ["config.json", "pytorch_model.bin"]
    seen.clear()
    assert hub_main(["pull", "me/pickled"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "only pickle weights on the Hub" in err[0] and not seen


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


def test_meta_train_push_to_hub_exports_and_uploads_at_the_end(fake_hub, tmp_path, capsys):
    from ctinit_training.meta_train import main as meta_train_main

    args = ["--config", str(TINY), "--out", str(tmp_path / "run"), "--no-progress", "steps=2", "reset_period=2",
            "log_every=2", "max_train_per_class=4", "batch_size=8", "tasks=[builtin:fashion-mnist, builtin:latin]"]
    assert meta_train_main(args + ["--push-to-hub", "not a repo"]) == 2  # refused before any training
    assert "write a Hub id as ORG/NAME" in capsys.readouterr().err and not (tmp_path / "run").exists()
    assert meta_train_main(args + ["--push-to-hub", "me/tiny", "--private"]) == 0
    uploaded = fake_hub["uploaded"]
    assert {"config.json", WEIGHTS_NAME, "README.md", "recipe.yaml", "preprocessor_config.json"} <= set(uploaded)
    assert fake_hub["create_repo"][1]["private"] is True
    assert 'ctinit.from_pretrained("me/tiny")' in uploaded["README.md"].decode()
    for data in uploaded.values():
        assert str(tmp_path).encode() not in data and TOKEN.encode() not in data
    assert f"pushed to me/tiny: https://huggingface.co/me/tiny/commit/{SHA}" in capsys.readouterr().err
