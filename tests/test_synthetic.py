"""The synthetic 2-D benchmark (benchmarks/synthetic.py): task losses by hand, the vectorized evaluator against the
engine, and a --quick run end to end."""
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from ctinit.meta import TrajectoryEngine

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "synthetic.py"


def load_benchmark():
    name = "ctinit_benchmark_synthetic"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, PATH)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # worker processes pickle its functions by module name
        spec.loader.exec_module(module)
    return sys.modules[name]


S = load_benchmark()


def one_task(angle=0.0, c0=1.0, c2=1.0, target=(0.0, 0.0)):
    return S.Tasks([angle], [c0], [c2], [target])


def loss_at(tasks, x, t=0):
    rot, target, c0, c2 = tasks.rot[t], tasks.target[t], tasks.c0[t], tasks.c2[t]
    return S.task_loss(torch.tensor(x), rot, target, c0, c2).item()


def engine_loss_at(tasks, x, t=0):
    return S.point_loss(S.Point(x), None, tasks.task(t)).item()


def test_task_loss_by_hand():
    # angle 0, c0 = c2 = 1, target 0: (u, v) = x / 3. x = (9, 6): (3, 2), a Himmelblau minimum.
    # x = 0: Himmelblau(0, 0) = (0 + 0 - 11)^2 + (0 + 0 - 7)^2 = 121 + 49 = 170.
    tasks = one_task()
    for fn in (loss_at, engine_loss_at):
        assert fn(tasks, (9.0, 6.0)) == pytest.approx(0.0, abs=1e-5)
        assert fn(tasks, (0.0, 0.0)) == pytest.approx(170.0)
        # x = (3, 3): (u, v) = (1, 1): (1 + 1 - 11)^2 + (1 + 1 - 7)^2 = 81 + 25
        assert fn(tasks, (3.0, 3.0)) == pytest.approx(106.0)
    # weights: .5 * 121 + .25 * 49
    assert loss_at(one_task(c0=0.5, c2=0.25), (0.0, 0.0)) == pytest.approx(72.75)
    # rotation by 90 degrees around target (1, 2): (u, v) = R (x - target) / 3 = (-(x2 - 2), x1 - 1) / 3;
    # (u, v) = (3, 2) at x = (7, -7), and the target itself is Himmelblau(0, 0).
    rotated = one_task(angle=math.pi / 2, target=(1.0, 2.0))
    for fn in (loss_at, engine_loss_at):
        assert fn(rotated, (7.0, -7.0)) == pytest.approx(0.0, abs=1e-4)
        assert fn(rotated, (1.0, 2.0)) == pytest.approx(170.0)
        assert fn(rotated, (9.0, 6.0)) != pytest.approx(0.0, abs=1.0)  # the unrotated minimum is not one


def test_seeded_tasks_and_their_minima():
    tasks = S.make_tasks(0)
    assert len(tasks) == 8
    assert torch.equal(tasks.c0, S.make_tasks(0).c0) and not torch.equal(tasks.c0, S.make_tasks(1).c0)
    assert ((tasks.c0 > 0) & (tasks.c0 < 1) & (tasks.c2 > 0) & (tasks.c2 < 1)).all()
    assert ((tasks.angles >= 0) & (tasks.angles < 2 * math.pi)).all()
    radii = (tasks.target - torch.tensor([5.0, 5.0])).norm(dim=1)
    assert torch.allclose(radii, torch.full((8,), 7.0))
    minima = tasks.minima()  # [8, 4, 2]: every one has loss ~0 for its task
    for t in range(8):
        for m in range(4):
            assert loss_at(tasks, minima[t, m].tolist(), t) < 1e-3


def test_engine_loss_equals_reference_loss_and_gradient():
    tasks = S.make_tasks(0)
    g = torch.Generator().manual_seed(0)
    for x in (torch.rand(5, 2, generator=g) * 30 - 10):
        for t in range(len(tasks)):
            a = x.clone().requires_grad_(True)
            ref = S.task_loss(a, tasks.rot[t], tasks.target[t], tasks.c0[t], tasks.c2[t])
            ref.backward()
            point = S.Point(x)
            fast = S.point_loss(point, None, tasks.task(t))
            fast.backward()
            assert fast.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-5)
            assert torch.allclose(point.x.grad, a.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("optimizer", list(S.OPTIMIZERS))
def test_vectorized_adaptation_matches_the_engine(optimizer):
    # The evaluator (and the contour) runs all points and tasks as one tensor; the engine's 'scratch' rule runs
    # each task with its own optimizer. Both must give the same task losses after K steps.
    tasks, k = S.make_tasks(0), 15
    starts = [(15.0, 15.0), (-5.0, 5.0)]
    vectorized = S.adapt_losses(torch.tensor(starts), tasks, k, optimizer)
    for i, start in enumerate(starts):
        engine = TrajectoryEngine(
            S.Point(start), [torch.nn.Identity() for _ in range(8)], [(lambda b=tasks.task(t): b) for t in range(8)],
            rule="scratch", reset_period=k, inner_optimizer=S.inner_spec(optimizer), loss_fn=S.point_loss,
        )
        for _ in range(k):
            engine.step()
        thetas = engine.thetas
        expected = torch.stack([S.task_loss(thetas[t], tasks.rot[t], tasks.target[t], tasks.c0[t], tasks.c2[t])
                                for t in range(8)])
        assert torch.allclose(vectorized[i], expected, rtol=1e-3, atol=1e-4), (optimizer, start)


def test_worker_pool_gives_the_serial_results():
    tasks = S.make_tasks(0)
    jobs = [("cts", 80, "sgd", (15.0, 15.0)), ("reptile", 80, "sgd", (15.0, 15.0))]
    serial = S.train_all(jobs, tasks, workers=1)
    pooled = S.train_all(jobs, tasks, workers=2)
    for job in jobs:
        assert torch.equal(serial[job][0]["phi"], pooled[job][0]["phi"])
        assert torch.equal(serial[job][0]["path"], pooled[job][0]["path"])
    assert serial[jobs[0]][0]["meta_steps"] == 240 and serial[jobs[1]][0]["meta_steps"] == 3


def test_quick_run_end_to_end(tmp_path, capsys):
    result = S.main(["--quick", "--json", "--out", str(tmp_path), "--workers", "1"])
    out = capsys.readouterr().out
    parsed = json.loads(out)  # exactly one JSON object on stdout
    assert parsed["cts"]["final_meta_loss"] == result["cts"]["final_meta_loss"]
    for algo in ("cts", "reptile"):
        summary = parsed[algo]
        assert {"final_meta_loss", "by_k", "by_optimizer", "diverged", "settings"} <= set(summary)
        assert math.isfinite(summary["final_meta_loss"])
        assert summary["diverged"] == 0
        assert all(math.isfinite(v) for v in summary["by_k"].values())
        assert all(math.isfinite(v) for v in summary["by_optimizer"].values())
        assert len(summary["settings"]) == 3
        assert all(math.isfinite(s["final_meta_loss"]) for s in summary["settings"])
    assert [s["meta_steps"] for s in parsed["cts"]["settings"]] == [240] * 3
    assert [s["meta_steps"] for s in parsed["reptile"]["settings"]] == [2] * 3  # K = 120
    assert "config" in parsed and parsed["config"]["quick"] is True
    # The paper's claim (Sec. 4.1, Fig. 2): CTS reaches a lower long-horizon meta-loss than Reptile.
    assert parsed["cts"]["final_meta_loss"] < parsed["reptile"]["final_meta_loss"]
    assert parsed["cts_below_reptile"] is True
    png = tmp_path / "synthetic_paths.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
