"""Batched execution equals sequential execution on a GPU (the correctness half of the GPU run of issue 6).

    python benchmarks/gpu_check.py [--device cuda] [--json]

tests/test_batched.py checks this on the CPU in every CI run; CI has no GPU, so this script repeats the two key
checks on the device where batched execution is the default (``execution=auto`` picks it on CUDA), where grouped
convolutions and per-task batch norm run through other kernels:

1. one inner step of 8 ResNet-20 tasks (heads of 10-45 classes, batch 32, 32x32) from one and the same state:
   losses and head gradients must agree; the backbone gradients of both must be as close to an fp64 reference as
   10x the sequential engine's own rounding (some are small residues of large sums through batch norm, where fp32
   rounding alone gives 1e-3 to 1e-2); phi and the trajectories after the optimizer step and a CTS meta-update must
   agree;
2. 6 steps of the small ConvNet with a trajectory reset after step 3 (ResNet-20 is chaotic over steps even in
   sequential execution alone, see the test): losses, phi and the trajectories must agree;
3. bf16 autocast: both run, phi stays fp32 and finite, and agrees to bf16 precision.

Issue 13 adds the captured step (``compile="graphs"``: the whole global step replayed as one CUDA graph) against
the eager engine, both drawing batches with ``DeviceBatchSampler`` (same seeds), over 8 steps with trajectory resets
after steps 3 and 6 and a non-finite task at step 5 (task 1's images times NaN, set by an eager device write before
the step, so the captured graph sees it too):

4. batched ResNet-20, fp32 (TF32 off): losses, phi and thetas within 1e-3 of eager at every step (the multi-step
   tolerance of check 2), the same skipped task at step 5 and only there, finite phi, thetas and BN statistics;
5. sequential convnet4-32, fp32 (TF32 off): the same;
6. batched ResNet-20, bf16 autocast: phi within 1e-2 (check 3's tolerance), the same skip, fp32 phi;
7. channels_last (batched ResNet-20, fp32, TF32 off, eager): losses and phi within 1e-3 of the default memory format
   over 3 steps;
8. with ``--inductor``: ``compile="inductor"`` (batched convnet4-32, fp32) against eager, as 5 (compiling takes
   minutes; gpu_run.sh runs it last).

TF32 is switched off for 1, 2, 4, 5 and 7 (cuDNN would otherwise round the two kernel choices differently at 1e-3).
Exit status 1 when a check fails; ``--json`` prints the measured differences.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ctinit.meta import TrajectoryEngine  # noqa: E402
from ctinit.models import TaskHead, build_backbone  # noqa: E402
from ctinit.tasks import BatchSampler, DeviceBatchSampler  # noqa: E402

CLASSES = (10, 26, 24, 32, 38, 22, 45, 28)
SGD = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}


class Scaled:
    """A batch source whose images are multiplied by a device scalar (NaN poisons the next steps, graph or not)."""

    def __init__(self, source):
        self.source, self.scale = source, torch.ones((), device=source.x.device)

    def __call__(self):
        x, y = self.source()
        return x * self.scale, y

    def prepare(self):
        self.source.prepare()

    def draw(self):
        x, y = self.source.draw()
        return x * self.scale, y

    def advance(self):
        self.source.advance()


def make_engine(execution, arch, device, size=32, batch_size=32, autocast=None, reset_period=3, sampler=BatchSampler,
                **kw):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    backbone = build_backbone(arch, image_size=size).to(device)
    heads = [TaskHead(backbone.feature_dim, c).to(device) for c in CLASSES]
    sources = []
    for t, c in enumerate(CLASSES):
        x = torch.randint(0, 256, (4 * batch_size, 1, size, size), dtype=torch.uint8, generator=g).to(device)
        y = torch.randint(0, c, (4 * batch_size,), generator=g).to(device)
        source = sampler(x, y, batch_size, seed=t, augment=True, hflip=True)
        sources.append(Scaled(source) if sampler is DeviceBatchSampler else source)
    return TrajectoryEngine(backbone, heads, sources, rule="cts", reset_period=reset_period, meta_interval=1,
                            inner_optimizer=SGD, meta_optimizer={"name": "sgd", "lr": 0.1}, autocast=autocast,
                            execution=execution, **kw)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| over max |a| (0 when both are zero)."""
    a, b = a.detach().double(), b.detach().double()
    scale = a.abs().max().item()
    return (a - b).abs().max().item() / scale if scale else (a - b).abs().max().item()


def reference_grads(engine, batches) -> torch.Tensor:
    """Every task's gradient of the meta-learned parameters in fp64 (the yardstick for both executions' rounding)."""
    rows = []
    for backbone, head, (x, y) in zip(engine.backbones, engine.heads, batches):
        model, h = copy.deepcopy(backbone).double().train(), copy.deepcopy(head).double()
        F.cross_entropy(h(model(x.double())), y).backward()
        rows.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    return torch.stack(rows)


