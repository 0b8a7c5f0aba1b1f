"""Meta-training -> export -> load -> fine-tune, through the real entry points, on tiny data."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

import ctinit
from ctinit.cli import main as cli_main
from ctinit.errors import CheckpointError, ConfigError
from ctinit.hubio.names import WEIGHTS_NAME
from ctinit.loading import load_init, save_init
from ctinit_training.config import load_config
from ctinit_training.meta_train import main as meta_train_main

from helpers import make_npz  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "training" / "recipes" / "tiny.yaml"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert meta_train_main(["--config", str(TINY), "--out", str(out), "--no-progress"]) == 0
    return out




def test_meta_train_writes_init_config_and_logs(tiny_run):
    init = tiny_run / "init"
    assert (init / "config.json").is_file() and (init / WEIGHTS_NAME).is_file()
    config = json.loads((init / "config.json").read_text())
    assert config["model_type"] == "ctinit-convnet"
    assert config["ctinit"]["algorithm"] == "cts"
    assert [t["name"] for t in config["ctinit"]["tasks"]] == ["latin", "greek", "hebrew"]
    assert all(t["train_size"] > 0 for t in config["ctinit"]["tasks"])
    lines = (tiny_run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["step"] for l in lines] == [10, 20]
    assert json.loads(lines[-1])["phi_distance"] > 0
    assert (tiny_run / "train.log").read_text().count("step") >= 2
    assert load_config(tiny_run / "config.yaml").steps == 20  # the resolved config reloads


def test_export_holds_phi_only_and_loads_bitwise(tiny_run):
    from safetensors import safe_open

    with safe_open(str(tiny_run / "init" / WEIGHTS_NAME), "pt") as f:
        keys = set(f.keys())
        assert f.metadata()["algorithm"] == "cts"
    assert not any(k.startswith("head") or "classifier" in k for k in keys)
    model = load_init(tiny_run / "init")
    auto = AutoModel.from_pretrained(str(tiny_run / "init"))  # plain transformers, after `import ctinit`
    assert isinstance(auto, ctinit.models.CtinitConvNetModel)
    for (k, v), (k2, v2) in zip(model.state_dict().items(), auto.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    scratch = load_init(f"scratch:{tiny_run / 'init'}", seed=0)
    assert type(scratch) is type(model)
    assert not torch.equal(scratch.state_dict()["layers.0.weight"], model.state_dict()["layers.0.weight"])


def test_save_load_roundtrip_resnet(tmp_path):
    model = ctinit.build_backbone("resnet20")
    save_init(model, tmp_path / "r", {"algorithm": "reptile"})
    loaded = load_init(tmp_path / "r")
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_bad_initializations_are_refused(tmp_path, tiny_run):
    import shutil

    pickle_only = tmp_path / "pickle"
    pickle_only.mkdir()
    shutil.copy(tiny_run / "init" / "config.json", pickle_only / "config.json")
    (pickle_only / "pytorch_model.bin").write_bytes(b"not really")
    with pytest.raises(CheckpointError, match="only pickle weights"):
        load_init(pickle_only)
    truncated = tmp_path / "trunc"
    shutil.copytree(tiny_run / "init", truncated)
    data = (truncated / WEIGHTS_NAME).read_bytes()
    (truncated / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="unreadable safetensors"):
        load_init(truncated)
    mismatch = tmp_path / "mismatch"
    shutil.copytree(tiny_run / "init", mismatch)
    cfg = json.loads((mismatch / "config.json").read_text())
    cfg["hidden_size"] = 16
    (mismatch / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"tensor 'layers.0.weight' has shape \(32, 3, 3, 3\).*\(16, 3, 3, 3\)"):
        load_init(mismatch)
    with pytest.raises(CheckpointError, match="not a built-in backbone"):
        load_init("scratch:resnet99")


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown config keys"):
        load_config(TINY, ["stepz=3"])
    with pytest.raises(ConfigError, match="not key=value"):
        load_config(TINY, ["steps"])
    with pytest.raises(ConfigError, match="meta_interval"):
        load_config(TINY, ["meta_interval=50"])
    with pytest.raises(ConfigError, match="algorithm = .maml.: input should be .cts."):
        load_config(TINY, ["algorithm=maml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    assert load_config(TINY, ["meta_optimizer.lr=0.5", "steps=3"]).meta_optimizer.lr == 0.5


def test_meta_train_cli_error_is_one_line(tmp_path, capsys):
    code = meta_train_main(["--config", str(TINY), "--out", str(tmp_path), "tasks=[builtin:klingon]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "klingon" in err[0]


@pytest.mark.parametrize("algorithm", ["reptile", "fomaml", "leap", "mtl", "fomaml-cts", "scratch"])
def test_every_algorithm_runs_from_a_recipe(tmp_path, algorithm):
    overrides = [f"algorithm={algorithm}", "steps=4", "reset_period=2", "log_every=2", "max_train_per_class=4",
                 "tasks=[builtin:hebrew, builtin:greek]", "batch_size=8"]
    assert meta_train_main(["--config", str(TINY), "--out", str(tmp_path), "--no-progress", *overrides]) == 0
    assert load_init(tmp_path / "init") is not None


def test_finetune_cli_json_and_init_beats_nothing_breaks(tmp_path, tiny_run, capsys):
    npz = make_npz(tmp_path / "bars.npz")
    code = cli_main(["finetune", "--init", str(tiny_run / "init"), "--data", f"npz:{npz}", "--steps", "30",
                     "--batch-size", "16", "--json", "--no-progress", "--eval-every", "10"])
    out, err = capsys.readouterr()
    assert code == 0
    report = json.loads(out)  # stdout is exactly one JSON object
    assert 0.0 <= report["test_accuracy"] <= 1.0
    assert report["test_accuracy"] > 0.6  # bars are easy: chance is 1/3
    assert [s for s, _ in report["curve"]] == [10, 20, 30]
    assert report["num_classes"] == 3 and report["algorithm"] == "cts"
    assert "ctinit finetune" in err


def test_finetune_is_deterministic_for_a_seed(tmp_path, capsys):
    npz = make_npz(tmp_path / "bars.npz")
    results = []
    for _ in range(2):
        assert cli_main(["finetune", "--init", "scratch:convnet4-32", "--data", f"npz:{npz}", "--steps", "5",
                         "--batch-size", "8", "--json", "--no-progress", "--seed", "3"]) == 0
        results.append(json.loads(capsys.readouterr().out)["test_loss"])
    assert results[0] == results[1]


@pytest.mark.parametrize("data,needle", [
    ("npz:{tmp}/missing.npz", "missing.npz: file not found"),
    ("npz:{tmp}/garbage.npz", "garbage.npz"),
    ("nonsense", "unknown task spec"),
])
def test_finetune_cli_bad_data_is_one_line(tmp_path, capsys, data, needle):
    (tmp_path / "garbage.npz").write_bytes(b"this is not an npz archive")
    code = cli_main(["finetune", "--init", "scratch:convnet4-32", "--data", data.format(tmp=tmp_path), "--steps", "2",
                     "--no-progress"])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("ctinit: error:") and needle in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""


def test_console_script_exit_code_and_single_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ctinit.cli", "finetune", "--init", "scratch:convnet4-32",
                           "--data", f"npz:{tmp_path}/nope.npz", "--steps", "1"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "nope.npz" in proc.stderr
    assert proc.stdout == ""
