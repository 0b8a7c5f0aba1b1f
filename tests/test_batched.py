"""Batched execution (all tasks as one grouped program) is the same training as sequential execution.

The equivalence tests run both executions in float64, where grouped and per-task kernels agree to ~1e-12, so a
tight bound is meaningful on every CPU; in fp32 the two round differently per instruction set (oneDNN's grouped
convolutions on Intel vs AMD) and only scale-derived tolerances would hold."""
import logging

import pytest
import torch
from torch import nn

from ctinit.errors import ConfigError
from ctinit.meta import TrajectoryEngine
from ctinit.execution.batched import BatchedTasks
from ctinit.models import TaskHead, build_backbone
from ctinit.tasks import BatchSampler

from helpers import resumed_pair

CLASSES = (3, 5, 4)  # heads of different widths: padded and masked when batched
SGD_MOMENTUM = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}


def task_data(num_tasks=3, size=16, n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=g),
             torch.randint(0, CLASSES[t], (n,), generator=g)) for t in range(num_tasks)]


def make_engine(execution, arch="convnet4-32", size=16, batch_size=8, sources=None, dtype=torch.float64, **kw):
    torch.manual_seed(0)
    backbone = build_backbone(arch, image_size=size).to(dtype)
    heads = [TaskHead(backbone.feature_dim, c).to(dtype) for c in CLASSES]
    if sources is None:
        sources = [BatchSampler(x, y, batch_size, seed=t, dtype=dtype) for t, (x, y) in enumerate(task_data(size=size))]
    kw.setdefault("inner_optimizer", SGD_MOMENTUM)
    kw.setdefault("meta_optimizer", {"name": "sgd", "lr": 0.1})
    kw.setdefault("reset_period", 3)
    return TrajectoryEngine(backbone, heads, sources, rule=kw.pop("rule", "cts"), execution=execution, **kw)


# float64 agreement of the two executions: rounding differences of ~1e-15 grow over a few steps to ~1e-12
TIGHT = dict(rtol=1e-9, atol=1e-10)


def assert_same_state(a, b, rtol=TIGHT["rtol"], atol=TIGHT["atol"]):
    """phi, thetas, and every task's backbone state (incl. BN running statistics), head and optimizer state."""
    torch.testing.assert_close(a.phi.detach(), b.phi.detach(), rtol=rtol, atol=atol)
    torch.testing.assert_close(a.thetas, b.thetas, rtol=rtol, atol=atol)
    sa, sb = a.state_dict(), b.state_dict()
    for ta, tb in zip(sa["tasks"], sb["tasks"]):
        for part in ("backbone", "head"):
            assert ta[part].keys() == tb[part].keys()
            for k in ta[part]:
                torch.testing.assert_close(ta[part][k].double(), tb[part][k].double(), rtol=rtol, atol=atol,
                                           equal_nan=True, msg=k)
        assert ta["optimizer"]["state"].keys() == tb["optimizer"]["state"].keys()
        for i, s in ta["optimizer"]["state"].items():
            for k, v in s.items():
                torch.testing.assert_close(v, tb["optimizer"]["state"][i][k], rtol=rtol, atol=atol)


def test_cts_sgd_momentum_batched_equals_sequential_over_steps_and_a_reset():
    a, b = make_engine("sequential"), make_engine("batched")
    assert (a.execution, b.execution) == ("sequential", "batched")
    for _ in range(5):  # K = 3: a reset after step 3
        ra, rb = a.step(), b.step()
        torch.testing.assert_close(ra.losses, rb.losses, **TIGHT)
        assert torch.equal(ra.accuracies, rb.accuracies)
        torch.testing.assert_close(ra.delta, rb.delta, **TIGHT)
    assert not torch.equal(a.phi, make_engine("sequential").phi)  # training did move phi
    assert_same_state(a, b)
    # BN running statistics stay per task (and the task modules see the batched updates)
    means = [dict(m.named_buffers())["layers.1.running_mean"] for m in b.backbones]
    assert not torch.equal(means[0], means[1])
    assert int(dict(b.backbones[2].named_buffers())["layers.1.num_batches_tracked"]) == 5


