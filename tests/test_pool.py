"""Task pools (active_tasks): the seeded draw, task state kept between turns, SIGKILL/resume, bad input."""
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

from ctinit.errors import ConfigError
from ctinit.meta import TrajectoryEngine
from ctinit.models import TaskHead, build_backbone
from ctinit.tasks import BatchSampler, load_task
from ctinit_training import checkpoint as ckpt
from ctinit_training.meta_train import main
from ctinit_training.pool import TaskPool, pool_share

from helpers import make_npz
from test_training import ENV, same_phi


# ----------------------------------------------------------------------------- the draw
def test_draws_are_seeded_without_replacement_and_every_task_gets_equal_turns():
    def sequence(seed, draws=10):
        pool = TaskPool(range(10), 4, seed)
        out = []
        for _ in range(draws):
            pool.draw()
            out.append(sorted(pool.slots))
        return out

    a = sequence(0)
    assert a == sequence(0) and a != sequence(1)
    assert all(len(set(d)) == 4 for d in a)  # a task never holds two slots

    pool = TaskPool(range(10), 4, 0)
    picks = []
    for _ in range(10):
        before = list(pool.slots)
        changes = pool.draw()
        drawn = [i for _, _, i in changes] + [i for i in before if i in pool.slots]  # incoming + staying
        picks.append(set(drawn))
        if before:  # tasks drawn again keep their slots; only freed slots change
            assert all(pool.slots[s] == i for s, i in enumerate(before) if i in pool.slots)
            assert all(out == before[s] and before[s] not in pool.slots for s, out, _ in changes)
    # Without replacement: the first two draws and half of the third are one permutation of the pool ...
    assert len(picks[0] | picks[1]) == 8 and len(picks[0] | picks[1] | picks[2]) == 10
    # ... and 10 draws of 4 are 4 whole permutations: every task gets exactly 4 turns.
    counts = np.bincount([i for p in picks for i in p], minlength=10)
    assert counts.tolist() == [4] * 10


def test_a_pool_as_large_as_the_active_set_never_swaps():
    pool = TaskPool([3, 4, 5], 3, 0)
    assert len(pool.draw()) == 3
    assert all(pool.draw() == [] for _ in range(5)) and sorted(pool.slots) == [3, 4, 5]


def test_pool_share_refuses_uneven_splits_and_small_pools():
    assert pool_share(8, 40, 2) == 4 and pool_share(8, 8, 1) == 8
    with pytest.raises(ConfigError, match=r"active_tasks \(8\) does not divide evenly over 3 processes"):
        pool_share(8, 40, 3)
    with pytest.raises(ConfigError, match=r"active_tasks \(8\) is larger than the pool: 'tasks' lists 5 tasks"):
        pool_share(8, 5, 1)


# ----------------------------------------------------------------------------- state between turns
CLASSES = [3, 5, 4, 6]  # different head sizes: swapping changes a slot's head width
K = 3


def _sampler(i):
    gen = torch.Generator().manual_seed(i)
    x = torch.randint(0, 256, (40, 1, 28, 28), generator=gen, dtype=torch.uint8)
    return BatchSampler(x, torch.arange(40) % CLASSES[i], 8, seed=100 + i)


def _head(i, feature_dim):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1000 + i)
        return TaskHead(feature_dim, CLASSES[i])


def _engine(tasks, samplers, **kwargs):
    torch.manual_seed(0)
    backbone = build_backbone("convnet4-32", 28)
    # Meta learning rate 0: phi never moves, so a task's training depends only on its own state and batches, and its
    # state after its turns in the pool must equal its state after as many steps alone.
    engine = TrajectoryEngine(backbone, [_head(i, backbone.feature_dim) for i in tasks], [samplers[i] for i in tasks],
                              rule="cts", reset_period=K, meta_exclude=["^layers.1.bias$"], **kwargs)
    engine.meta_optimizer.param_groups[0]["lr"] = 0.0  # (a config refuses lr 0; here it isolates the tasks)
    return engine


def _flat(state):
    out = {f"head.{k}": v for k, v in state["head"].items()}
    out.update({f"backbone.{k}": v for k, v in state["backbone"].items()})
    for i, s in state["optimizer"]["state"].items():
        out.update({f"optimizer.{i}.{k}": v for k, v in s.items() if torch.is_tensor(v)})
    if state["scaler"]:
        out["scaler.scale"] = torch.tensor(state["scaler"]["scale"])
    return out


