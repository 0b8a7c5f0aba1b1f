"""Every meta-rule against hand-computed values, and the engine's invariants."""
import math

import pytest
import torch
from torch import nn

from ctinit.errors import ConfigError
from ctinit.meta import TrajectoryEngine, cts_update, trajectory_direction
from ctinit.models import TaskHead, build_backbone

from helpers import resumed_pair


class Point(nn.Module):
    """A 'backbone' that is a point w (and a second tensor b, so the flat layout spans several tensors)."""

    def __init__(self, w=1.0, b=0.0):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([w]))
        self.b = nn.Parameter(torch.tensor([b]))


class Scalar(nn.Module):
    def __init__(self, h=0.0):
        super().__init__()
        self.h = nn.Parameter(torch.tensor([h]))


def backbone_only_loss(backbone, head, c):
    """L_t(w) = 1/2 (w - c_t)^2: one SGD step with rate a gives w - a (w - c_t)."""
    return 0.5 * ((backbone.w - c) ** 2).sum() + 0.0 * backbone.b.sum() + 0.0 * head.h.sum()


CENTERS = [0.0, 2.0, 4.0]


def quadratic_engine(rule, reset_period=2, inner_lr=0.5, meta_lr=0.1, centers=CENTERS, loss_fn=backbone_only_loss, **kw):
    kw.setdefault("inner_optimizer", {"name": "sgd", "lr": inner_lr})
    kw.setdefault("meta_optimizer", {"name": "sgd", "lr": meta_lr})
    return TrajectoryEngine(
        Point(), [Scalar() for _ in centers], [(lambda c=c: torch.tensor(c)) for c in centers],
        rule=rule, reset_period=reset_period, loss_fn=loss_fn, **kw,
    )


def w_of_thetas(engine):
    return engine.thetas[:, 0].tolist()  # w is the first entry of the flat layout


def test_cts_two_steps_by_hand():
    # w0 = 1, c = (0, 2, 4), inner lr .5, meta lr .1.
    # step 1: theta = (.5, 1.5, 2.5); g = mean(1 - theta) = -.5; phi = 1.05; shift +.05 -> (.55, 1.55, 2.55)
    # step 2: theta = (.275, 1.775, 3.275); g = 1.05 - 1.775 = -.725; phi = 1.1225; shift +.0725
    e = quadratic_engine("cts", reset_period=10)
    r = e.step()
    assert r.meta_step and not r.reset
    assert e.phi[0].item() == pytest.approx(1.05)
    assert w_of_thetas(e) == pytest.approx([0.55, 1.55, 2.55])
    e.step()
    assert e.phi[0].item() == pytest.approx(1.1225)
    assert w_of_thetas(e) == pytest.approx([0.3475, 1.8475, 3.3475])
    assert e.phi_module.w.item() == pytest.approx(1.1225)  # the exported module sees phi


def test_reptile_by_hand():
    # Two inner steps: theta = (.25, 1.75, 3.25); g = 1 - 1.75 = -.75; phi = 1.075; then reset to phi.
    e = quadratic_engine("reptile", reset_period=2)
    r = e.step()
    assert not r.meta_step and e.phi[0].item() == 1.0
    r = e.step()
    assert r.meta_step and r.reset
    assert e.phi[0].item() == pytest.approx(1.075)
    assert w_of_thetas(e) == pytest.approx([1.075] * 3)


def test_fomaml_cts_by_hand():
    # step 1: grads at 1 = (1, -1, -3), mean -1 -> phi = 1.1; theta (.5, 1.5, 2.5) + .1
    # step 2: grads at (.6, 1.6, 2.6) = (.6, -.4, -1.4), mean -.4 -> phi = 1.14; theta (.3, 1.8, 3.3) + .04
    e = quadratic_engine("fomaml-cts", reset_period=10)
    e.step()
    assert e.phi[0].item() == pytest.approx(1.1)
    assert w_of_thetas(e) == pytest.approx([0.6, 1.6, 2.6])
    e.step()
    assert e.phi[0].item() == pytest.approx(1.14)
    assert w_of_thetas(e) == pytest.approx([0.34, 1.84, 3.34])


