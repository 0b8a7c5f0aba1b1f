"""The meta-training pipeline: processes, checkpoints and resume, mixed precision, config errors."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import ctinit_training.engine_setup as engine_setup
from ctinit.errors import CheckpointError, ConfigError
from ctinit.meta import TrajectoryEngine
from ctinit.schema import to_dict
from ctinit_training.config import changed_keys, load_config
from ctinit_training.distributed import shard_tasks
from ctinit_training.meta_train import main, run

from helpers import make_npz, weights

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "training" / "recipes" / "tiny.yaml")
# CPU kernels round differently with different thread counts, and small-batch training amplifies last-bit
# differences; torchrun gives each process one thread, so every reference run here uses one thread too.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def phi(run_dir):
    return weights(Path(run_dir) / "init")


def same_phi(a, b, atol=0.0):
    pa, pb = phi(a), phi(b)
    assert pa.keys() == pb.keys()
    return max((pa[k].double() - pb[k].double()).abs().max().item() for k in pa) <= atol


def train_cmd(out, *overrides, launcher=(sys.executable, "-m")):
    return [*launcher, "ctinit_training.meta_train", "--config", TINY, "--out", str(out), "--no-progress", *overrides]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 1-process run of 60 steps with checkpoints every 20."""
    out = tmp_path_factory.mktemp("reference")
    subprocess.run(train_cmd(out, "steps=60", "checkpoint_every=20", "seed=0"), env=ENV, check=True,
                   capture_output=True)
    return out


def test_shards_are_contiguous_and_uneven_splits_work():
    assert shard_tasks(5, 2) == [[0, 1], [2, 3, 4]]
    assert shard_tasks(3, 3) == [[0], [1], [2]]
    with pytest.raises(ConfigError, match="3 processes but only 2 tasks"):
        shard_tasks(2, 3)