@pytest.mark.parametrize("execution,fp16", [("sequential", False), ("batched", False), ("sequential", True)])
def test_a_task_continues_from_its_last_turn_whatever_its_slot(execution, fp16):
    kwargs = {"execution": execution}
    if fp16:
        kwargs.update(grad_scaling=True, autocast=lambda: torch.autocast("cpu", dtype=torch.float16))
    # Batched execution rounds differently from a task trained alone, and small-batch training amplifies that
    # (a 2-task batched engine without any pool drifts as much): fewer draws there, compared with a tolerance.
    draws = 8 if execution == "sequential" and not fp16 else 4  # (fp16 autocast is slow on the CPU)
    samplers = {i: _sampler(i) for i in range(4)}
    pool = TaskPool(range(4), 2, seed=1)  # (a seed whose first draws move some task to the other slot)
    pool.draw()
    engine = _engine(pool.slots, samplers, **kwargs)
    assert engine.execution == execution
    trained, slots_seen, resumed = {i: 0 for i in range(4)}, {i: set() for i in range(4)}, 0
    for step in range(1, draws * K + 1):
        engine.step()
        for s, i in enumerate(pool.slots):
            trained[i] += 1
            slots_seen[i].add(s)
        if step % K == 0:
            stored = dict(pool.stored)
            for slot, _, incoming in pool.rotate(engine, lambda i: _head(i, 32), samplers.get):
                now = _flat(engine.task_state(slot))
                if incoming in stored:  # a returning task is exactly as it left
                    resumed += 1
                    before = _flat(stored[incoming])
                    assert now.keys() == before.keys() and all(torch.equal(now[k], before[k]) for k in now)
                else:  # a first turn: the seeded head, no optimizer state, the initialization's BN statistics
                    assert torch.equal(now["head.weight"], _head(incoming, 32).weight)
                    assert not any(k.startswith("optimizer.") for k in now)
                    initial = engine.phi_module.state_dict()
                    assert all(torch.equal(v, initial[k[len("backbone."):]]) for k, v in now.items() if k.startswith("backbone."))
    # draws x 2 slots over 4 tasks: draws / 2 turns of K steps per task
    assert resumed >= draws // 2 and all(n == draws // 2 * K for n in trained.values())
    assert any(len(s) == 2 for s in slots_seen.values())  # some task trained in both slots

    final = {i: _flat(engine.task_state(s)) for s, i in enumerate(pool.slots)}
    final.update({i: _flat(s) for i, s in pool.stored.items()})
    for i in range(4):  # the same task trained alone for as many steps (resets every K, as in the pool)
        alone = _engine([i], {i: _sampler(i)}, **{**kwargs, "execution": "sequential"})
        for _ in range(trained[i]):
            alone.step()
        expected = _flat(alone.task_state(0))
        assert expected.keys() == final[i].keys()
        for k, v in expected.items():
            if execution == "sequential":  # the same kernels: bitwise
                assert torch.equal(final[i][k], v), (i, k)
            elif not k.startswith("optimizer."):  # (momenta of parameters with ~0 gradient are rounding noise)
                # a wrong state (another task's head, a fresh one) would be off by the values' own scale
                error = (final[i][k].double() - v.double()).abs().max().item()
                assert error <= 2e-2 * v.double().abs().max().item() + 1e-6, (i, k, error)


# ----------------------------------------------------------------------------- the trainer
def _pool_recipe(tmp_path, n_tasks, **overrides):
    """A recipe over n tiny npz tasks (3 to 5 classes) in tmp_path; returns its path."""
    specs = []
    for i in range(n_tasks):
        path = tmp_path / f"t{i:02d}.npz"
        if not path.exists():
            make_npz(path, n_per_class=8, classes=3 + i % 3, seed=i)
        specs.append(f"npz:{path}")
    recipe = {"algorithm": "cts", "backbone": "convnet4-32", "image_size": 16, "tasks": specs, "steps": 24,
              "batch_size": 8, "reset_period": 3, "meta_optimizer": {"name": "sgd", "lr": 0.05}, "log_every": 1,
              "checkpoint_every": 7, **overrides}
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _cmd(recipe, out, *extra, launcher=(sys.executable, "-m")):
    return [*launcher, "ctinit_training.meta_train", "--config", str(recipe), "--out", str(out), "--no-progress", *extra]


