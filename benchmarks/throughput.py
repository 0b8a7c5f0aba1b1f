"""Throughput: what meta-learning with CTS costs next to training the same tasks independently.

    python benchmarks/throughput.py [--device cpu|cuda] [--json] [--backbones resnet20,convnet4-32,convnet4]
                                    [--tasks 8] [--batch-size B] [--image-size S] [--rounds R]
                                    [--mixed-precision no|bf16] [--no-batched] [--scaling] [--finetune]

For each backbone, three ways of training the same T tasks (same initial weights, same synthetic uint8 data through
``ctinit.tasks.BatchSampler`` with the same seeds, random crop and flip, heads of different widths) are built and
timed side by side, interleaved: rounds that each time a block of steps (about --block-seconds) of every variant, the
order rotating from round to round, so that a load change on the machine hits every variant alike; at least
--rounds rounds, then more until the 95% interval of the median cts/plain ratio is within +-0.015 or
--budget-seconds have passed. Reported per variant: the median step time over the rounds and task-steps/s (and
achieved GFLOP/s from torch's FLOP counter; on CUDA, memory per task and the fraction of the card's peak); per pair
of variants: the median over rounds of the per-round time ratio, with its 95% interval, quartiles and range (the
noise), and the 1-minute load average before and after.

- ``plain``: the floor, no meta-learning: per task a plain PyTorch loop (zero_grad, forward, cross-entropy,
  backward, ``torch.optim.SGD`` step with momentum .9, weight decay 5e-4; torch's default per-tensor update);
- ``cts``: ``ctinit.meta.TrajectoryEngine`` with CTS (meta-update and shift after every step), sequential;
- ``cts_batched``: the same engine with ``execution="batched"`` (all tasks as one grouped program).

``--compile-variants`` (CUDA; issue 13) adds, all batched: ``scratch_batched`` (the engine without meta-learning,
eager: the plain floor of batched execution), ``cts_graphs`` and ``scratch_graphs`` (``compile="graphs"``: the whole
global step replayed as one CUDA graph, batches drawn on the device by ``ctinit.tasks.DeviceBatchSampler``), and with
``--inductor`` ``cts_inductor`` (``compile="inductor"``). ``--channels-last`` runs the engine variants channels-last.
``--variants a,b`` keeps only the named variants (``plain`` and ``cts`` are always built: the ratio needs them).
Per mode the CTS / plain ratio is reported (``ratio_by_mode``: sequential cts/plain, batched
cts_batched/scratch_batched, graphs cts_graphs/scratch_graphs), and per variant the projected wall time of the
paper's run (8 tasks x 200k steps = 1.6M task-steps) at the measured rate.

``overhead_ratio`` is cts / plain step time for ResNet-20, ``overhead_ratio_small`` the same for the small
ConvNet, ``convnet4-32`` (the 4-layer, 32-channel ConvNet of the project's main job, training/recipes/quickstart.yaml,
which the README calls "a small ConvNet"; it has the least compute per step, so fixed per-step costs weigh most).
``convnet4`` (64 channels) is measured too and reported as ``overhead_ratio_convnet4``.

``--before REV`` adds the engine as of git revision REV (``cts_before``, sequential) to the interleaved variants, and
times the engine's own per-step parts (inner optimizer steps, meta-update and shift, non-finite check) in both.

``--scaling`` adds multi-process scaling: ``ctinit-train`` on the quickstart recipe (8 bundled
tasks) as one process with 1 thread, one process with 2 threads, and ``torchrun --nproc_per_node 2`` with 1 thread
each, interleaved; task-steps/s come from ``OUT/metrics.jsonl`` between the first and the last record (start-up
excluded). ``--finetune`` adds fine-tuning throughput: images/s of ``ctinit.finetune.finetune`` against a plain loop
of the same model, batch, sampler and optimizer, interleaved step by step (through finetune's ``on_step``).

``--json`` prints one JSON object on stdout; progress goes to stderr. A benchmark, not a test: nothing here asserts.
"""
from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # so that `python benchmarks/throughput.py` finds ctinit without installing it
    sys.path.insert(0, str(REPO_ROOT))

from ctinit.meta import TrajectoryEngine  # noqa: E402
from ctinit.models import TaskHead, build_backbone  # noqa: E402
from ctinit.tasks import BatchSampler, DeviceBatchSampler  # noqa: E402

#: Class counts of the bundled meta-train suite: heads of different widths, as in the main job.
CLASSES = (10, 26, 24, 32, 38, 22, 45, 28)
INNER = {"name": "sgd", "lr": 1e-2, "momentum": 0.9, "weight_decay": 5e-4}
META = {"name": "sgd", "lr": 1e-2}
SMALL = "convnet4-32"
PAPER_TASK_STEPS = 1_600_000  # 8 tasks x 200k steps (Shin et al., 2021)
#: Dense tensor-core peak TFLOP/s (SXM cards) for the FLOP/s estimate: "no" is TF32, which cuDNN convolutions use for
#: fp32 by default (torch.backends.cudnn.allow_tf32), "bf16" is bf16. Override with --peak-tflops.
PEAK_TFLOPS = {"H100": {"no": 494.0, "bf16": 989.0}, "H200": {"no": 494.0, "bf16": 989.0},
               "A100": {"no": 156.0, "bf16": 312.0}}