def test_fomaml_k_heldout_gradient_by_hand():
    # K = 2: theta = (.25, 1.75, 3.25); held-out grads (.25, -.25, -.75), mean -.25 -> phi = 1.025.
    e = quadratic_engine("fomaml-k", reset_period=2)
    e.step()
    e.step()
    assert e.phi[0].item() == pytest.approx(1.025)
    assert w_of_thetas(e) == pytest.approx([1.025] * 3)


def test_fomaml_applies_a_heldout_gradient_after_every_inner_step_by_hand():
    # The official code's FOMAML: no held-out sources here, so the held-out batch is a fresh one (c_t again).
    # step 1: theta = (.5, 1.5, 2.5); grads theta - c = (.5, -.5, -1.5), mean -.5 -> phi = 1.05; no shift
    # step 2: theta = (.25, 1.75, 3.25); grads (.25, -.25, -.75), mean -.25 -> phi = 1.075; reset (K = 2)
    e = quadratic_engine("fomaml", reset_period=2)
    assert e.meta_interval == 1 and not e.shift
    r = e.step()
    assert r.meta_step and e.phi[0].item() == pytest.approx(1.05)
    assert w_of_thetas(e) == pytest.approx([0.5, 1.5, 2.5])
    e.step()
    assert e.phi[0].item() == pytest.approx(1.075)
    assert w_of_thetas(e) == pytest.approx([1.075] * 3)


def test_mtl_is_gradient_descent_on_the_mean_loss():
    # phi <- phi - .5 * mean_t (phi - c_t) = phi - .5 (phi - 2): 1 -> 1.5 -> 1.75; theta == phi after every step.
    e = quadratic_engine("mtl", reset_period=1000, meta_lr=0.5)
    assert e.reset_period == 1 and e.meta_interval == 1
    e.step()
    assert e.phi[0].item() == pytest.approx(1.5)
    e.step()
    assert e.phi[0].item() == pytest.approx(1.75)
    assert w_of_thetas(e) == pytest.approx([1.75] * 3)


def test_leap_one_segment_by_hand():
    # One task, c = 0, K = 1: theta 1 -> .5, L .5 -> .125; dtheta = -.5, dL = -.375, d = .625;
    # g = -(dtheta + dL * grad) / d = -(-.5 - .375 * 1) / .625 = 1.4; phi = 1 - .1 * 1.4 = .86.
    e = quadratic_engine("leap", reset_period=1, centers=[0.0])
    e.step()
    assert e.phi[0].item() == pytest.approx(0.86)


def test_leap_two_segments_average():
    # K = 2: theta 1 -> .5 -> .25. Segment 2: dtheta = -.25, dL = .03125 - .125, grad(.5) = .5.
    e = quadratic_engine("leap", reset_period=2, centers=[0.0])
    e.step()
    e.step()
    g1 = 1.4
    dth, dl = -0.25, 0.03125 - 0.125
    g2 = -(dth + dl * 0.5) / math.sqrt(dth ** 2 + dl ** 2)
    assert e.phi[0].item() == pytest.approx(1 - 0.1 * (g1 + g2) / 2)


def test_scratch_never_touches_phi():
    e = quadratic_engine("scratch", reset_period=1)
    for _ in range(3):
        r = e.step()
        assert not r.meta_step and not r.reset
    assert e.phi[0].item() == 1.0
    assert w_of_thetas(e) == pytest.approx([1 - 0.875 * (1 - c) for c in CENTERS])  # three plain SGD steps


def test_momentum_and_weight_decay_do_not_alter_gradient_direction():
    # SGD with momentum and weight decay on the inner loop: FOMAML-CTS must still use the raw gradients.
    e = TrajectoryEngine(
        Point(), [Scalar() for _ in CENTERS], [(lambda c=c: torch.tensor(c)) for c in CENTERS], rule="fomaml-cts",
        reset_period=10, inner_optimizer={"name": "sgd", "lr": 0.5, "momentum": 0.9, "weight_decay": 0.1},
        meta_optimizer={"name": "sgd", "lr": 0.1}, loss_fn=backbone_only_loss,
    )
    e.step()
    assert e.phi[0].item() == pytest.approx(1.1)  # mean raw grad at 1 is -1