def test_resnet_gradients_and_bn_statistics_match_from_the_same_state():
    # ResNet-20 (BasicBlocks, strided 1x1 shortcuts) on tiny inputs is chaotic over steps: a 1e-7 change grows to
    # 1e-1 within six steps in sequential execution alone. So compare one inner step from one and the same state.
    a, b = make_engine("sequential", arch="resnet20"), make_engine("batched", arch="resnet20")
    for _ in range(2):
        a.step()
    b.load_state_dict(a.state_dict())
    batches = [source() for source in a.batches]
    la, acc_a = a._forward_backward(batches)
    lb, acc_b = b._forward_backward(batches)
    torch.testing.assert_close(la, lb, **TIGHT)
    assert torch.equal(acc_a, acc_b)
    torch.testing.assert_close(a.grads, b.grads, rtol=1e-9, atol=1e-10 * a.grads.abs().max().item())
    for ha, hb in zip(a.heads, b.heads):
        torch.testing.assert_close(ha.weight.grad, hb.weight.grad, **TIGHT)
        torch.testing.assert_close(ha.bias.grad, hb.bias.grad, **TIGHT)
    for ma, mb in zip(a.backbones, b.backbones):
        for (k, va), vb in zip(ma.named_buffers(), mb.buffers()):
            torch.testing.assert_close(va.double(), vb.double(), **TIGHT, msg=k)
    for engine in (a, b):
        for opt in engine.optimizers:
            opt.step()
        engine._meta_step()
    assert_same_state(a, b)


def test_excluded_parameters_and_fomaml_cts_batched():
    # (SGD: Adam turns the rounding noise of gradients that are exactly zero in exact arithmetic, e.g. a conv bias
    # followed by batch norm, into lr-sized steps of either sign, in sequential execution alone too.)
    kw = dict(meta_exclude=[r"\.1\.(weight|bias)$"], rule="fomaml-cts")
    a, b = make_engine("sequential", **kw), make_engine("batched", **kw)
    for _ in range(4):
        a.step()
        b.step()
    assert_same_state(a, b)


def test_a_nonfinite_task_is_skipped_alone_in_both():
    def sources():
        samplers = [BatchSampler(x, y, 8, seed=t, dtype=torch.float64) for t, (x, y) in enumerate(task_data())]
        calls = {"n": 0}

        def poisoned():
            calls["n"] += 1
            x, y = samplers[1]()
            return (x * float("nan"), y) if calls["n"] == 2 else (x, y)
        return [samplers[0], poisoned, samplers[2]]

    def buffers(engine, t):
        return {k: v.clone() for k, v in engine.backbones[t].named_buffers()}

    a, b = make_engine("sequential", sources=sources()), make_engine("batched", sources=sources())
    for step in range(1, 4):
        before = [[buffers(e, t) for t in range(3)] for e in (a, b)]
        ra, rb = a.step(), b.step()
        assert ra.skipped == rb.skipped == ([1] if step == 2 else None)
        if step == 2:
            for e, saved in zip((a, b), before):
                # the skipped task's BN statistics are exactly as before the step (the NaN batch never reached
                # them); the other tasks keep this step's updates (in batched execution: other rows of one buffer)
                for k, v in buffers(e, 1).items():
                    assert torch.equal(v, saved[1][k]) and torch.isfinite(v.double()).all(), (e.execution, k)
                assert not torch.equal(buffers(e, 0)["layers.1.running_mean"], saved[0]["layers.1.running_mean"])
                assert int(buffers(e, 0)["layers.1.num_batches_tracked"]) == 2
                assert int(buffers(e, 1)["layers.1.num_batches_tracked"]) == 1
    assert a.skipped_steps == b.skipped_steps == [0, 1, 0]
    assert torch.isfinite(b.phi).all() and torch.isfinite(b.thetas).all()
    assert_same_state(a, b)


def test_steps_with_unequal_batch_shapes_run_sequentially_and_still_agree():
    def sources():
        data = task_data()
        return [BatchSampler(x, y, 8 if t != 1 else 6, seed=t, dtype=torch.float64) for t, (x, y) in enumerate(data)]

    a, b = make_engine("sequential", sources=sources()), make_engine("batched", sources=sources())
    for _ in range(2):
        a.step()
        b.step()
    assert b.execution == "batched"
    assert_same_state(a, b, rtol=0, atol=0)  # the sequential path ran: bitwise


def test_batched_resume_is_bitwise():
    a, b = resumed_pair(lambda: make_engine("batched"), 2)
    assert torch.equal(a.phi, b.phi) and torch.equal(a.thetas, b.thetas)
    assert_same_state(a, b, rtol=0, atol=0)