def say(*args):
    print(*args, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------- the variants
def make_data(num_tasks: int, image_size: int, per_task: int, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    data = []
    for t in range(num_tasks):
        c = CLASSES[t % len(CLASSES)]
        x = torch.randint(0, 256, (per_task, 1, image_size, image_size), dtype=torch.uint8, generator=g)
        y = torch.randint(0, c, (per_task,), generator=g)
        data.append((x.to(device), y.to(device)))
    return data


def samplers(data, batch_size: int) -> list[BatchSampler]:
    return [BatchSampler(x, y, batch_size, seed=t, augment=True, hflip=True) for t, (x, y) in enumerate(data)]


def device_samplers(data, batch_size: int) -> list[DeviceBatchSampler]:
    return [DeviceBatchSampler(x, y, batch_size, seed=t, augment=True, hflip=True) for t, (x, y) in enumerate(data)]


def autocast_factory(precision: str, device: torch.device):
    if precision == "no":
        return None
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


class Plain:
    """The floor: T independent plain PyTorch training loops, one step each per global step."""

    def __init__(self, backbone, heads, sources, precision, device):
        self.models = [copy.deepcopy(backbone).train() for _ in heads]
        self.heads = [copy.deepcopy(h).train() for h in heads]
        self.sources = sources
        self.optimizers = [torch.optim.SGD(list(m.parameters()) + list(h.parameters()), lr=INNER["lr"],
                                           momentum=INNER["momentum"], weight_decay=INNER["weight_decay"])
                           for m, h in zip(self.models, self.heads)]
        self.autocast = autocast_factory(precision, device)

    def step(self):
        for model, head, source, opt in zip(self.models, self.heads, self.sources, self.optimizers):
            x, y = source()
            opt.zero_grad(set_to_none=True)
            if self.autocast is None:
                loss = F.cross_entropy(head(model(x)), y)
            else:
                with self.autocast():
                    loss = F.cross_entropy(head(model(x)), y)
            loss.backward()
            opt.step()


class Engine:
    def __init__(self, backbone, heads, sources, precision, device, execution, engine_class=None, rule="cts", **extra):
        kw = {} if engine_class is not None else {"execution": execution, **extra}
        self.engine = (engine_class or TrajectoryEngine)(
            copy.deepcopy(backbone), [copy.deepcopy(h) for h in heads], sources, rule=rule, reset_period=1000,
            meta_interval=1 if rule == "cts" else None, inner_optimizer=INNER, meta_optimizer=META,
            autocast=autocast_factory(precision, device), **kw)

    def step(self):
        self.engine.step()


def engine_at(rev: str):
    """``TrajectoryEngine`` as of git revision ``rev``, with sequential execution where it has a choice.

    The whole ``ctinit`` package of that revision is extracted and imported under another name, so its relative
    imports (``.rules``, ``.batched``, ``..errors``, ...) resolve within it, beside today's package."""
    import importlib.util
    import inspect
    import io
    import tarfile

    tmp = Path(tempfile.mkdtemp(prefix="ctinit-before-"))
    archive = subprocess.run(["git", "archive", rev, "ctinit"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tmp, filter="data")
    name = f"_ctinit_before_{''.join(c if c.isalnum() else '_' for c in rev)}"
    spec = importlib.util.spec_from_file_location(name, tmp / "ctinit" / "__init__.py",
                                                  submodule_search_locations=[str(tmp / "ctinit")])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    engine = importlib.import_module(f"{name}.meta.engine").TrajectoryEngine
    if "execution" in inspect.signature(engine).parameters:
        return functools.partial(engine, execution="sequential")
    return engine


def components(engines: dict, repeats: int = 100) -> dict:
    """Median ms of the engine's own per-step work, interleaved between engines: the inner optimizer steps of all
    tasks, the meta-update with the shift, and the non-finite check."""
    losses = None
    times = {(name, part): [] for name in engines for part in ("inner_optimizer", "meta_update_and_shift", "finite_check")}
    for _ in range(repeats):
        for name, e in engines.items():
            losses = torch.ones(e.num_tasks, device=e.phi.device) if losses is None else losses
            for part, fn in (("inner_optimizer", lambda: [o.step() for o in e.optimizers]),
                             ("meta_update_and_shift", e._meta_step),
                             ("finite_check", lambda: (e._finite_mask if hasattr(e, "_finite_mask") else e._finite_tasks)(losses))):
                sync(e.phi.device)
                t0 = time.perf_counter()
                fn()
                sync(e.phi.device)
                times[(name, part)].append(time.perf_counter() - t0)
    out = {}
    for (name, part), ts in times.items():
        out.setdefault(name, {})[part] = statistics.median(ts) * 1e3
    return out


def flops_per_task_step(backbone, head, x, y) -> float | None:
    """FLOPs of one task's forward + backward (torch's FLOP counter; convolutions and matmuls)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:  # pragma: no cover
        return None
    model, head = copy.deepcopy(backbone).train(), copy.deepcopy(head)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(head(model(x)), y).backward()
    return float(counter.get_total_flops())


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ci95(values: list[float]) -> tuple[float, float]:
    """A distribution-free 95% confidence interval of the median (order statistics n/2 -+ 0.98 sqrt(n))."""
    s, n = sorted(values), len(values)
    lo, hi = int(n / 2 - 0.98 * n ** 0.5), int(n / 2 + 0.98 * n ** 0.5 + 0.999)
    return s[max(lo, 0)], s[min(hi, n - 1)]


def quantiles(values: list[float]) -> dict:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    lo, hi = median_ci95(values)
    return {"median": statistics.median(values), "ci95": [lo, hi], "q25": q[0], "q75": q[2], "min": min(values),
            "max": max(values), "n": len(values)}


def bench_backbone(arch: str, args, device) -> dict:
    T = args.tasks
    torch.manual_seed(0)
    backbone = build_backbone(arch, args.image_size).to(device)
    heads = [TaskHead(backbone.feature_dim, CLASSES[t % len(CLASSES)]).to(device) for t in range(T)]
    data = make_data(T, args.image_size, max(4 * args.batch_size, 256), device)
    builders = {
        "plain": lambda: Plain(backbone, heads, samplers(data, args.batch_size), args.mixed_precision, device),
        "cts": lambda: Engine(backbone, heads, samplers(data, args.batch_size), args.mixed_precision, device, "sequential"),
    }
    if args.before:
        before = engine_at(args.before)
        builders["cts_before"] = lambda: Engine(backbone, heads, samplers(data, args.batch_size), args.mixed_precision,
                                                device, "sequential", engine_class=before)
    extra = {"channels_last": True} if args.channels_last else {}
    if not args.no_batched:
        builders["cts_batched"] = lambda: Engine(backbone, heads, samplers(data, args.batch_size), args.mixed_precision,
                                                 device, "batched", **extra)
    if args.compile_variants:
        builders["scratch_batched"] = lambda: Engine(backbone, heads, samplers(data, args.batch_size),
                                                     args.mixed_precision, device, "batched", rule="scratch", **extra)
        for rule in ("cts", "scratch"):
            builders[f"{rule}_graphs"] = functools.partial(
                lambda rule: Engine(backbone, heads, device_samplers(data, args.batch_size), args.mixed_precision,
                                    device, "batched", rule=rule, compile="graphs", **extra), rule)
        if args.inductor:
            builders["cts_inductor"] = lambda: Engine(backbone, heads, device_samplers(data, args.batch_size),
                                                      args.mixed_precision, device, "batched", compile="inductor", **extra)
    if args.variants:
        keep = {"plain", "cts", *args.variants.split(",")}
        builders = {k: v for k, v in builders.items() if k in keep}
    variants, memory, first = {}, {}, {}
    for name, build in builders.items():  # build, warm up (allocations, kernel choices), peak memory per task
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        try:
            v = build()
            for _ in range(args.warmup):
                sync(device)
                t0 = time.perf_counter()
                v.step()
                sync(device)
                first[name] = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - report why a variant is not measured, go on with the rest
            if name in ("plain", "cts"):
                raise
            say(f"{arch}: {name} not measured: {type(e).__name__}: {e}")
            continue
        variants[name] = v
        if device.type == "cuda":  # parameters, optimizer state, activations: everything this variant allocated
            memory[name] = (torch.cuda.max_memory_allocated(device) - base) / T / 2 ** 20
    slowest = max(first.values())
    steps = args.steps or max(1, round(args.block_seconds / slowest))
    say(f"{arch}: warm-up step times " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in first.items())
        + f"; at least {args.rounds} rounds x {steps} step(s) per variant, more while the cts/plain ratio's 95% "
          f"interval is wider than +-{args.ci_target} (at most {args.budget_seconds:.0f} s)")
    times = {name: [] for name in variants}
    names = list(variants)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    start = time.perf_counter()
    r = 0
    while True:
        if r >= args.rounds:
            lo, hi = median_ci95([c / p for c, p in zip(times["cts"], times["plain"])])
            if (hi - lo) / 2 <= args.ci_target or time.perf_counter() - start > args.budget_seconds or r >= args.max_rounds:
                break
        order = names[r % len(names):] + names[:r % len(names)]
        r += 1
        for name in order:
            sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                variants[name].step()
            sync(device)
            times[name].append((time.perf_counter() - t0) / steps)
    x, y = variants["plain"].sources[0]()
    flops = flops_per_task_step(backbone, heads[0], x, y)
    out = {"params": sum(p.numel() for p in backbone.parameters()), "steps_per_block": steps, "rounds": r,
           "seconds": time.perf_counter() - start, "loadavg_1min_before_after": [load_before, os.getloadavg()[0]]
           if load_before is not None else None, "variants": {}}
    for name, ts in times.items():
        med = statistics.median(ts)
        out["variants"][name] = {"step_ms": quantiles([t * 1e3 for t in ts]), "task_steps_per_s": T / med,
                                 "achieved_gflops": (flops * T / med / 1e9) if flops else None,
                                 # the paper's run: 8 tasks x 200k steps, at this rate
                                 "projected_hours_1p6M_task_steps": PAPER_TASK_STEPS * med / T / 3600}
        if name in memory:
            out["variants"][name]["memory_mib_per_task"] = memory[name]
    out["gflop_per_task_step"] = flops / 1e9 if flops else None
    out["ratio_cts_over_plain"] = quantiles([c / p for c, p in zip(times["cts"], times["plain"])])
    if "cts_before" in times:
        out["ratio_before_over_plain"] = quantiles([b / p for b, p in zip(times["cts_before"], times["plain"])])
        out["ratio_cts_over_before"] = quantiles([c / b for c, b in zip(times["cts"], times["cts_before"])])
        out["components_ms"] = components({"cts": variants["cts"].engine, "cts_before": variants["cts_before"].engine})
    by_mode = {"sequential": ("cts", "plain"), "batched": ("cts_batched", "scratch_batched"),
               "graphs": ("cts_graphs", "scratch_graphs")}
    out["ratio_by_mode"] = {mode: quantiles([c / p for c, p in zip(times[a], times[b])])
                            for mode, (a, b) in by_mode.items() if a in times and b in times}
    if "cts_graphs" in times and "cts_batched" in times:
        out["graphs_speedup_over_batched"] = statistics.median(times["cts_batched"]) / statistics.median(times["cts_graphs"])
    if "cts_batched" in times:
        out["ratio_batched_over_cts"] = quantiles([b / c for b, c in zip(times["cts_batched"], times["cts"])])
        out["batched_speedup"] = statistics.median(times["cts"]) / statistics.median(times["cts_batched"])
    say(f"{arch}: " + ", ".join(f"{k} {v['step_ms']['median']:.1f} ms/step ({v['task_steps_per_s']:.1f} task-steps/s)"
                                for k, v in out["variants"].items()))
    return out


# ----------------------------------------------------------------------------------------- CPU execution modes
#: ``--cpu-modes``: the backbones at the recipes' sizes (quickstart, study and zoo: batch 32; convnet4-32 at 28 px,
#: ResNet-20 at 32 px as in the zoo's colour recipe).
CPU_MODE_BACKBONES = (("convnet4-32", 28), ("resnet20", 32))
#: name -> (engine options, precision, threads or None for the process's, fp32-exact). "Exact" modes compute the
#: same fp32 training up to rounding (tests/test_compiled.py, tests/test_batched.py); bf16 modes do not.
CPU_MODES = {
    "eager": ({}, "no", None, True),
    "eager_1_thread": ({}, "no", 1, True),
    "channels_last": ({"channels_last": True}, "no", None, True),
    "batched": ({"execution": "batched"}, "no", None, True),
    "compiled": ({"compile": "backbone"}, "no", None, True),
    "compiled_channels_last": ({"compile": "backbone", "channels_last": True}, "no", None, True),
    "eager_bf16": ({}, "bf16", None, False),
    "compiled_bf16": ({"compile": "backbone"}, "bf16", None, False),
    "channels_last_bf16": ({"channels_last": True}, "bf16", None, False),
    "compiled_channels_last_bf16": ({"compile": "backbone", "channels_last": True}, "bf16", None, False),
}


def cpu_bf16_supported() -> bool:
    """Whether oneDNN has bf16 kernels on this CPU (AVX512-BF16 or AMX; otherwise bf16 is emulated, slowly)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def matmul_peak_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """The machine's practical peak: the best of ``repeats`` timed ``n x n`` matmuls (2 n^3 FLOPs each)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def bench_cpu_modes(args) -> dict:
    """Every CPU execution mode of the CTS engine side by side: rounds of a block of steps per mode, the order
    rotating each round, for --budget-seconds per backbone after warm-up (which includes compiling)."""
    device = torch.device("cpu")
    bf16 = cpu_bf16_supported()
    wanted = [m for m in (args.modes.split(",") if args.modes else CPU_MODES) if m in CPU_MODES]
    wanted = [m for m in wanted if CPU_MODES[m][1] == "no" or bf16]
    threads = torch.get_num_threads()
    peak_before = {"fp32": matmul_peak_gflops(torch.float32), "bf16": matmul_peak_gflops(torch.bfloat16) if bf16 else None}
    result = {"bf16_supported": bf16, "threads": threads, "modes": {}, "speedup_fp32": {}, "speedup_bf16": {},
              "achieved_gflops": {}, "backbones": {}}
    for arch, size in CPU_MODE_BACKBONES:
        if args.backbones and arch not in args.backbones.split(","):
            continue
        torch.manual_seed(0)
        backbone = build_backbone(arch, size)
        heads = [TaskHead(backbone.feature_dim, CLASSES[t % len(CLASSES)]) for t in range(args.tasks)]
        data = make_data(args.tasks, size, max(4 * args.batch_size, 256), device)
        flops = statistics.mean(flops_per_task_step(backbone, heads[t], *samplers(data, args.batch_size)[t]())
                                for t in range(args.tasks))
        engines, warm = {}, {}
        for name in wanted:
            options, precision, mode_threads, _ = CPU_MODES[name]
            torch.set_num_threads(mode_threads or threads)
            options = {"execution": "sequential", **options}
            engine = Engine(backbone, heads, samplers(data, args.batch_size), precision, device, **options)
            t0 = time.perf_counter()
            engine.step()  # compiles, if the mode compiles
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            engine.step()
            warm[name] = {"first_step_s": first, "second_step_s": time.perf_counter() - t0}
            engines[name] = engine
            say(f"cpu-modes {arch}: {name}: first step {first:.1f} s")
        torch.set_num_threads(threads)
        steps = args.steps or max(1, round(args.block_seconds / warm["eager"]["second_step_s"]))
        times = {name: [] for name in engines}
        load_before = os.getloadavg()[0]
        start, r = time.perf_counter(), 0
        while r < args.rounds or (time.perf_counter() - start < args.budget_seconds and r < args.max_rounds):
            names = list(engines)
            for name in names[r % len(names):] + names[:r % len(names)]:
                torch.set_num_threads(CPU_MODES[name][2] or threads)
                t0 = time.perf_counter()
                for _ in range(steps):
                    engines[name].step()
                times[name].append((time.perf_counter() - t0) / steps)
            torch.set_num_threads(threads)
            r += 1
        modes = {}
        for name, ts in times.items():
            med = statistics.median(ts)
            modes[name] = {"fp32_exact": CPU_MODES[name][3], "precision": CPU_MODES[name][1],
                           "threads": CPU_MODES[name][2] or threads, "step_ms": quantiles([t * 1e3 for t in ts]),
                           "task_steps_per_s": args.tasks / med,
                           "speedup": quantiles([e / t for e, t in zip(times["eager"], ts)]),
                           "achieved_gflops": flops * args.tasks / med / 1e9,
                           "compile_seconds": max(warm[name]["first_step_s"] - warm[name]["second_step_s"], 0.0)
                           if "compile" in CPU_MODES[name][0] else None}
        best = {p: max((n for n in modes if modes[n]["fp32_exact"] == (p == "fp32")),
                       key=lambda n: modes[n]["speedup"]["median"], default=None) for p in ("fp32", "bf16")}
        result["modes"][arch] = modes
        for p in ("fp32", "bf16"):
            result[f"speedup_{p}"][arch] = ({"mode": best[p], "speedup": modes[best[p]]["speedup"]["median"],
                                             "ci95": modes[best[p]]["speedup"]["ci95"]} if best[p] else None)
        result["achieved_gflops"][arch] = {n: m["achieved_gflops"] for n, m in modes.items()}
        result["backbones"][arch] = {"image_size": size, "gflop_per_task_step": flops / 1e9, "rounds": r,
                                     "steps_per_block": steps, "seconds": time.perf_counter() - start,
                                     "loadavg_1min_before_after": [load_before, os.getloadavg()[0]]}
        say(f"cpu-modes {arch}: " + ", ".join(f"{n} {m['task_steps_per_s']:.1f} task-steps/s ({m['speedup']['median']:.2f}x)"
                                              for n, m in modes.items()))
    peak_after = {"fp32": matmul_peak_gflops(torch.float32), "bf16": matmul_peak_gflops(torch.bfloat16) if bf16 else None}
    result["peak_gflops"] = {p: max(v for v in (peak_before[p], peak_after[p]) if v is not None) if peak_before[p] else None
                             for p in peak_before}
    result["peak_gflops_before_after"] = {"before": peak_before, "after": peak_after}
    for arch, modes in result["modes"].items():
        for m in modes.values():
            peak = result["peak_gflops"]["bf16" if m["precision"] == "bf16" else "fp32"]
            m["fraction_of_peak"] = m["achieved_gflops"] / peak if peak else None
    return result


# ----------------------------------------------------------------------------------------- scaling
def metrics_rate(out: Path) -> float:
    """Task-steps/s between the first and the last record of a run's metrics.jsonl (start-up excluded)."""
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if l.strip()]
    records = [r for r in records if "task_steps_per_s" in r]
    first, last = records[0], records[-1]
    tasks = len(first["task_loss"])
    elapsed = lambda r: r["step"] * tasks / r["task_steps_per_s"]  # noqa: E731 - the record's time since start
    return (last["step"] - first["step"]) * tasks / (elapsed(last) - elapsed(first))


def bench_scaling(args) -> dict:
    recipe = str(REPO_ROOT / "training" / "recipes" / "quickstart.yaml")
    steps, every = args.scaling_steps, max(1, args.scaling_steps // 4)
    overrides = [f"steps={steps}", f"log_every={every}", f"backbone={args.scaling_backbone}", "device=cpu",
                 *args.scaling_set]
    eager = ["channels_last=false", "compile='off'"]  # the engine before its measured CPU choices (issue 21)
    setups = {
        "1 process, 2 threads, eager": ({"OMP_NUM_THREADS": "2"}, [sys.executable, "-m"], eager),
        "1 process, 1 thread": ({"OMP_NUM_THREADS": "1"}, [sys.executable, "-m"]),
        "1 process, 2 threads": ({"OMP_NUM_THREADS": "2"}, [sys.executable, "-m"]),
        "2 processes (torchrun), 1 thread each": ({"OMP_NUM_THREADS": "1"},
                                                  [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                                   "-m"]),
    }
    rates = {k: [] for k in setups}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.scaling_repeats):
            for i, (name, (env, launcher, *extra)) in enumerate(setups.items()):
                out = Path(tmp) / f"run-{r}-{i}"
                one = [] if "torch.distributed.run" in launcher else ["--cpu-processes", "1"]  # no relaunch
                cmd = [*launcher, "ctinit_training.meta_train", "--config", recipe, "--out", str(out), "--no-progress",
                       *one, *overrides, *(extra[0] if extra else [])]
                proc = subprocess.run(cmd, env={**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)}, cwd=REPO_ROOT,
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
                rates[name].append(metrics_rate(out))
                say(f"scaling: {name}: {rates[name][-1]:.1f} task-steps/s")
    med = {k: statistics.median(v) for k, v in rates.items()}
    best = {k: max(v) for k, v in rates.items()}  # the run least disturbed by other load on the machine

    def efficiency(r):
        eager, one, two_threads, two_procs = r.values()
        return {"efficiency_2_processes": two_procs / (2 * one), "efficiency_2_threads": two_threads / (2 * one),
                "speedup_2_processes_over_2_threads": two_procs / two_threads,
                "speedup_over_eager": {k: v / eager for k, v in r.items()}}
    return {"recipe": "training/recipes/quickstart.yaml", "overrides": overrides, "repeats": args.scaling_repeats,
            "task_steps_per_s": med, "best_task_steps_per_s": best, "all_runs": rates,
            **efficiency(med), "best": efficiency(best)}


# ----------------------------------------------------------------------------------------- fine-tuning
def bench_finetune(args, device) -> dict:
    """``ctinit.finetune.finetune`` against a plain loop (same model, head, batch, sampler, Adam), interleaved step by
    step: ``finetune``'s ``on_step`` callback runs one step of the plain loop, so every fine-tuning step is timed
    next to a plain step (the time between callbacks, less the plain step, is the fine-tuning step)."""
    from ctinit.finetune import FinetuneConfig, finetune
    from ctinit.tasks import load_task

    arch, batch, steps = args.finetune_backbone, args.finetune_batch_size, args.finetune_steps
    torch.manual_seed(0)
    backbone = build_backbone(arch, 28).to(device)
    task = load_task("builtin:latin", image_size=28, seed=0)
    warm = min(5, steps - 1)
    pairs = []  # (finetune step seconds, plain step seconds)
    calls = []
    for _ in range(args.finetune_repeats):
        torch.manual_seed(0)
        model = copy.deepcopy(backbone).train()
        head = TaskHead(model.feature_dim, task.num_classes).to(device)
        local = task.to(device)
        sampler = BatchSampler(local.x_train, local.y_train, batch, seed=0, augment=True, hflip=local.hflip)
        opt = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=1e-3)
        last = {"end": None, "first": None}

        def plain_step():
            x, y = sampler()
            loss = F.cross_entropy(head(model(x)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def on_step(step):
            sync(device)
            entered = time.perf_counter()
            plain_step()
            sync(device)
            left = time.perf_counter()
            if step > warm:
                pairs.append((entered - last["end"], left - entered))
            if last["first"] is None:
                last["first"] = entered
            last["end"] = left

        t0 = time.perf_counter()
        finetune(copy.deepcopy(backbone), task, FinetuneConfig(steps=steps, batch_size=batch, progress=False,
                                                                channels_last=False),
                 device=device, on_step=on_step)
        # set-up until the end of the first step, and what follows the last step (the test-split evaluation)
        calls.append((last["first"] - t0, time.perf_counter() - last["end"]))
    ft = statistics.median(p[0] for p in pairs)
    plain = statistics.median(p[1] for p in pairs)
    ratios = [p[1] / p[0] for p in pairs]  # images/s ratio finetune / plain = plain time / finetune time
    say(f"finetune: finetune {batch / ft:.0f} images/s, plain loop {batch / plain:.0f} images/s, "
        f"ratio {statistics.median(ratios):.3f} over {len(pairs)} step pairs")
    return {"backbone": arch, "batch_size": batch, "steps": steps, "repeats": args.finetune_repeats,
            "task": "builtin:latin", "timed_step_pairs": len(pairs),
            "images_per_s": {"finetune": batch / ft, "plain": batch / plain},
            "ratio": quantiles(ratios),
            "setup_and_first_step_seconds": statistics.median(c[0] for c in calls),
            "after_last_step_seconds": statistics.median(c[1] for c in calls)}


# ----------------------------------------------------------------------------------------- main
def report_cpu_modes(modes: dict, args, result: dict, started: float) -> int:
    result.update(modes)
    result["seconds"] = time.perf_counter() - started
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    peak = result["peak_gflops"]
    print(f"{args.tasks} tasks, batch {args.batch_size}, cpu ({result['machine']['cpu']}, {result['threads']} threads); "
          f"peak (matmul) fp32 {peak['fp32']:.0f} GFLOP/s" + (f", bf16 {peak['bf16']:.0f}" if peak["bf16"] else ", no bf16"))
    print(f"{'backbone':<12} {'mode':<24} {'ms/step':>8} {'task-steps/s':>13} {'speedup':>8} {'GFLOP/s':>8} {'of peak':>8} {'compile s':>9}")
    for arch, ms in result["modes"].items():
        for name, m in ms.items():
            c = f"{m['compile_seconds']:.0f}" if m["compile_seconds"] is not None else "-"
            print(f"{arch:<12} {name:<24} {m['step_ms']['median']:>8.1f} {m['task_steps_per_s']:>13.1f} "
                  f"{m['speedup']['median']:>7.2f}x {m['achieved_gflops']:>8.1f} {m['fraction_of_peak']:>8.1%} {c:>9}")
    for p in ("fp32", "bf16"):
        print(f"speedup_{p}: " + ", ".join(f"{a} {v['mode']} {v['speedup']:.2f}x" for a, v in result[f"speedup_{p}"].items() if v))
    for arch, t in result.get("trainer", {}).get("backbones", {}).items():
        print(f"ctinit-train {arch} over eager fp32 one process (end to end): " + ", ".join(
            f"{s} {v['end_to_end']['median']:.2f}x" for s, v in t["speedup_over_eager_fp32_1_process"].items()))
    return 0


def machine(device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count()}
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
        info["cpu"] = next((l.split(":", 1)[1].strip() for l in lines if l.startswith("Model name")), platform.processor())
    except OSError:
        info["cpu"] = platform.processor()
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--backbones", default=f"resnet20,{SMALL},convnet4", help="comma-separated; 'none' for only --scaling/--finetune")
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=None, help="default: 32 on the CPU, 128 on CUDA")
    p.add_argument("--image-size", type=int, default=None, help="default: 28 on the CPU, 32 on CUDA")
    p.add_argument("--rounds", type=int, default=None, help="minimum interleaved timing rounds (default: 9 CPU, 20 CUDA)")
    p.add_argument("--max-rounds", type=int, default=200)
    p.add_argument("--ci-target", type=float, default=0.015,
                   help="stop adding rounds when the 95%% interval of the median cts/plain ratio is within +- this")
    p.add_argument("--budget-seconds", type=float, default=40.0, help="time limit for adding rounds, per backbone")
    p.add_argument("--steps", type=int, default=0, help="steps per timed block (default: about --block-seconds)")
    p.add_argument("--block-seconds", type=float, default=0.25)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, i.e. the cores)")
    p.add_argument("--mixed-precision", default="no", choices=["no", "bf16"])
    p.add_argument("--no-batched", action="store_true", help="skip the batched-execution variant")
    p.add_argument("--compile-variants", action="store_true",
                   help="add scratch_batched, cts_graphs and scratch_graphs (CUDA graphs need --device cuda)")
    p.add_argument("--inductor", action="store_true", help="with --compile-variants: add cts_inductor (torch.compile)")
    p.add_argument("--channels-last", action="store_true", help="engine variants run channels-last")
    p.add_argument("--variants", default=None, help="comma-separated variants to keep besides plain and cts")
    p.add_argument("--before", metavar="REV", default=None,
                   help="also time the engine as of git revision REV (variant cts_before), and its per-step parts")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, for the achieved-FLOP/s fraction")
    p.add_argument("--cpu-modes", action="store_true",
                   help="every CPU execution mode side by side (convnet4-32 at 28 px, ResNet-20 at 32 px), with the "
                        "machine's matmul peak; replaces the plain/cts comparison")
    p.add_argument("--modes", default=None, help=f"with --cpu-modes: comma-separated subset of {', '.join(CPU_MODES)}")
    p.add_argument("--trainer", action="store_true",
                   help="with --cpu-modes: also ctinit-train end to end, its defaults against eager fp32 one-process "
                        "(benchmarks/trainer_defaults.py; --trainer-steps, --trainer-repeats)")
    p.add_argument("--trainer-steps", type=int, default=300)
    p.add_argument("--trainer-repeats", type=int, default=3)
    p.add_argument("--scaling", action="store_true", help="also measure 1 vs 2 CPU processes (meta_train subprocesses)")
    p.add_argument("--scaling-steps", type=int, default=80)
    p.add_argument("--scaling-repeats", type=int, default=2)
    p.add_argument("--scaling-backbone", default=SMALL)
    p.add_argument("--scaling-set", action="append", default=[], metavar="KEY=VALUE",
                   help="with --scaling: a trainer override for every run (e.g. image_size=32)")
    p.add_argument("--finetune", action="store_true", help="also measure ctinit.finetune against a plain loop")
    p.add_argument("--finetune-backbone", default=SMALL)
    p.add_argument("--finetune-batch-size", type=int, default=128)
    p.add_argument("--finetune-steps", type=int, default=60)
    p.add_argument("--finetune-repeats", type=int, default=2)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("throughput: error: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    gpu = device.type == "cuda"
    args.batch_size = args.batch_size or (128 if gpu else 32)
    args.image_size = args.image_size or (32 if gpu else 28)
    args.rounds = args.rounds or (20 if gpu else 9)
    if args.threads:
        torch.set_num_threads(args.threads)
    if gpu:
        torch.backends.cudnn.benchmark = True
    started = time.perf_counter()
    result = {"config": {"device": args.device, "tasks": args.tasks, "batch_size": args.batch_size,
                         "image_size": args.image_size, "rounds": args.rounds, "warmup": args.warmup,
                         "mixed_precision": args.mixed_precision, "inner_optimizer": INNER, "meta_optimizer": META,
                         "algorithm": "cts", "meta_interval": 1, "classes": list(CLASSES[:args.tasks]),
                         "channels_last": args.channels_last,
                         "small_backbone": SMALL},
              "machine": machine(device), "backbones": {}}
    if args.cpu_modes:
        if gpu:
            print("throughput: error: --cpu-modes measures the CPU; drop --device cuda", file=sys.stderr)
            return 2
        modes = bench_cpu_modes(args)
        if args.trainer:
            from benchmarks import trainer_defaults

            trainer_args = trainer_defaults.parser().parse_args(
                ["--steps", str(args.trainer_steps), "--repeats", str(args.trainer_repeats),
                 *(["--backbones", args.backbones] if args.backbones in ("convnet4-32", "resnet20") else [])])
            modes["trainer"] = trainer_defaults.bench(trainer_args)
        return report_cpu_modes(modes, args, result, started)
    for arch in [a.strip() for a in args.backbones.split(",") if a.strip() and a.strip() != "none"]:
        result["backbones"][arch] = bench_backbone(arch, args, device)
    ratio = lambda arch: result["backbones"][arch]["ratio_cts_over_plain"]["median"] if arch in result["backbones"] else None  # noqa: E731
    result["overhead_ratio"] = ratio("resnet20")
    result["overhead_ratio_small"] = ratio(SMALL)
    result["overhead_ratio_convnet4"] = ratio("convnet4")
    result["batched_speedup"] = {a: r.get("batched_speedup") for a, r in result["backbones"].items()}
    if not gpu:
        result["targets"] = {"overhead_ratio <= 1.05": result["overhead_ratio"] is not None and result["overhead_ratio"] <= 1.05,
                             "overhead_ratio_small <= 1.10": result["overhead_ratio_small"] is not None and result["overhead_ratio_small"] <= 1.10}
    else:
        peak = args.peak_tflops or next((v[args.mixed_precision] for k, v in PEAK_TFLOPS.items() if k in result["machine"]["gpu"]), None)
        result["peak_tflops"] = peak
        for r in result["backbones"].values():
            for v in r["variants"].values():
                v["fraction_of_peak"] = v["achieved_gflops"] / (peak * 1e3) if (peak and v["achieved_gflops"]) else None
    if args.scaling:
        result["scaling"] = bench_scaling(args)
    if args.finetune:
        try:
            result["finetune"] = bench_finetune(args, device)
        except Exception as e:  # noqa: BLE001 - ctinit.finetune may be mid-change elsewhere: report, don't hide the rest
            result["finetune"] = {"error": f"{type(e).__name__}: {e}"}
            say(f"finetune: not measured: {type(e).__name__}: {e}")
    result["seconds"] = time.perf_counter() - started
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{args.tasks} tasks, batch {args.batch_size}, {args.image_size}x{args.image_size}, {args.device} "
          f"({result['machine'].get('gpu') or result['machine']['cpu']}, {result['machine']['threads']} threads), "
          f"interleaved rounds")
    if result["backbones"]:
        print(f"{'backbone':<12} {'variant':<12} {'ms/step':>9} {'task-steps/s':>13} {'GFLOP/s':>8}")
    for arch, r in result["backbones"].items():
        for name, v in r["variants"].items():
            gf = f"{v['achieved_gflops']:.1f}" if v["achieved_gflops"] else "-"
            print(f"{arch:<12} {name:<12} {v['step_ms']['median']:>9.1f} {v['task_steps_per_s']:>13.1f} {gf:>8}")
        q = r["ratio_cts_over_plain"]
        print(f"{arch:<12} cts / plain step time: {q['median']:.3f} (95% interval {q['ci95'][0]:.3f}-{q['ci95'][1]:.3f}, "
              f"quartiles {q['q25']:.3f}-{q['q75']:.3f}, range {q['min']:.3f}-{q['max']:.3f}, {q['n']} rounds)")
        if "ratio_cts_over_before" in r:
            q, b = r["ratio_cts_over_before"], r["ratio_before_over_plain"]
            print(f"{arch:<12} before / plain: {b['median']:.3f} (95% interval {b['ci95'][0]:.3f}-{b['ci95'][1]:.3f}); "
                  f"cts / before: {q['median']:.3f} (95% interval {q['ci95'][0]:.3f}-{q['ci95'][1]:.3f})")
            for name, parts in r["components_ms"].items():
                print(f"{arch:<12} {name}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in parts.items()))
        for mode, q in r.get("ratio_by_mode", {}).items():
            print(f"{arch:<12} {mode}: cts / plain {q['median']:.3f} (95% interval {q['ci95'][0]:.3f}-{q['ci95'][1]:.3f})")
        print(f"{arch:<12} projected hours for 1.6M task-steps: "
              + ", ".join(f"{k} {v['projected_hours_1p6M_task_steps']:.2f}" for k, v in r["variants"].items()))
        if "ratio_batched_over_cts" in r:
            q = r["ratio_batched_over_cts"]
            print(f"{arch:<12} batched / sequential step time: {q['median']:.3f} (95% interval {q['ci95'][0]:.3f}-{q['ci95'][1]:.3f})")
    if result["backbones"]:
        print(f"overhead_ratio {result['overhead_ratio']}, overhead_ratio_small ({SMALL}) {result['overhead_ratio_small']}")
    if "scaling" in result:
        s = result["scaling"]
        for k, v in s["task_steps_per_s"].items():
            print(f"scaling: {k}: {v:.1f} task-steps/s")
        print(f"scaling: efficiency of 2 processes {s['efficiency_2_processes']:.2f}, of 2 threads {s['efficiency_2_threads']:.2f} "
              f"(medians); best runs: {s['best']['efficiency_2_processes']:.2f}, {s['best']['efficiency_2_threads']:.2f}")
        print("scaling: over 1 process, 2 threads, eager (medians): "
              + ", ".join(f"{k} {v:.2f}x" for k, v in s["speedup_over_eager"].items()))
    if "finetune" in result and "error" not in result["finetune"]:
        f = result["finetune"]
        print(f"finetune: {f['images_per_s']['finetune']:.0f} images/s vs plain loop {f['images_per_s']['plain']:.0f} "
              f"(ratio {f['ratio']['median']:.3f}, 95% interval {f['ratio']['ci95'][0]:.3f}-{f['ratio']['ci95'][1]:.3f}, "
              f"{f['ratio']['n']} step pairs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
