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


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def cached_snapshots(repo_id: str) -> list[Path]:
    folder = Path(os.environ["HF_HUB_CACHE"]) / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return sorted(folder.iterdir()) if folder.is_dir() else []


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny meta-training run (no Hub), exported and pushed by the tests."""
    from ctinit_training.meta_train import main as meta_train_main

    out = tmp_path_factory.mktemp("http-run") / "run"
    assert meta_train_main(["--config", str(TINY), "--out", str(out), *TRAIN]) == 0
    return out


@pytest.fixture
def export(trained_run, tmp_path):
    out = tmp_path / "export"
    run("ctinit-hub", "export", str(trained_run), str(out), "--license", "mit")
    return out


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


def test_push_pins_revisions_and_keeps_the_card_on_the_hub(local_hub, export, tmp_path):
    """``ctinit-hub push`` twice: the first commit stays downloadable by hash and by tag; the card already on the
    Hub is kept unless --overwrite-card; a branch; an unchanged push makes no commit."""
    from huggingface_hub import HfApi

    out, _ = run("ctinit-hub", "push", str(export), "--repo", "org/pinned", "--private")
    first = local_hub.head("org/pinned")
    assert out.strip() == f"{local_hub.url}/org/pinned/commit/{first}" and local_hub.repos["org/pinned"].private
    HfApi().create_tag("org/pinned", tag="v1")
    (export / "extra.txt").write_text("second push\n")
    _, err = run("ctinit-hub", "push", str(export), "--repo", "org/pinned")
    assert "kept the model card already on org/pinned" in err
    second = local_hub.head("org/pinned")
    assert second != first and "extra.txt" in local_hub.files("org/pinned")
    for pin in (f"org/pinned@{first}", "org/pinned@v1"):
        out, _ = run("ctinit-hub", "pull", pin, "--out", str(tmp_path / pin.split("@")[1][:8]))
        assert out.splitlines()[0] == first and not (tmp_path / pin.split("@")[1][:8] / "extra.txt").exists()
    out, _ = run("ctinit-hub", "pull", "org/pinned")
    assert out.splitlines()[0] == second
    run("ctinit-hub", "push", str(export), "--repo", "org/pinned")  # nothing changed: no new commit
    assert local_hub.head("org/pinned") == second
    run("ctinit-hub", "push", str(export), "--repo", "org/pinned", "--revision", "dev", "--overwrite-card")
    assert local_hub.head("org/pinned", "dev") != second and local_hub.head("org/pinned") == second

    # a private repo without a token: one line, exit 2, nothing cached
    _, err = run("ctinit-hub", "pull", "org/pinned", env={"HF_TOKEN": ""}, expect=2)
    assert "no Hub model repo of that name (if it is private, set HF_TOKEN" in one_line(err)
    _, err = run("ctinit-hub", "pull", "org/pinned@no-such-tag", expect=2)
    assert "no revision 'no-such-tag'" in one_line(err)
    _, err = run("ctinit-hub", "pull", "org/never-made", expect=2)
    assert "no Hub model repo of that name" in one_line(err)


def test_push_zoo_over_http(local_hub, tmp_path, monkeypatch):
    """``ctinit-hub push-zoo --org`` pushes the zoo entries it can (the registry's weights), with their cards."""
    from ctinit import zoo

    entries = [name for name in zoo.names() if zoo.weights_path(name).is_file()] if hasattr(zoo, "weights_path") else []
    if not entries:
        pytest.skip("no zoo entry with local weights in this checkout")
    out, _ = run("ctinit-hub", "push-zoo", "--org", "org")
    for line in out.splitlines():
        item = json.loads(line)
        files = local_hub.files(item["repo_id"])
        assert item["commit"] == local_hub.head(item["repo_id"]) and "model.safetensors" in files
        assert metadata_load_bytes(files["README.md"], tmp_path)["library_name"] in ("ctinit", "transformers")


def metadata_load_bytes(data: bytes, tmp_path: Path) -> dict:
    path = tmp_path / "card.md"
    path.write_bytes(data)
    return metadata_load(path)
