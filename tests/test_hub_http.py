"""Every Hub flow end to end over HTTP: the installed commands, huggingface_hub's own client and transformers talk
to the local Hub of ``tests/local_hub.py`` (``HF_ENDPOINT``, ``HF_TOKEN``), as users run them against the real Hub.
Nothing below huggingface_hub is replaced."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard, metadata_load

from conftest import LOCAL_HUB_TOKEN

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "training" / "recipes" / "tiny.yaml"
TRAIN = ["--no-progress", "steps=2", "reset_period=2", "log_every=2", "max_train_per_class=4", "batch_size=8",
         "tasks=[builtin:fashion-mnist, builtin:latin]"]
FINETUNE = ["--data", "builtin:latin", "--steps", "2", "--batch-size", "8", "--max-train-per-class", "4",
            "--no-progress"]


def run(*args, env=None, expect=0):
    """Run an installed command (or ``python -c``) with the test's environment; returns (stdout, stderr)."""
    full = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(list(args), capture_output=True, text=True, env=full, timeout=300)
    assert proc.returncode == expect, f"{args[0]} exited {proc.returncode}\n{proc.stderr[-3000:]}"
    assert LOCAL_HUB_TOKEN not in proc.stdout + proc.stderr
    return proc.stdout, proc.stderr


def cached_snapshots(repo_id: str) -> list[Path]:
    folder = Path(os.environ["HF_HUB_CACHE"]) / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return sorted(folder.iterdir()) if folder.is_dir() else []


@pytest.fixture
def export(tmp_path):
    """An init folder as ``ctinit-hub export`` writes it (a tiny run exported in this process)."""
    from ctinit_hub.__main__ import main as hub_main
    from ctinit_training.meta_train import main as meta_train_main

    assert meta_train_main(["--config", str(TINY), "--out", str(tmp_path / "run"), *TRAIN]) == 0
    assert hub_main(["export", str(tmp_path / "run"), str(tmp_path / "export"), "--license", "mit"]) == 0
    return tmp_path / "export"


@pytest.mark.slow  # eight runs of the installed commands (torch + transformers imports each): minutes on 2 cores
def test_publish_list_download_finetune_push_and_pipeline_by_id(local_hub, tmp_path):
    """The issue's whole path: meta-train and push an init, list it, download it by id in a fresh cache, fine-tune
    it, fine-tune again offline from the cache, push the fine-tuned model, load it with transformers by id."""
    _, err = run("ctinit-train", "--config", str(TINY), "--out", str(tmp_path / "run"), *TRAIN,
                 "--push-to-hub", "org/cts-tiny")
    assert f"pushed to org/cts-tiny: {local_hub.url}/org/cts-tiny/commit/{local_hub.head('org/cts-tiny')}" in err
    files = local_hub.files("org/cts-tiny")
    assert {"config.json", "model.safetensors", "README.md", "recipe.yaml", "preprocessor_config.json"} <= set(files)
    card = tmp_path / "init-card.md"
    card.write_bytes(files["README.md"])
    meta = metadata_load(card)
    assert meta["library_name"] == "ctinit" and "ctinit" in meta["tags"] and meta["license"]
    assert 'ctinit.from_pretrained("org/cts-tiny")' in card.read_text()
    for data in files.values():
        assert str(tmp_path).encode() not in data and LOCAL_HUB_TOKEN.encode() not in data

    out, _ = run("ctinit", "list", "--hub", "--author", "org")
    assert out.splitlines()[1].split()[:2] == ["org/cts-tiny", "cts"]
    out, _ = run("ctinit", "list", "--hub", "--author", "someone-else")
    assert "org/cts-tiny" not in out

    assert cached_snapshots("org/cts-tiny") == []
    out, _ = run("ctinit", "finetune", "--init", "org/cts-tiny", *FINETUNE, "--json", "--out", str(tmp_path / "ft1"))
    first = json.loads(out)
    commit = local_hub.head("org/cts-tiny")
    assert [p.name for p in cached_snapshots("org/cts-tiny")] == [commit]
    downloads = local_hub.count("GET", r"/org/cts-tiny/resolve/")
    # offline, from the cache: same init, same seed, same result, and no request reaches the Hub
    out, _ = run("ctinit", "finetune", "--init", "org/cts-tiny", *FINETUNE, "--json", "--out", str(tmp_path / "ft2"),
                 env={"HF_HUB_OFFLINE": "1"})
    assert json.loads(out)["test_accuracy"] == first["test_accuracy"]
    assert local_hub.count("GET", r"/org/cts-tiny/resolve/") == downloads

    run("ctinit", "finetune", "--init", "org/cts-tiny", *FINETUNE, "--out", str(tmp_path / "ft3"),
        "--push-to-hub", "me/latin-classifier", "--license", "mit")
    pushed = local_hub.files("me/latin-classifier")
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= set(pushed)
    card = ModelCard(pushed["README.md"].decode())
    assert card.data.base_model == "org/cts-tiny" and card.data.license == "mit"
    assert card.data.pipeline_tag == "image-classification"
    assert commit[:10] in card.text  # the init's commit, as downloaded

    # transformers, by id, through huggingface_hub's download path, in a fresh cache (ctinit registers the classes)
    code = ("import ctinit, numpy, transformers\n"
            "from PIL import Image\n"
            "p = transformers.pipeline('image-classification', model='me/latin-classifier')\n"
            "print(p(Image.fromarray(numpy.zeros((28, 28), numpy.uint8)))[0]['label'])\n"
            "m = transformers.AutoModel.from_pretrained('org/cts-tiny')\n"
            "print(type(m).__name__)\n")
    out, _ = run(sys.executable, "-c", code, env={"HF_HUB_CACHE": str(tmp_path / "fresh-cache")})
    label, backbone = out.strip().splitlines()[-2:]
    assert label in json.loads(pushed["config.json"])["id2label"].values() and backbone