def test_auto_picks_sequential_on_cpu_and_logs_it(caplog):
    with caplog.at_level(logging.INFO, logger="ctinit.meta.engine"):
        e = make_engine("auto")
    assert e.execution == "sequential"
    assert "execution: sequential (auto: sequential on cpu" in caplog.text


class ChannelMixer(nn.Module):
    """Only allowed layers, but a forward that mixes channels (subtracting the mean over channels)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.config = None

    @property
    def feature_dim(self):
        return 4

    def forward(self, x):
        h = self.conv(x)
        return (h - h.mean(1, keepdim=True)).mean(dim=(2, 3))


def test_unsupported_setups_are_refused_or_fall_back():
    with pytest.raises(ConfigError, match="custom loss"):
        make_engine("batched", loss_fn=lambda backbone, head, batch: head(backbone(batch[0])).sum())
    with pytest.raises(ConfigError, match="execution must be one of"):
        make_engine("vectorized")

    class WithLinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(self.conv(x).mean(dim=(2, 3)))

    heads = [TaskHead(4, c) for c in CLASSES]
    sources = [BatchSampler(x, y, 8, seed=t) for t, (x, y) in enumerate(task_data())]
    with pytest.raises(ConfigError, match="fc"):
        TrajectoryEngine(WithLinear(), heads, sources, execution="batched")
    # a forward that mixes channels passes the static check and is caught by the first-step probe
    e = TrajectoryEngine(ChannelMixer(), heads, sources, execution="batched")
    with pytest.raises(ConfigError, match="mixes channels"):
        e.step()
    probe = BatchedTasks(ChannelMixer(), [ChannelMixer() for _ in CLASSES], heads, e.thetas, e.grads,
                         {n: (o, k) for n, o, k in zip(e.layout.names, e.layout.offsets, e.layout.numels)})
    assert "mixes channels" in probe.check([source() for source in sources])
    # a leak of 1% of the other tasks' signal is far inside the loose agreement tolerance (5%), and still caught
    class FaintMixer(ChannelMixer):
        def forward(self, x):
            y = self.conv(x)
            return (y + 1e-2 * y.mean(dim=1, keepdim=True)).mean(dim=(2, 3))

    probe = BatchedTasks(FaintMixer(), [FaintMixer() for _ in CLASSES], heads, e.thetas, e.grads,
                         {n: (o, k) for n, o, k in zip(e.layout.names, e.layout.offsets, e.layout.numels)})
    assert "changing one task's input moves the other tasks' features" in probe.check([source() for source in sources])


def test_flat_inner_optimizer_is_the_per_tensor_optimizer_and_keeps_its_state_format():
    # The engine steps each task's meta-learned tensors as one flat parameter; a per-tensor torch.optim.SGD on a
    # copy of the same model, fed the same batches, must give the same parameters and momentum buffers.
    import copy

    import torch.nn.functional as F

    e = make_engine("sequential", rule="scratch")
    torch.manual_seed(0)
    model = copy.deepcopy(e.backbones[0])
    head = copy.deepcopy(e.heads[0])
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)
    source = BatchSampler(*task_data()[0], 8, seed=0, dtype=torch.float64)
    for _ in range(3):
        e.step()
        x, y = source()
        opt.zero_grad()
        F.cross_entropy(head(model(x)), y).backward()
        opt.step()
    for (name, p), q in zip(e.backbones[0].named_parameters(), model.parameters()):
        torch.testing.assert_close(p, q, **TIGHT, msg=name)
    saved = e.state_dict()["tasks"][0]["optimizer"]
    reference = opt.state_dict()
    assert saved["param_groups"] == reference["param_groups"]
    assert saved["state"].keys() == reference["state"].keys()
    for i, s in reference["state"].items():
        torch.testing.assert_close(saved["state"][i]["momentum_buffer"], s["momentum_buffer"], **TIGHT)


def test_bf16_autocast_batched_runs_close_to_sequential():
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    a, b = (make_engine(execution, autocast=bf16, dtype=torch.float32) for execution in ("sequential", "batched"))
    for _ in range(2):
        ra, rb = a.step(), b.step()
        torch.testing.assert_close(ra.losses, rb.losses, rtol=2e-2, atol=2e-2)
    assert b.phi.dtype == torch.float32 and torch.isfinite(b.phi).all()
    torch.testing.assert_close(a.phi.detach(), b.phi.detach(), rtol=1e-3, atol=1e-4)