def one_step_resnet(device) -> dict:
    a, b = make_engine("sequential", "resnet20", device), make_engine("batched", "resnet20", device)
    assert b.execution == "batched", b.execution
    for _ in range(2):
        a.step()
    b.load_state_dict(a.state_dict())
    batches = [source() for source in a.batches]
    reference = reference_grads(a, batches).float()
    la, acc_a = a._forward_backward(batches)
    lb, acc_b = b._forward_backward(batches)
    # Per task and parameter tensor: max error over the tensor's largest reference value. Some gradients are small
    # residues of large cancelling sums (through batch norm), so fp32 rounding alone gives errors of 1e-3 there;
    # batched must round no worse than a few times sequential.
    def worst(grads):
        errors, offset = [], 0
        for p in a.backbones[0].parameters():
            n = p.numel()
            errors.append(max(rel(reference[t, offset:offset + n], grads[t, offset:offset + n]) for t in range(len(CLASSES))))
            offset += n
        return max(errors)
    out = {"losses": rel(la, lb), "accuracies_equal": bool(torch.equal(acc_a, acc_b)),
           "grad_error_sequential": worst(a.grads), "grad_error_batched": worst(b.grads),
           "grads_batched_vs_sequential": rel(a.grads, b.grads),
           "head_grads": max(rel(ha.weight.grad, hb.weight.grad) for ha, hb in zip(a.heads, b.heads))}
    for engine in (a, b):
        for opt in engine.optimizers:
            opt.step()
        engine._meta_step()
    out["after_step"] = {"phi": rel(a.phi, b.phi), "thetas": rel(a.thetas, b.thetas)}
    return out


def steps_convnet(device, steps=6) -> dict:
    a, b = make_engine("sequential", "convnet4-32", device), make_engine("batched", "convnet4-32", device)
    losses = 0.0
    for _ in range(steps):
        ra, rb = a.step(), b.step()
        losses = max(losses, rel(ra.losses, rb.losses))
    # phi and the trajectories; optimizer states and BN buffers are left out: random-label gradients are small
    # residues of large sums, whose rounding differs by up to 1e-1 relative in sequential execution alone.
    return {"losses": losses, "phi": rel(a.phi, b.phi), "thetas": rel(a.thetas, b.thetas),
            "phi_moved": rel(make_engine("sequential", "convnet4-32", device).phi, a.phi)}


def bf16(device, steps=3) -> dict:
    cast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
    a = make_engine("sequential", "resnet20", device, autocast=cast)
    b = make_engine("batched", "resnet20", device, autocast=cast)
    for _ in range(steps):
        a.step()
        b.step()
    return {"phi_dtype": str(b.phi.dtype), "finite": bool(torch.isfinite(a.phi).all() and torch.isfinite(b.phi).all()),
            "phi": rel(a.phi, b.phi)}


def compiled_vs_eager(device, arch, execution, compile="graphs", autocast=None, steps=8, poison_step=5) -> dict:
    """Eager and compiled engines side by side over ``steps`` (resets after 3 and 6, task 1 NaN at poison_step)."""
    eager = make_engine(execution, arch, device, autocast=autocast, sampler=DeviceBatchSampler)
    compiled = make_engine(execution, arch, device, autocast=autocast, sampler=DeviceBatchSampler, compile=compile)
    worst = {"losses": 0.0, "phi": 0.0, "thetas": 0.0}
    skips = []
    for step in range(1, steps + 1):
        for e in (eager, compiled):
            e.batches[1].scale.fill_(float("nan") if step == poison_step else 1.0)
        ra, rb = eager.step(), compiled.step()
        finite = torch.isfinite(ra.losses) & torch.isfinite(rb.losses)
        worst["losses"] = max(worst["losses"], rel(ra.losses[finite], rb.losses[finite]))
        worst["phi"] = max(worst["phi"], rel(eager.phi, compiled.phi))
        worst["thetas"] = max(worst["thetas"], rel(eager.thetas, compiled.thetas))
        skips.append([ra.skipped, rb.skipped])
    buffers_finite = all(torch.isfinite(v.double()).all() for m in compiled.backbones for v in m.buffers())
    return {**worst, "execution": compiled.execution, "compile": compiled.compile,
            "captured_graphs": len(compiled._capture.graphs) if compiled._capture is not None else 0,
            "skips_eager_compiled": skips,
            "same_skips": all(a == b == ([1] if i + 1 == poison_step else None) for i, (a, b) in enumerate(skips)),
            "skipped_steps": [eager.skipped_steps, compiled.skipped_steps], "phi_dtype": str(compiled.phi.dtype),
            "finite": bool(torch.isfinite(compiled.phi).all() and torch.isfinite(compiled.thetas).all() and buffers_finite)}


