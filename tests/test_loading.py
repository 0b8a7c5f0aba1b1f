"""Loading initializations: standard transformers backbones, from_pretrained, Hub ids through the HF cache
(hand-built, offline), mocked Hub errors, and one-line refusals of bad input at the CLI."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import ctinit
from ctinit.cli import main as cli_main
from ctinit.errors import CheckpointError, ConfigError
from ctinit.hubio.names import WEIGHTS_NAME, parse_hub_id
from ctinit.loading import load_init, resolve_init, save_init
from ctinit.models import HFBackbone, ImageClassifier, TaskHead

from helpers import make_npz, weights

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "training" / "recipes" / "tiny.yaml"
MAIN = "1" * 40
V1 = "0" * 40


def make_init(path, arch="convnet4-32", seed=0, algorithm="cts"):
    torch.manual_seed(seed)
    return save_init(ctinit.build_backbone(arch), path, {"algorithm": algorithm, "steps": 1, "seed": seed})


def assert_same_state(model, tensors):
    state = (model.model if isinstance(model, HFBackbone) else model).state_dict()
    assert set(state) == set(tensors)
    for k, v in tensors.items():
        assert torch.equal(state[k], v), k


# ------------------------------------------------------------------------------ standard transformers backbones


@pytest.mark.parametrize("arch,model_type", [("hf-vit-tiny", "vit"), ("hf-convnext-tiny", "convnext")])
def test_hf_backbone_is_a_ctinit_backbone_and_saves_as_plain_transformers(tmp_path, arch, model_type):
    backbone = ctinit.build_backbone(arch, image_size=28)
    assert isinstance(backbone, HFBackbone) and backbone.config.model_type == model_type
    assert backbone.config.num_channels == 3 and backbone.feature_dim == 64
    x = torch.randn(2, 3, 28, 28)
    assert backbone(x).shape == (2, 64)
    save_init(backbone, tmp_path / "a", {"algorithm": "reptile"})
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["model_type"] == model_type and config["ctinit"]["algorithm"] == "reptile"
    assert config["architectures"] == [type(backbone.model).__name__]  # ViTModel / ConvNextModel, not the wrapper
    saved = weights(tmp_path / "a")
    assert not any(k.startswith("model.") for k in saved)  # keyed as the base model expects
    # the engine hands save_init the wrapper's own state dict (with the "model." prefix): same file
    save_init(backbone, tmp_path / "b", {"algorithm": "reptile"}, state_dict=backbone.state_dict())
    assert set(weights(tmp_path / "b")) == set(saved)
    loaded = load_init(tmp_path / "a")
    assert isinstance(loaded, HFBackbone)
    assert_same_state(loaded, saved)
    backbone.eval(), loaded.eval()
    assert torch.equal(backbone(x), loaded(x))


def test_vit_features_are_what_transformers_classifier_reads(tmp_path):
    from transformers import ViTForImageClassification

    backbone = ctinit.build_backbone("hf-vit-tiny").eval()
    save_init(backbone, tmp_path / "v")
    clf = ViTForImageClassification.from_pretrained(str(tmp_path / "v"), num_labels=4).eval()
    x = torch.randn(3, 3, 28, 28)
    hidden = clf.vit(pixel_values=x).last_hidden_state[:, 0]
    # two code paths (transformers' ViT vs our backbone's forward) may pick different fp32 kernels: a tolerance
    # from the features' scale, not one machine's rounding
    torch.testing.assert_close(hidden, backbone(x), rtol=1e-5, atol=1e-5 * hidden.abs().max().item())


def test_plain_transformers_loads_exports_without_ctinit(tmp_path):
    for arch in ("hf-vit-tiny", "hf-convnext-tiny"):
        save_init(ctinit.build_backbone(arch), tmp_path / arch, {"algorithm": "cts"})
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["ctinit"] = None  # any import of ctinit would fail
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModelForImageClassification
        out = {{}}
        for arch in ("hf-vit-tiny", "hf-convnext-tiny"):
            d = {str(tmp_path)!r} + "/" + arch
            model = AutoModelForImageClassification.from_pretrained(d, num_labels=7)
            saved = load_file(d + "/model.safetensors")
            base = getattr(model, model.base_model_prefix).state_dict()
            logits = model(pixel_values=torch.randn(2, 3, 28, 28)).logits
            out[arch] = {{"class": type(model).__name__, "keys": sorted(set(saved) - set(base)),
                          "equal": all(torch.equal(base[k], v) for k, v in saved.items()),
                          "logits": list(logits.shape), "ctinit": getattr(model.config, "ctinit", {{}}).get("algorithm")}}
        print(json.dumps(out))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["hf-vit-tiny"]["class"] == "ViTForImageClassification"
    assert out["hf-convnext-tiny"]["class"] == "ConvNextForImageClassification"
    for r in out.values():
        assert r["keys"] == [] and r["equal"] and r["logits"] == [2, 7] and r["ctinit"] == "cts"


def test_meta_train_runs_a_transformers_vit(tmp_path):
    from transformers import AutoModel

    from ctinit_training.meta_train import main as meta_train_main

    code = meta_train_main(["--config", str(TINY), "--out", str(tmp_path), "--no-progress", "backbone=hf-vit-tiny",
                            "steps=4", "reset_period=2", "log_every=2", "max_train_per_class=4", "batch_size=8",
                            "tasks=[builtin:hebrew, builtin:greek]"])
    assert code == 0
    config = json.loads((tmp_path / "init" / "config.json").read_text())
    assert config["model_type"] == "vit" and config["ctinit"]["config"]["backbone"] == "hf-vit-tiny"
    backbone = load_init(tmp_path / "init")
    assert isinstance(backbone, HFBackbone)
    assert_same_state(load_init(tmp_path), weights(tmp_path / "init"))  # the run directory names its init
    auto = AutoModel.from_pretrained(str(tmp_path / "init"))  # plain transformers ViTModel
    assert type(auto).__name__ == "ViTModel"
    for k, v in weights(tmp_path / "init").items():
        assert torch.equal(auto.state_dict()[k], v)


# ------------------------------------------------------------------------------ from_pretrained


def test_from_pretrained_local_dir_gives_backbone_plus_fresh_head(tmp_path):
    make_init(tmp_path / "i")
    model = ctinit.from_pretrained(tmp_path / "i", num_classes=5, seed=0)
    assert isinstance(model, ImageClassifier) and isinstance(model.head, TaskHead) and model.num_classes == 5
    assert_same_state(model.backbone, weights(tmp_path / "i"))
    assert model(torch.randn(2, 3, 28, 28)).shape == (2, 5)
    features = ctinit.from_pretrained(tmp_path / "i")
    assert features.num_classes == 0 and features(torch.randn(2, 3, 28, 28)).shape == (2, 32)
    with pytest.raises(ConfigError, match="num_classes"):
        ctinit.from_pretrained(tmp_path / "i", num_classes=-1)


def test_from_pretrained_then_finetune_in_three_lines(tmp_path):
    make_init(tmp_path / "i")
    npz = make_npz(tmp_path / "bars.npz")
    model = ctinit.from_pretrained(tmp_path / "i")
    result = model.finetune(f"npz:{npz}", steps=3, batch_size=8, progress=False)
    assert 0.0 <= result.test_accuracy <= 1.0 and result.steps == 3
    assert isinstance(model.head, TaskHead) and model.head.num_classes == 3  # the head stays on the model
    with pytest.raises(ConfigError, match="head has 5 classes"):
        ctinit.from_pretrained(tmp_path / "i", num_classes=5).finetune(f"npz:{npz}", steps=1, progress=False)
    with pytest.raises(ConfigError, match="unknown fine-tuning options"):
        model.finetune(f"npz:{npz}", stepz=1)


def test_parse_hub_id():
    assert parse_hub_id("org/name") == ("org/name", None)
    assert parse_hub_id("org/name@v1.2") == ("org/name", "v1.2")
    assert parse_hub_id("hf-hub:org/name@refs/pr/3") == ("org/name", "refs/pr/3")
    for not_an_id in ("runs/cts/init", "/abs/dir", "./dir/x", "name", "org/..", "scratch"):
        assert parse_hub_id(not_an_id) is None


# ------------------------------------------------------------------------------ the Hub, through the cache


def add_snapshot(cache: Path, repo: str, commit: str, src: Path | None, refs=("main",), files=None):
    folder = cache / f"models--{repo.replace('/', '--')}"
    snap = folder / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    (folder / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (folder / "refs" / ref).write_text(commit)
    if src is not None:
        for name in ("config.json", WEIGHTS_NAME):
            shutil.copy(src / name, snap / name)
    for name, data in (files or {}).items():
        (snap / name).write_bytes(data)
    return snap


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A hand-built HF_HUB_CACHE: org/tiny with main and v1 (different weights); offline."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    make_init(tmp_path / "main", seed=1)
    make_init(tmp_path / "v1", seed=2)
    add_snapshot(cache, "org/tiny", MAIN, tmp_path / "main", refs=("main",))
    add_snapshot(cache, "org/tiny", V1, tmp_path / "v1", refs=("v1",))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return SimpleNamespace(cache=cache, main=tmp_path / "main", v1=tmp_path / "v1")


def test_load_by_repo_id_from_offline_cache(hub_cache):
    assert_same_state(load_init("org/tiny"), weights(hub_cache.main))
    assert_same_state(load_init("org/tiny@v1"), weights(hub_cache.v1))
    assert_same_state(load_init("org/tiny", revision=V1), weights(hub_cache.v1))  # a commit hash
    model = ctinit.from_pretrained("org/tiny", num_classes=4, revision="v1")
    assert_same_state(model.backbone, weights(hub_cache.v1))
    source = resolve_init("org/tiny")
    assert source.repo_id == "org/tiny" and source.commit == MAIN
    scratch = load_init("scratch:org/tiny", seed=0)  # same architecture, fresh weights
    assert not torch.equal(scratch.state_dict()["layers.0.weight"], weights(hub_cache.main)["layers.0.weight"])
    with pytest.raises(ConfigError, match="pins revision"):
        load_init("org/tiny@v1", revision="main")


def test_offline_without_cached_copy_is_one_clear_error(hub_cache):
    with pytest.raises(CheckpointError, match=r"org/tiny@v9: no cached copy .*HF_HUB_OFFLINE=1"):
        load_init("org/tiny@v9")
    with pytest.raises(CheckpointError, match="org/unknown@main: no cached copy"):
        load_init("org/unknown")


def test_bad_cached_snapshots_are_refused(hub_cache, tmp_path):
    config = (hub_cache.main / "config.json").read_bytes()
    add_snapshot(hub_cache.cache, "org/pickled", MAIN, None,
                 files={"config.json": config, "pytorch_model.bin": b"\x80\x04not loaded"})
    with pytest.raises(CheckpointError, match="only pickle weights"):
        load_init("org/pickled")
    data = (hub_cache.main / WEIGHTS_NAME).read_bytes()
    add_snapshot(hub_cache.cache, "org/truncated", MAIN, None,
                 files={"config.json": config, WEIGHTS_NAME: data[: len(data) // 3]})
    with pytest.raises(CheckpointError, match="unreadable safetensors"):
        load_init("org/truncated")


def test_cli_finetune_by_repo_id_offline_subprocess(hub_cache, tmp_path):
    npz = make_npz(tmp_path / "bars.npz")
    env = {**os.environ, "HF_HUB_CACHE": str(hub_cache.cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "ctinit.cli", "finetune", "--init", "org/tiny", "--data", f"npz:{npz}",
                           "--steps", "2", "--batch-size", "8", "--json", "--no-progress"],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["repo_id"] == "org/tiny" and report["commit"] == MAIN and report["algorithm"] == "cts"


# ------------------------------------------------------------------------------ the Hub, mocked online


def hub_exc(name, status=404):
    """A huggingface_hub error without a real HTTP response (its constructor wants one)."""
    from huggingface_hub import errors

    cls = getattr(errors, name)
    exc = cls.__new__(cls)
    Exception.__init__(exc, f"{status} Client Error ({name})")
    exc.response = SimpleNamespace(status_code=status, headers={})
    return exc


@pytest.fixture
def online(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    calls = []

    def no_download(*args, **kwargs):
        calls.append((args, kwargs))
        raise AssertionError("snapshot_download must not be called")

    monkeypatch.setattr("huggingface_hub.snapshot_download", no_download)
    return calls


def _info(*files, sha=MAIN):
    return SimpleNamespace(sha=sha, siblings=[SimpleNamespace(rfilename=f) for f in files])


def test_pickle_only_hub_repo_is_refused_before_download(online, monkeypatch):
    monkeypatch.setattr("huggingface_hub.HfApi.model_info",
                        lambda self, repo_id, revision=None, **kw: _info("config.json", "pytorch_model.bin", "README.md"))
    with pytest.raises(CheckpointError, match=r"org/pickle@main: only pickle weights on the Hub \(pytorch_model.bin\)"):
        load_init("org/pickle")
    assert online == []


@pytest.mark.parametrize("name,status,needle", [
    ("RepositoryNotFoundError", 404, "no Hub model repo of that name"),
    ("RevisionNotFoundError", 404, "no revision 'v7'"),
    ("GatedRepoError", 403, "gated Hub repo"),
    ("HfHubHTTPError", 401, "not authorized"),
])
def test_hub_errors_become_one_line(online, monkeypatch, name, status, needle):
    def fail(self, repo_id, revision=None, **kw):
        raise hub_exc(name, status)

    monkeypatch.setattr("huggingface_hub.HfApi.model_info", fail)
    with pytest.raises(CheckpointError, match=needle) as info:
        load_init("org/thing@v7")
    assert "\n" not in str(info.value) and online == []


def test_online_download_fetches_config_and_weights_only(online, monkeypatch, tmp_path):
    make_init(tmp_path / "snap")
    monkeypatch.setattr("huggingface_hub.HfApi.model_info",
                        lambda self, repo_id, revision=None, **kw: _info("config.json", WEIGHTS_NAME, "README.md", sha=V1))
    seen = {}

    def download(repo_id, **kwargs):
        seen.update(kwargs, repo_id=repo_id)
        return str(tmp_path / "snap")

    monkeypatch.setattr("huggingface_hub.snapshot_download", download)
    source = resolve_init("org/tiny@v1")
    assert source.commit == V1 and source.path == tmp_path / "snap"
    # the commit model_info reported is downloaded, not the branch again (no race with a push in between)
    assert seen["repo_id"] == "org/tiny" and seen["revision"] == V1 and seen["local_files_only"] is False
    assert seen["allow_patterns"] == ["config.json", WEIGHTS_NAME] and "*.bin" in seen["ignore_patterns"]


def test_entry_not_found_and_unreachable_hub(online, monkeypatch, hub_cache):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.HfApi.model_info",
                        lambda self, repo_id, revision=None, **kw: _info("config.json", WEIGHTS_NAME))

    def missing(repo_id, **kwargs):
        raise hub_exc("RemoteEntryNotFoundError", 404)

    monkeypatch.setattr("huggingface_hub.snapshot_download", missing)
    with pytest.raises(CheckpointError, match="a file is missing in this Hub repo"):
        load_init("org/tiny")

    # The Hub cannot be reached: the cached copy is used (a real snapshot_download with local_files_only)
    import huggingface_hub._snapshot_download as real

    monkeypatch.setattr("huggingface_hub.snapshot_download", real.snapshot_download)

    def unreachable(self, repo_id, revision=None, **kw):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr("huggingface_hub.HfApi.model_info", unreachable)
    assert_same_state(load_init("org/tiny"), weights(hub_cache.main))
    with pytest.raises(CheckpointError, match="the Hub cannot be reached and there is no cached copy"):
        load_init("org/elsewhere")


# ------------------------------------------------------------------------------ bad input at the CLI


@pytest.fixture
def bad_inits(tmp_path):
    good = make_init(tmp_path / "good")
    pickle_only = tmp_path / "pickle"
    pickle_only.mkdir()
    shutil.copy(good / "config.json", pickle_only / "config.json")
    (pickle_only / "pytorch_model.bin").write_bytes(b"never unpickled")
    truncated = tmp_path / "truncated"
    shutil.copytree(good, truncated)
    data = (truncated / WEIGHTS_NAME).read_bytes()
    (truncated / WEIGHTS_NAME).write_bytes(data[:100])
    mismatch = tmp_path / "mismatch"
    shutil.copytree(good, mismatch)
    cfg = json.loads((mismatch / "config.json").read_text())
    cfg["hidden_size"] = 16
    (mismatch / "config.json").write_text(json.dumps(cfg))
    wrong_arch = tmp_path / "wrong_arch"
    shutil.copytree(good, wrong_arch)
    (wrong_arch / "config.json").write_text(json.dumps({**cfg, "model_type": "ctinit-resnet", "depth": 20}))
    return tmp_path


@pytest.mark.parametrize("init,needle", [
    ("pickle", "only pickle weights (pytorch_model.bin)"),
    ("truncated", "unreadable safetensors"),
    ("mismatch", "tensor 'layers.0.weight' has shape (32, 3, 3, 3) but the config's architecture needs (16, 3, 3, 3)"),
    ("wrong_arch", "missing tensor 'stem.0.weight'"),
    ("nowhere/at-all", "no cached copy"),
    ("scratch:resnet99", "not a built-in backbone"),
])
def test_cli_bad_init_is_one_line(bad_inits, hub_cache, capsys, monkeypatch, init, needle):
    npz = make_npz(bad_inits / "bars.npz")
    monkeypatch.chdir(bad_inits)
    args = ["finetune", "--init", init, "--data", f"npz:{npz}", "--steps", "1", "--no-progress"]
    assert cli_main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctinit: error:") and needle in lines[0], captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    with pytest.raises(CheckpointError):
        cli_main(args + ["--debug"])


def test_cli_unknown_task_spec_fails_before_loading(capsys):
    assert cli_main(["finetune", "--init", "org/never-downloaded", "--data", "klingon:x", "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown task spec 'klingon:x'" in err[0]


def test_offline_pull_into_a_folder_copies_the_cached_copy(hub_cache, tmp_path, capsys):
    from ctinit_hub.__main__ import main as hub_main

    out = tmp_path / "pulled"
    assert hub_main(["pull", "org/tiny", "--out", str(out)]) == 0
    assert [l for l in capsys.readouterr().out.splitlines()][-1] == str(out)
    assert not (out / "model.safetensors").is_symlink()  # real files, not links into the cache
    assert_same_state(load_init(out), weights(hub_cache.main))


def test_offline_mode_is_named_and_the_typed_revision_kept(monkeypatch):
    from huggingface_hub import constants

    from ctinit.hubio.errors import hub_error

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    error = hub_error(ConnectionError("offline"), "org/tiny", "v3")
    assert "org/tiny@v3" in str(error) and "HF_HUB_OFFLINE=1 is set" in str(error) and "network" not in str(error)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    error = hub_error(ConnectionError("down"), "org/tiny", "v3")
    assert "org/tiny@v3" in str(error) and "cannot be reached" in str(error)
