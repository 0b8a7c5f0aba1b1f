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

TF32 is switched off for 1 and 2 (cuDNN would otherwise round the two kernel choices differently at 1e-3). Exit
status 1 when a check fails; ``--json`` prints the measured differences.
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
from ctinit.tasks import BatchSampler  # noqa: E402

CLASSES = (10, 26, 24, 32, 38, 22, 45, 28)
SGD = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}


def make_engine(execution, arch, device, size=32, batch_size=32, autocast=None, reset_period=3):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    backbone = build_backbone(arch, image_size=size).to(device)
    heads = [TaskHead(backbone.feature_dim, c).to(device) for c in CLASSES]
    sources = []
    for t, c in enumerate(CLASSES):
        x = torch.randint(0, 256, (4 * batch_size, 1, size, size), dtype=torch.uint8, generator=g).to(device)
        y = torch.randint(0, c, (4 * batch_size,), generator=g).to(device)
        sources.append(BatchSampler(x, y, batch_size, seed=t, augment=True, hflip=True))
    return TrajectoryEngine(backbone, heads, sources, rule="cts", reset_period=reset_period, meta_interval=1,
                            inner_optimizer=SGD, meta_optimizer={"name": "sgd", "lr": 0.1}, autocast=autocast,
                            execution=execution)


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: error: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "one_step_resnet20": one_step_resnet(device),
              "six_steps_convnet4_32": steps_convnet(device)}
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    result["bf16_resnet20"] = bf16(device)
    r, c, h = result["one_step_resnet20"], result["six_steps_convnet4_32"], result["bf16_resnet20"]
    checks = {
        "resnet20 one step: losses and heads within 1e-4": max(r["losses"], r["head_grads"]) < 1e-4 and r["accuracies_equal"],
        "resnet20 one step: batched gradients as close to fp64 as 10x sequential's rounding (or 1e-4)":
            r["grad_error_batched"] <= max(10 * r["grad_error_sequential"], 1e-4),
        "resnet20 one step: phi and thetas after optimizer + meta step within 1e-4": max(r["after_step"].values()) < 1e-4,
        "convnet4-32 six steps with a reset: losses, phi, thetas within 1e-3":
            max(c["losses"], c["phi"], c["thetas"]) < 1e-3 and c["phi_moved"] > 1e-3,
        "bf16: fp32 phi, finite, within 1e-2": h["phi_dtype"] == "torch.float32" and h["finite"] and h["phi"] < 1e-2,
    }
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