def test_a_pool_run_killed_and_resumed_gives_the_same_phi(tmp_path):
    recipe = _pool_recipe(tmp_path, 42, active_tasks=8)
    reference = tmp_path / "reference"  # in this process: one thread (conftest), as the subprocesses (ENV)
    assert main(["--config", str(recipe), "--out", str(reference), "--no-progress"]) == 0

    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(recipe, out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "checkpoints" / "step-7").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "init").exists(), "the run finished before it could be killed"
    assert main(["--config", str(recipe), "--out", str(out), "--no-progress", "--resume"]) == 0
    assert "resumed from" in (out / "train.log").read_text()
    assert same_phi(reference, out)  # bitwise

    records = [json.loads(l) for l in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 25))
    assert all(len(r["active_tasks"]) == 8 and set(r["task_loss"]) == set(r["active_tasks"]) for r in records)
    assert records[2]["active_tasks"] != records[3]["active_tasks"]  # a new draw after step 3
    log = (reference / "train.log").read_text()
    assert "task pool: 42 tasks, 8 active" in log and "step 21: draw 8: active tasks" in log
    # 8 draws of 8 from 42: every task had a turn, and the checkpoint holds the state of every task between turns
    state = ckpt.read_state(reference / "checkpoints" / "step-21" / "rank-0")
    assert len(state["pool"]["stored"]) == 42 - 8 and state["pool"]["draws"] == 8
    assert sorted(state["pool"]["slots"] + list(state["pool"]["stored"])) == list(range(42))


def test_pool_over_two_processes(tmp_path):
    recipe = _pool_recipe(tmp_path, 6, active_tasks=4, steps=10, checkpoint_every=10)
    proc = subprocess.run(_cmd(recipe, tmp_path / "run",
                               launcher=(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m")),
                          env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "4 active (2 per process, each from its block)" in proc.stderr
    blocks = [{"t00", "t01", "t02"}, {"t03", "t04", "t05"}]
    for record in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()):
        active = set(record["active_tasks"])
        assert len(active) == 4 and all(len(active & b) == 2 for b in blocks)


def test_pool_resizes_mixed_image_sizes_and_channels(tmp_path):
    make_npz(tmp_path / "small.npz", size=20)
    make_npz(tmp_path / "large.npz", size=40, classes=4)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "rgb.npz", x=rng.integers(0, 255, (30, 32, 32, 3), dtype=np.uint8), y=np.arange(30) % 5)
    specs = [f"npz:{tmp_path / n}.npz" for n in ("small", "large", "rgb")]
    assert {load_task(s, image_size=28).x_train.shape[2:] for s in specs} == {(28, 28)}
    out = tmp_path / "run"
    assert main(["--config", str(_pool_recipe(tmp_path, 0, tasks=specs, active_tasks=2, steps=10, checkpoint_every=0)),
                 "--out", str(out), "--no-progress"]) == 0
    assert (out / "init" / "model.safetensors").is_file()


def test_the_pool_draws_at_the_engines_resets_whatever_the_configs_k(tmp_path):
    # MTL fixes K = 1 (its trajectories never leave phi): the engine resets every step, and so the pool draws every
    # step, whatever reset_period says (both read K from ctinit.meta.schedule)
    out = tmp_path / "run"
    recipe = _pool_recipe(tmp_path, 4, algorithm="mtl", active_tasks=2, reset_period=5, steps=4, checkpoint_every=0)
    assert main(["--config", str(recipe), "--out", str(out), "--no-progress"]) == 0
    log = (out / "train.log").read_text()
    assert "reset_period 1," in log and "a new draw every 1 steps" in log
    assert "step 4: draw 5: active tasks" in log  # the first draw, then one after each of the 4 steps


@pytest.mark.parametrize("active", [2, None])  # a pool, and fixed tasks
def test_resume_refuses_a_task_whose_classes_changed(tmp_path, capsys, active):
    recipe = _pool_recipe(tmp_path, 4, active_tasks=active, steps=10, checkpoint_every=10)
    out = tmp_path / "run"
    assert main(["--config", str(recipe), "--out", str(out), "--no-progress"]) == 0
    make_npz(tmp_path / "t01.npz", n_per_class=8, classes=7, seed=1)  # the task's data changed: 7 classes, not 4
    capsys.readouterr()
    assert main(["--config", str(recipe), "--out", str(out), "--no-progress", "steps=20", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "task t01 has 7 classes but its head in the checkpoint has 4" in err[0], err


@pytest.mark.parametrize("overrides,needle", [
    (["active_tasks=5"], "active_tasks (5) is larger than the pool: 'tasks' lists 4 tasks"),
    (["active_tasks=0"], "active_tasks = 0"),
    (["active_tasks=2", "algorithm=scratch"], "active_tasks needs an algorithm that resets trajectories"),
    (["active_tasks=2", "algorithm=reptile", "meta_interval=2"], "reset_period (3) must be a multiple of meta_interval (2)"),
    (["active_tasks=2", "algorithm=fomaml", "heldout_fraction=0.1"], "heldout_fraction (FOMAML's validation split) does not work with active_tasks"),
])
def test_pool_config_errors_are_one_line_before_training(tmp_path, capsys, overrides, needle):
    recipe = _pool_recipe(tmp_path, 4)
    assert main(["--config", str(recipe), "--out", str(tmp_path / "run"), "--no-progress", *overrides]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "run" / "init").exists()