def test_two_processes_match_one(reference, tmp_path):
    proc = subprocess.run(train_cmd(tmp_path, "steps=60", "checkpoint_every=20", "seed=0",
                                    launcher=(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m")),
                          env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, [l for l in proc.stderr.splitlines() if "meta_train" in l]
    assert "world size 2" in proc.stderr and "process 1: greek, hebrew" in proc.stderr
    assert same_phi(reference, tmp_path, atol=1e-5)
    meta = json.loads((tmp_path / "checkpoints" / "step-60" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["task_map"] == [[0], [1, 2]]


def test_sigkill_then_resume_is_bitwise(reference, tmp_path):
    proc = subprocess.Popen(train_cmd(tmp_path, "steps=60", "checkpoint_every=20", "seed=0", "log_every=1"),
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = tmp_path / "checkpoints" / "step-20"
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "init").exists(), "the run finished before it could be killed"
    resumed = subprocess.run(train_cmd(tmp_path, "steps=60", "checkpoint_every=20", "seed=0", "log_every=1", "--resume"),
                             env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stderr
    assert same_phi(reference, tmp_path)  # bitwise
    steps = [json.loads(l)["step"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 61))  # no record lost or repeated


def test_sigterm_writes_a_checkpoint_and_resume_matches(reference, tmp_path):
    proc = subprocess.Popen(train_cmd(tmp_path, "steps=60", "checkpoint_every=20", "seed=0"), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "checkpoints" / "step-20").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "continue with --resume" in err
    assert not (tmp_path / "init").exists()
    resumed = subprocess.run(train_cmd(tmp_path, "steps=60", "checkpoint_every=20", "seed=0", "--resume"), env=ENV,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert same_phi(reference, tmp_path)


def test_resume_refuses_a_changed_config_and_world_size(reference, tmp_path):
    with pytest.raises(ConfigError, match=r"\['meta_optimizer'\]"):
        run(load_config(TINY, ["steps=60", "checkpoint_every=20", "meta_optimizer.lr=0.5"]), reference, progress=False,
            resume=True)
    meta_path = reference / "checkpoints" / "step-60" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "world_size": 4}))
    try:
        with pytest.raises(CheckpointError, match="resume it with 4 processes"):
            run(load_config(TINY, ["steps=60", "checkpoint_every=20"]), reference, progress=False, resume=True)
    finally:
        meta_path.write_text(json.dumps(meta))


def test_checkpoints_are_pruned_and_complete(reference):
    root = reference / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-20", "step-40", "step-60"]  # keep_checkpoints = 3
    files = sorted(p.name for p in (root / "step-60").iterdir())
    assert files == ["meta.json", "rank-0.json", "rank-0.safetensors"]


def test_bf16_finishes_with_finite_phi(tmp_path):
    assert main(["--config", TINY, "--out", str(tmp_path), "--no-progress", "mixed_precision=bf16", "steps=6"]) == 0
    assert all(torch.isfinite(v.float()).all() for v in phi(tmp_path).values())
    assert "precision bf16" in (tmp_path / "train.log").read_text()


def nan_engine(poison_steps):
    """The engine, with task 0's loss NaN at the given global steps."""

    class PoisonedEngine(TrajectoryEngine):
        def __init__(self, *args, **kwargs):
            from ctinit.meta.step import classification_loss

            def loss_fn(backbone, head, batch):
                loss, acc = classification_loss(backbone, head, batch)
                if head is self.heads[0] and self.step_count in poison_steps:
                    loss = loss * float("nan")
                return loss, acc

            super().__init__(*args, loss_fn=loss_fn, **kwargs)
    return PoisonedEngine


def test_injected_nan_is_skipped_and_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(engine_setup, "TrajectoryEngine", nan_engine({3, 4}))
    assert main(["--config", TINY, "--out", str(tmp_path), "--no-progress", "steps=10", "log_every=5"]) == 0
    records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["skipped_steps"] == {"latin": 2.0, "greek": 0.0, "hebrew": 0.0}
    assert all(torch.isfinite(v.float()).all() for v in phi(tmp_path).values())
    assert json.loads((tmp_path / "init" / "config.json").read_text())["ctinit"]["skipped_steps"] == 2


def test_too_many_nonfinite_steps_stop_the_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(engine_setup, "TrajectoryEngine", nan_engine(set(range(1, 100))))
    code = main(["--config", TINY, "--out", str(tmp_path), "--no-progress", "steps=10", "max_nonfinite_steps=3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("ctinit-train: error: task latin had a non-finite inner loss 3 steps in a row")


@pytest.mark.parametrize("overrides,needle", [
    (["reset_period=5", "meta_interval=10"], "meta_interval (10) is larger than reset_period"),
    (["algorithm=mtl", "meta_interval=2"], "meta_interval (2) is larger than reset_period K (1)"),  # MTL's own K
    (["mixed_precision=fp8"], "mixed_precision"),
    (["checkpoint_every=-1"], "checkpoint_every"),
    (["device=cuda:3"], "device"),
    (["execution=grouped"], "execution = 'grouped': input should be 'auto', 'sequential' or 'batched'"),
    (["tasks=[npz:/nonexistent/x.npz]"], "x.npz"),
    (["warmup=3"], "unknown config keys ['warmup']"),
])
def test_config_errors_are_one_line_before_training(tmp_path, capsys, overrides, needle):
    assert main(["--config", TINY, "--out", str(tmp_path), "--no-progress", *overrides]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not (tmp_path / "init").exists()


@pytest.mark.parametrize("execution", ["sequential", "batched"])
def test_execution_reaches_the_engine(tmp_path, execution):
    assert main(["--config", TINY, "--out", str(tmp_path), "--no-progress", "steps=2", f"execution={execution}"]) == 0
    assert f"execution: {execution} (requested)" in (tmp_path / "train.log").read_text()


def test_execution_is_result_affecting_on_resume_and_defaults_for_older_checkpoints():
    config = to_dict(load_config(TINY))
    assert config["execution"] == "auto"
    assert changed_keys(config, {**config, "execution": "batched"}) == ["execution"]
    older = {k: v for k, v in config.items() if k != "execution"}  # a checkpoint from before the key existed
    assert changed_keys(older, config) == []
    assert changed_keys(older, {**config, "execution": "sequential"}) == ["execution"]


def test_more_processes_than_tasks_is_refused_before_training(tmp_path):
    proc = subprocess.run(train_cmd(tmp_path, "tasks=[builtin:latin]",
                                    launcher=(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m")),
                          env=ENV, capture_output=True, text=True)
    assert proc.returncode != 0
    ours = [l for l in proc.stderr.splitlines() if l.startswith("ctinit-train:")]
    assert ours and all("2 processes but only 1 tasks: launch at most 1 processes" in l for l in ours)
    assert "training/meta_train.py" not in proc.stderr  # torchrun reports the exit code, our processes no traceback


def test_meta_validation_logs_accuracy_and_keeps_the_best(tmp_path):
    make_npz(tmp_path / "val.npz", n_per_class=20)
    out = tmp_path / "run"
    assert main(["--config", TINY, "--out", str(out), "--no-progress", "steps=10",
                 f"validation={{every: 5, tasks: [npz:{tmp_path / 'val.npz'}], steps: 3, batch_size: 16}}"]) == 0
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if "validation_accuracy" in r]
    assert [r["step"] for r in val] == [5, 10]
    best = max(val, key=lambda r: r["validation_accuracy"])
    assert val[-1]["best"] == {"accuracy": best["validation_accuracy"], "step": best["step"]}
    saved = json.loads((out / "best" / "config.json").read_text())["ctinit"]
    assert saved["steps"] == best["step"]


def test_bundled_recipes_are_valid():
    for name in ("tiny", "quickstart", "paper"):
        config = load_config(ROOT / "training" / "recipes" / f"{name}.yaml")
        assert config.tasks
    with pytest.raises(ConfigError, match="validation.tasks is empty"):
        load_config(TINY, ["validation.every=5"])


def test_zoo_recipes_load_by_name_and_keep_the_papers_ratio():
    from ctinit_training.config import recipe_path

    names = sorted(p.stem for p in (ROOT / "training" / "recipes" / "zoo").glob("*.yaml"))
    assert len(names) >= 4
    for name in names:
        config = load_config(recipe_path(f"zoo/{name}"))
        assert config.steps / config.reset_period >= 100, name  # the paper's regime (issue 19)
    with pytest.raises(ConfigError, match="zoo/glyph-convnet4-32"):  # the known names are listed
        recipe_path("zoo/no-such-entry")