def test_push_pins_revisions_and_keeps_the_card_on_the_hub(local_hub, export, tmp_path, capsys):
    """``ctinit-hub push`` twice: the first commit stays downloadable by hash and by tag; the card already on the
    Hub is kept unless --overwrite-card; a branch; an unchanged push makes no commit. (In this process: the
    commands' ``main``, huggingface_hub over HTTP.)"""
    from huggingface_hub import HfApi

    from ctinit_hub.__main__ import main as hub_main

    def ok(*argv):
        assert hub_main(list(argv)) == 0
        out, err = capsys.readouterr()
        assert LOCAL_HUB_TOKEN not in out + err
        return out.strip().splitlines(), err

    out, _ = ok("push", str(export), "--repo", "org/pinned", "--private")
    first = local_hub.head("org/pinned")
    assert out == [f"{local_hub.url}/org/pinned/commit/{first}"] and local_hub.repos["org/pinned"].private
    HfApi().create_tag("org/pinned", tag="v1")
    (export / "extra.txt").write_text("second push\n")
    _, err = ok("push", str(export), "--repo", "org/pinned")
    assert "kept the model card already on org/pinned" in err
    second = local_hub.head("org/pinned")
    assert second != first and "extra.txt" in local_hub.files("org/pinned")
    for pin in (f"org/pinned@{first}", "org/pinned@v1"):
        target = tmp_path / pin.split("@")[1][:8]
        out, _ = ok("pull", pin, "--out", str(target))
        assert out[0] == first and not (target / "extra.txt").exists() and (target / "model.safetensors").is_file()
    out, _ = ok("pull", "org/pinned")
    assert out[0] == second
    from ctinit.cli import main as cli_main  # fine-tune from the pinned tag: the base model is v1's commit

    assert cli_main(["finetune", "--init", "org/pinned@v1", *FINETUNE, "--out", str(tmp_path / "ft")]) == 0
    capsys.readouterr()
    base = json.loads((tmp_path / "ft" / "config.json").read_text())["ctinit"]["base_model"]
    assert base["repo_id"] == "org/pinned" and base["commit"] == first
    ok("push", str(export), "--repo", "org/pinned")  # nothing changed: no new commit
    assert local_hub.head("org/pinned") == second
    (export / "dev.txt").write_text("on a branch\n")
    ok("push", str(export), "--repo", "org/pinned", "--revision", "dev")
    assert "dev.txt" in local_hub.files("org/pinned", "dev") and "dev.txt" not in local_hub.files("org/pinned")
    card = tmp_path / "card.md"
    card.write_bytes(local_hub.files("org/pinned")["README.md"])
    assert metadata_load(card)["library_name"] == "ctinit" and 'from_pretrained("org/pinned")' in card.read_text()