def channels_last_vs_default(device, steps=3) -> dict:
    a = make_engine("batched", "resnet20", device)
    b = make_engine("batched", "resnet20", device, channels_last=True)
    losses = 0.0
    for _ in range(steps):
        ra, rb = a.step(), b.step()
        losses = max(losses, rel(ra.losses, rb.losses))
    return {"losses": losses, "phi": rel(a.phi, b.phi), "thetas": rel(a.thetas, b.thetas)}


def captured_ok(c: dict, tolerance: float) -> bool:
    return (c["compile"] != "off" and c["same_skips"] and c["finite"] and c["phi_dtype"] == "torch.float32"
            and max(c["losses"], c["phi"], c["thetas"]) < tolerance)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--json", action="store_true")
    p.add_argument("--only-compile", action="store_true", help="only the checks of the compiled step (4-8)")
    p.add_argument("--inductor", action="store_true", help="also check compile='inductor' (slow to compile)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: error: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    def guarded(name, fn, *a, **kw):  # a check that raises is reported and fails, the others still run
        try:
            return fn(*a, **kw)
        except Exception as e:  # noqa: BLE001
            print(f"gpu_check: {name}: {type(e).__name__}: {e}", file=sys.stderr)
            return {"error": f"{type(e).__name__}: {e}"}

    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "torch": torch.__version__}
    checks = {}
    tf32_off = lambda: (setattr(torch.backends.cuda.matmul, "allow_tf32", False), setattr(torch.backends.cudnn, "allow_tf32", False))  # noqa: E731
    tf32_on = lambda: (setattr(torch.backends.cuda.matmul, "allow_tf32", True), setattr(torch.backends.cudnn, "allow_tf32", True))  # noqa: E731
    if not args.only_compile:
        tf32_off()
        result["one_step_resnet20"] = one_step_resnet(device)
        result["six_steps_convnet4_32"] = steps_convnet(device)
        tf32_on()
        result["bf16_resnet20"] = bf16(device)
        r, c, h = result["one_step_resnet20"], result["six_steps_convnet4_32"], result["bf16_resnet20"]
        checks.update({
            "resnet20 one step: losses and heads within 1e-4": max(r["losses"], r["head_grads"]) < 1e-4 and r["accuracies_equal"],
            "resnet20 one step: batched gradients as close to fp64 as 10x sequential's rounding (or 1e-4)":
                r["grad_error_batched"] <= max(10 * r["grad_error_sequential"], 1e-4),
            "resnet20 one step: phi and thetas after optimizer + meta step within 1e-4": max(r["after_step"].values()) < 1e-4,
            "convnet4-32 six steps with a reset: losses, phi, thetas within 1e-3":
                max(c["losses"], c["phi"], c["thetas"]) < 1e-3 and c["phi_moved"] > 1e-3,
            "bf16: fp32 phi, finite, within 1e-2": h["phi_dtype"] == "torch.float32" and h["finite"] and h["phi"] < 1e-2,
        })
    if device.type == "cuda":
        tf32_off()
        g1 = result["graphs_batched_resnet20_fp32"] = guarded("graphs batched", compiled_vs_eager, device, "resnet20", "batched")
        g2 = result["graphs_sequential_convnet4_32_fp32"] = guarded("graphs sequential", compiled_vs_eager, device, "convnet4-32", "sequential")
        cl = result["channels_last_resnet20_fp32"] = guarded("channels_last", channels_last_vs_default, device)
        tf32_on()
        cast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
        g3 = result["graphs_batched_resnet20_bf16"] = guarded("graphs bf16", compiled_vs_eager, device, "resnet20", "batched", autocast=cast)
        checks.update({
            "graphs, batched resnet20 fp32, 8 steps with resets and a NaN task: within 1e-3, same skips":
                "error" not in g1 and g1["captured_graphs"] == 1 and captured_ok(g1, 1e-3),
            "graphs, sequential convnet4-32 fp32, same: within 1e-3, same skips":
                "error" not in g2 and g2["captured_graphs"] == 1 and captured_ok(g2, 1e-3),
            "graphs, batched resnet20 bf16, same: phi within 1e-2, same skips, fp32 phi":
                "error" not in g3 and g3["compile"] == "graphs" and g3["same_skips"] and g3["finite"]
                and g3["phi_dtype"] == "torch.float32" and g3["phi"] < 1e-2,
            "channels_last, batched resnet20 fp32, 3 steps: losses and phi within 1e-3":
                "error" not in cl and max(cl["losses"], cl["phi"]) < 1e-3,
        })
        if args.inductor:
            tf32_off()
            i1 = result["inductor_batched_convnet4_32_fp32"] = guarded("inductor", compiled_vs_eager, device, "convnet4-32", "batched", compile="inductor")
            tf32_on()
            checks["inductor, batched convnet4-32 fp32, same: within 1e-3, same skips"] = "error" not in i1 and captured_ok(i1, 1e-3)
    result["checks"] = checks
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for name, ok in checks.items():
            print(f"{'ok  ' if ok else 'FAIL'} {name}")
        print(json.dumps({k: v for k, v in result.items() if k != "checks"}, indent=1))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
