"""``compile: backbone`` (every task's backbone forward/backward compiled by inductor) trains as eager does, and
``compile: auto`` on the CPU compiles only where this run's own timings say it pays off."""
import copy

import pytest
import torch

from ctinit.errors import ConfigError
from ctinit.execution import compiled as compiled_module
from ctinit.execution.compiled import AutoCompile
from ctinit.meta import TrajectoryEngine
from ctinit.models import CtinitConvNetConfig, TaskHead
from ctinit.models.backbones import CtinitConvNetModel
from ctinit.tasks import BatchSampler

CLASSES = (3, 4)
STEPS = 200
#: phi after STEPS steps, compiled vs eager, as a fraction of how far eager moved phi: rounding differences (fused
#: kernels sum in other orders) grow through training but stay orders of magnitude below the training signal.
TOLERANCE = 1e-3


def tiny_engine(compile="off", execution="sequential", **extra):
    """Two tasks on 8x8 images whose class is their brightness (learnable, so training settles rather than
    amplifying rounding), a 2-layer 4-channel ConvNet, CTS with a reset every 50 steps."""
    torch.manual_seed(0)
    backbone = CtinitConvNetModel(CtinitConvNetConfig(num_layers=2, hidden_size=4, num_channels=3, image_size=8))
    heads = [TaskHead(backbone.feature_dim, c) for c in CLASSES]
    g = torch.Generator().manual_seed(0)
    sources = []
    for t, c in enumerate(CLASSES):
        y = torch.randint(0, c, (64,), generator=g)
        x = (y[:, None, None, None] * (255 // c) + torch.randint(0, 40, (64, 1, 8, 8), generator=g)).clamp(0, 255)
        sources.append(BatchSampler(x.to(torch.uint8), y, 16, seed=t, augment=True, hflip=True))
    return TrajectoryEngine(backbone, heads, sources, rule="cts", reset_period=50, meta_interval=1,
                            inner_optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
                            meta_optimizer={"name": "sgd", "lr": 0.1}, execution=execution, compile=compile, **extra)


def test_the_compiled_backbone_trains_as_eager():
    eager, compiled = tiny_engine("off"), tiny_engine("backbone")
    assert compiled.compile == "backbone"
    start = eager.phi.detach().clone()
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for step in range(1, STEPS + 1):
        ra, rb = eager.step(), compiled.step()
        if step == 1:  # one step: rounding only
            torch.testing.assert_close(rb.losses, ra.losses, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(compiled.thetas, eager.thetas, rtol=1e-5, atol=1e-6)
    # both tasks ran through one compiled graph
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs == 1
    moved = (eager.phi - start).abs().max().item()
    assert moved > 0.1  # it trained
    assert (compiled.phi - eager.phi).abs().max().item() <= TOLERANCE * moved
    assert ra.accuracies.mean() > 0.9 and rb.accuracies.mean() > 0.9
    # BN running statistics are updated through the compiled graph as in eager
    for a, b in zip(eager.backbones, compiled.backbones):
        for (name, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.allclose(va.float(), vb.float(), rtol=1e-2, atol=1e-3), name


def test_compile_backbone_needs_sequential_execution():
    with pytest.raises(ConfigError, match="compile 'backbone' compiles each task's own forward and runs with "
                                          "execution 'sequential'"):
        tiny_engine("backbone", execution="batched")


def run_auto(timings, remaining=10_000):
    """Drive AutoCompile with step times: ``timings(compiled) -> seconds``; returns it and how each step ran."""
    auto = AutoCompile(lambda: remaining, lambda: "key")
    ran = []
    while auto.phase in ("eager", "trial") and len(ran) < 50:
        use = auto.use_compiled()
        if auto.phase in ("on", "off"):
            break
        ran.append(use)
        auto.done(timings(use, ran.count(True)))
    return auto, ran


@pytest.fixture
def record(tmp_path, monkeypatch):
    path = tmp_path / "record.json"
    monkeypatch.setattr(compiled_module, "record_path", lambda: path)
    return path


def test_auto_compiles_when_the_run_is_long_and_keeps_what_measured_faster(record):
    # eager 1 s a step; compiling costs 20 s; compiled steps take .5 s
    auto, ran = run_auto(lambda compiled, n: (21.0 if n == 1 else 0.5) if compiled else 1.0)
    assert ran[:3] == [False] * 3 and ran[3:] == [True, True, False, True, False, True, False, True, False]
    assert auto.phase == "on" and auto.speedup == pytest.approx(2.0) and auto.compile_seconds == pytest.approx(20.0)
    assert compiled_module.read_record("key") == {"compile_seconds": 20.0, "speedup": 2.0, "cpu": compiled_module.cpu_model(),
                                                  "torch": torch.__version__}
    # the next run on this machine starts from the record: a run too short for a 20 s compile at 2x stays eager
    auto, ran = run_auto(lambda compiled, n: 1.0, remaining=30)
    assert auto.phase == "off" and ran == [False] * 3 and "compiling costs about 20 s" in auto.reason


def test_auto_keeps_eager_where_compiled_steps_are_not_faster_and_remembers_it(record):
    auto, ran = run_auto(lambda compiled, n: (30.0 if n == 1 else 0.98) if compiled else 1.0)
    assert auto.phase == "off" and True in ran  # it tried
    auto, ran = run_auto(lambda compiled, n: 1.0)
    assert auto.phase == "off" and ran == [False] * 3 and "measured 1.02x on this machine before" in auto.reason


def test_auto_without_a_record_compiles_only_what_pays_for_the_assumed_cost(record):
    # 100 steps of 1 s at the assumed 1.3x save 23 s, below the assumed 60 s compile
    auto, _ = run_auto(lambda compiled, n: 1.0, remaining=100)
    assert auto.phase == "off"


def test_the_engine_applies_what_auto_chose(record):
    record.write_text("{}")
    short = tiny_engine("auto", planned_steps=5)
    for _ in range(5):
        short.step()
    assert short.compile == "off"  # 5 steps never pay for a compile
    assert tiny_engine("auto").compile == "off" and tiny_engine("auto")._auto_compile is None  # run length unknown


def test_a_resumed_engine_keeps_what_auto_chose_or_had_measured(record):
    """compile 'auto' decides from timings: a resumed run must run its steps (compiled or eager) as the first run
    would have, so the checkpoint carries the decision (or the measurements so far) and a resumed engine uses it."""
    record.write_text("{}")
    first = tiny_engine("auto", planned_steps=5)
    first.step()
    measuring = first.state_dict()
    assert measuring["compile"]["mode"] == "measuring" and len(measuring["compile"]["eager"]) == 1
    resumed = tiny_engine("auto", planned_steps=5)
    resumed.load_state_dict(measuring)
    assert resumed._auto_compile.eager == measuring["compile"]["eager"]
    decided = dict(measuring, compile={"mode": "backbone"})  # what a machine that measured a speedup decided
    resumed = tiny_engine("auto", planned_steps=5)
    resumed.load_state_dict(decided)
    assert resumed.compile == "backbone" and resumed._auto_compile is None and resumed._backbone_compiled
    assert "compile" not in tiny_engine("off").state_dict()  # only 'auto' has a decision to keep