def test_cts_update_function_matches_the_equation():
    # phi = (1, -2), thetas mean (.5, -.5): g = (.5, -1.5); beta = .5 -> phi' = (.75, -1.25), delta = (-.25, .75)
    phi = nn.Parameter(torch.tensor([1.0, -2.0]))
    thetas = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    opt = torch.optim.SGD([phi], lr=0.5)
    delta = cts_update(phi, thetas, opt)
    assert torch.allclose(phi.detach(), torch.tensor([0.75, -1.25]))
    assert torch.allclose(delta, torch.tensor([-0.25, 0.75]))
    assert torch.allclose(thetas, torch.tensor([[-0.25, 0.75], [0.75, -0.25]]))
    g = trajectory_direction(torch.tensor([1.0, 1.0]), torch.tensor([[0.0, 1.0], [1.0, 3.0]]))
    assert g.dtype == torch.float64 and g.tolist() == [1.0, -2.0]  # sum_t (phi - theta_t), accumulated in fp64


# ---------------------------------------------------------------------------------- real backbones
def tiny_tasks(num_tasks=3, classes=(3, 4, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    data = [(torch.randn(24, 3, 16, 16, generator=g), torch.randint(0, classes[t], (24,), generator=g))
            for t in range(num_tasks)]

    def source(t):
        state = {"i": 0}

        def next_batch():
            x, y = data[t]
            i = state["i"] % 3
            state["i"] += 1
            return x[i * 8:(i + 1) * 8], y[i * 8:(i + 1) * 8]
        return next_batch
    return [source(t) for t in range(num_tasks)], classes[:num_tasks]


def convnet_engine(rule="cts", seed=0, **kw):
    torch.manual_seed(seed)
    backbone = build_backbone("convnet4-32", image_size=16)
    batches, classes = tiny_tasks()
    heads = [TaskHead(backbone.feature_dim, c) for c in classes]
    kw.setdefault("reset_period", 4)
    return TrajectoryEngine(backbone, heads, batches, rule=rule, **kw)


def test_meta_interval_k_equals_reptile_exactly():
    a = convnet_engine("cts", meta_interval=4, meta_optimizer={"name": "sgd", "lr": 0.5})
    b = convnet_engine("reptile", meta_optimizer={"name": "sgd", "lr": 0.5})
    for _ in range(8):
        a.step()
        b.step()
    assert not torch.equal(a.phi, convnet_engine().phi)  # phi did move
    assert torch.equal(a.phi, b.phi)
    assert torch.equal(a.thetas, b.thetas)


def test_shift_moves_every_theta_by_the_change_in_phi_and_leaves_heads_and_bn_alone():
    e = convnet_engine("cts", meta_optimizer={"name": "sgd", "lr": 0.3})
    e.step()  # build momentum and BN statistics first
    e._forward_backward()
    for opt in e.optimizers:
        opt.step()
    thetas_before, phi_before = e.thetas.clone(), e.phi.detach().clone()
    heads_before = [{k: v.clone() for k, v in h.state_dict().items()} for h in e.heads]
    buffers_before = [{k: v.clone() for k, v in m.named_buffers()} for m in e.backbones]
    delta = e._meta_step()
    assert delta.abs().max() > 0
    assert torch.allclose(e.phi.detach() - phi_before, delta)
    # (theta + delta) - theta rounds to a few ulps of theta in fp32
    ulps = 4 * torch.finfo(torch.float32).eps * thetas_before.abs().max().item()
    assert torch.allclose(e.thetas - thetas_before, delta.expand_as(thetas_before), rtol=0, atol=ulps)
    # every parameter tensor of every task model moved by its own slice of delta
    for t, model in enumerate(e.backbones):
        for (name, p), d in zip(model.named_parameters(), e.layout.views(delta)):
            before = e.layout.views(thetas_before[t])[e.layout.names.index(name)]
            assert torch.allclose(p.detach() - before, d, rtol=0, atol=ulps), name
        for k, v in model.named_buffers():
            assert torch.equal(v, buffers_before[t][k]), k
        for k, v in e.heads[t].state_dict().items():
            assert torch.equal(v, heads_before[t][k]), k


def test_bn_statistics_stay_per_task():
    e = convnet_engine("cts")
    for _ in range(4):  # includes a reset
        e.step()
    means = [dict(m.named_buffers())["layers.1.running_mean"] for m in e.backbones]
    assert not torch.equal(means[0], means[1])
    assert torch.equal(dict(e.phi_module.named_buffers())["layers.1.running_mean"], torch.zeros_like(means[0]))


@pytest.mark.parametrize("reset", ["soft", "hard"])
def test_soft_and_hard_reset(reset):
    e = convnet_engine("reptile", reset=reset, reset_heads=True, reset_period=2,
                       inner_optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9})
    e.step()
    r = e.step()
    assert r.reset
    assert torch.equal(e.thetas, e.phi.detach().expand_as(e.thetas))
    e.step()  # trajectories move away from phi again, momentum builds up
    heads = [h.weight.detach().clone() for h in e.heads]
    e.reset_trajectories()
    assert torch.equal(e.thetas, e.phi.detach().expand_as(e.thetas))
    states = [len(opt.state) for opt in e.optimizers]
    kept = [torch.equal(h.weight, w) for h, w in zip(e.heads, heads)]
    if reset == "soft":
        assert all(s > 0 for s in states)  # momentum kept
        assert all(kept)  # heads kept
    else:
        assert states == [0] * len(states)  # fresh optimizer state
        assert not any(kept)  # fresh heads


def test_meta_exclude_keeps_matching_parameters_per_task():
    e = convnet_engine("cts", meta_exclude=[r"\.1\.(weight|bias)$"], meta_optimizer={"name": "sgd", "lr": 0.5})
    assert not any(n.startswith("layers.1.") for n in e.layout.names)
    for _ in range(4):
        e.step()
    bn_weights = [dict(m.named_parameters())["layers.1.weight"] for m in e.backbones]
    assert not torch.equal(bn_weights[0], bn_weights[1])  # not reset to a shared phi
    with pytest.raises(ConfigError):
        convnet_engine("cts", meta_exclude=[".*"])


def test_all_reduce_hook_sees_local_sum_and_global_count():
    seen = []

    def fake_all_reduce(t):
        seen.append(t.clone())
        t.mul_(2)  # pretend a second process holds identical tasks

    a = quadratic_engine("cts", reset_period=10, all_reduce=fake_all_reduce, num_tasks_total=6)
    b = quadratic_engine("cts", reset_period=10)
    a.step()
    b.step()
    assert len(seen) == 1
    assert torch.allclose(a.phi, b.phi)


def test_config_errors():
    with pytest.raises(ConfigError, match="meta_interval"):
        quadratic_engine("cts", reset_period=2, meta_interval=3)
    with pytest.raises(ConfigError, match="unknown algorithm"):
        quadratic_engine("maml++")
    with pytest.raises(ConfigError, match="reset"):
        quadratic_engine("cts", reset="medium")
    with pytest.raises(ConfigError, match="optimizer"):
        quadratic_engine("cts", inner_optimizer={"name": "lbfgs"})


def test_adam_meta_optimizer_runs_and_moves_phi():
    e = convnet_engine("cts", meta_optimizer={"name": "adam", "lr": 1e-3})
    p0 = e.phi.detach().clone()
    for _ in range(3):
        e.step()
    assert torch.isfinite(e.phi).all() and not torch.equal(e.phi.detach(), p0)


# ---------------------------------------------------------------------------------- robustness and checkpoints
def test_nonfinite_loss_is_skipped_counted_and_never_reaches_phi():
    calls = {"n": 0}

    def poisoned(backbone, head, c):
        calls["n"] += 1
        loss = backbone_only_loss(backbone, head, c)
        return loss * float("nan") if calls["n"] == 2 else loss  # task 1 of step 1

    e = quadratic_engine("cts", reset_period=10, loss_fn=poisoned)
    r = e.step()
    assert torch.isnan(r.losses[1]) and torch.isfinite(r.losses[[0, 2]]).all()
    assert e.skipped_steps == [0, 1, 0] and e.nonfinite_streak == [0, 1, 0]
    assert torch.isfinite(e.phi).all() and torch.isfinite(e.thetas).all()
    # task 1 did not move in its inner step; g = mean(1 - (.5, 1, 2.5)) = -1/3 -> phi = 1 + .1/3
    assert e.phi[0].item() == pytest.approx(1 + 0.1 / 3)
    e.step()
    assert e.skipped_steps == [0, 1, 0] and e.nonfinite_streak == [0, 0, 0]


def test_a_skipped_step_leaves_the_tasks_bn_statistics_as_they_were():
    from ctinit.meta.step import classification_loss

    def poisoned(backbone, head, batch):  # task 1's batch is NaN at step 2
        x, y = batch
        return classification_loss(backbone, head, (x * float("nan") if head is e.heads[1] and e.step_count == 2 else x, y))

    e = convnet_engine("cts", loss_fn=poisoned, execution="sequential")
    e.step()
    before = [{k: v.clone() for k, v in m.named_buffers()} for m in e.backbones]
    assert before[1]  # convnet4-32 has BN running statistics
    r = e.step()
    assert r.skipped == [1] and e.skipped_steps == [0, 1, 0]
    for k, v in e.backbones[1].named_buffers():
        assert torch.equal(v, before[1][k]) and torch.isfinite(v.double()).all(), k  # the NaN batch never reached them
    after0 = dict(e.backbones[0].named_buffers())
    assert any(not torch.equal(after0[k], v) for k, v in before[0].items())  # task 0 kept its update
    e.step()
    assert all(torch.isfinite(v.double()).all() for m in e.backbones for v in m.buffers())


@pytest.mark.parametrize("rule", ["fomaml-k", "leap"])
def test_a_nonfinite_meta_step_forward_reaches_neither_phi_nor_bn_statistics(rule):
    # FOMAML's held-out batch and Leap's end-of-trajectory loss come from one more forward at the meta-step.
    from ctinit.meta.step import classification_loss

    calls = {"n": 0}

    def poisoned(backbone, head, batch):  # task 1's third forward: the meta-step's extra one at step 2 (K = 2)
        x, y = batch
        if head is e.heads[1]:
            calls["n"] += 1
            if calls["n"] == 3:
                x = x * float("nan")
        return classification_loss(backbone, head, (x, y))

    e = convnet_engine(rule, loss_fn=poisoned, reset_period=2, execution="sequential")
    e.step()
    r = e.step()
    assert r.meta_step and calls["n"] == 3
    assert torch.isfinite(e.phi).all() and torch.isfinite(e.thetas).all()
    assert all(torch.isfinite(v.double()).all() for m in e.backbones for v in m.buffers())
    if rule == "fomaml-k":
        assert e.skipped_steps == [0, 1, 0]  # its held-out gradient was left out of g
    for _ in range(2):
        e.step()
    assert torch.isfinite(e.phi).all()


@pytest.mark.parametrize("rule", ["cts", "leap", "fomaml"])
def test_state_dict_resume_is_bitwise(rule):
    adam = {"name": "adam", "lr": 1e-3}
    # b starts from a different init on purpose: everything must come from the state
    a, b = resumed_pair(lambda: convnet_engine(rule, inner_optimizer=adam), 3,
                        lambda: convnet_engine(rule, seed=1, inner_optimizer=adam))
    assert torch.equal(a.phi, b.phi) and torch.equal(a.thetas, b.thetas)
    assert all(torch.equal(x.weight, y.weight) for x, y in zip(a.heads, b.heads))


def test_bf16_autocast_keeps_phi_fp32_and_finite():
    e = convnet_engine("cts", autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    for _ in range(3):
        r = e.step()
    assert r.losses.dtype == torch.float32 and torch.isfinite(r.losses).all()
    assert e.phi.dtype == torch.float32 and torch.isfinite(e.phi).all()


def test_fp16_loss_scaling_runs_per_task():
    e = convnet_engine("fomaml", autocast=lambda: torch.autocast("cpu", dtype=torch.float16), grad_scaling=True)
    for _ in range(4):
        e.step()
    assert len(e.scalers) == e.num_tasks and torch.isfinite(e.phi).all()
