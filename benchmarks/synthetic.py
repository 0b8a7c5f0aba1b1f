"""The synthetic 2-D experiment of the CTS paper (Shin et al., ICML 2021, arXiv:2102.07215, Sec. 4.1 / Fig. 2).

Eight 2-D tasks, each a rotated, 3x-stretched Himmelblau function

    L_t(x) = c0_t (u^2 + v - 11)^2 + c2_t (u + v^2 - 7)^2,   (u, v) = R(angle_t) (x - target_t) / 3,

with the targets evenly spaced on a circle of radius 7 around (5, 5) and seeded-random angles in [0, 2 pi) and
weights c0, c2 in (0, 1). Every task has Himmelblau's four global minima (loss 0), moved and rotated.

Reptile (one meta-step every K inner steps, then reset) and CTS (a meta-step and a trajectory shift after every
inner step, reset every K) both run through ``ctinit.meta.TrajectoryEngine`` for the same 240 inner steps, with
the 2-D point x as the "backbone" and parameter-free dummy heads. The score of a final initialization phi is the
long-horizon meta-loss: the mean over the 8 tasks of the task loss after K inner steps (the setting's inner
optimizer, fresh state) from phi.

    python benchmarks/synthetic.py [--json] [--out DIR] [--quick] [--seed N] [--workers N] [--no-plot]
                                   [--plot-k K] [--plot-optimizer NAME] [--plot-start X1 X2]

``--json`` prints one JSON object on stdout (strict JSON: a non-finite value is the string "nan"/"inf");
without it a small table. Progress goes to stderr. A figure of both meta-paths over the meta-loss landscape
(K=120, SGD, start (15, 15) by default) is saved to ``DIR/synthetic_paths.png`` (default benchmarks/results/).
The 108 meta-training runs are spread over ``--workers`` forked processes (default: min(2, CPUs)).
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # so that `python benchmarks/synthetic.py` finds ctinit without installing it
    sys.path.insert(0, str(REPO_ROOT))

from ctinit.meta import OptimizerSpec, TrajectoryEngine  # noqa: E402

NUM_TASKS = 8
TOTAL_STEPS = 240
RESET_PERIODS = (80, 120)
INNER_LR = 0.05
META_LR = 0.1
CIRCLE_CENTER = (5.0, 5.0)
CIRCLE_RADIUS = 7.0
STRETCH = 3.0
START_GRID = (-5.0, 5.0, 15.0)
#: name -> inner optimizer spec (the lr is added from ``INNER_LR``)
OPTIMIZERS = {
    "adam": {"name": "adam"},
    "sgd": {"name": "sgd"},
    "sgd_momentum": {"name": "sgd", "momentum": 0.9},
}
#: Himmelblau's four global minima (u, v); the first is exact, the others to 6 digits.
HIMMELBLAU_MINIMA = ((3.0, 2.0), (-2.805118, 3.131312), (-3.779310, -3.283186), (3.584428, -1.848126))
ALGORITHMS = ("cts", "reptile")


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------- tasks
class Tasks:
    """The task parameters as tensors: ``rot [T, 2, 2]``, ``target [T, 2]``, ``c0 [T]``, ``c2 [T]``."""

    def __init__(self, angles, c0, c2, targets):
        angles = torch.as_tensor(angles, dtype=torch.float32)
        cos, sin = torch.cos(angles), torch.sin(angles)
        self.angles = angles
        self.rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # R(angle)
        self.target = torch.as_tensor(targets, dtype=torch.float32).reshape(-1, 2)
        self.c0 = torch.as_tensor(c0, dtype=torch.float32).reshape(-1)
        self.c2 = torch.as_tensor(c2, dtype=torch.float32).reshape(-1)

    def __len__(self) -> int:
        return self.target.shape[0]

    def task(self, t: int) -> tuple[torch.Tensor, ...]:
        """Task t's loss as coefficients of few torch ops (for ``point_loss``; the engine calls it per task per step).

        With ``A = R / 3``: ``(u, v) = A x - A target`` and ``(v, u) = flip(A) x - flip(A) target``, so
        ``p = (u^2 + v - 11, v^2 + u - 7) = (A x + a) * (A x + a) + (A' x + b)`` and ``L = (c0, c2) . p^2``.
        """
        a_mat = self.rot[t] / STRETCH
        flipped = a_mat.flip(0)
        a = -(a_mat @ self.target[t])
        b = -(flipped @ self.target[t]) - torch.tensor([11.0, 7.0])
        return a_mat, a, flipped, b, torch.stack([self.c0[t], self.c2[t]])

    def minima(self) -> torch.Tensor:
        """``[T, 4, 2]``: the four zero-loss points of every task, ``x = target + 3 R^T (u*, v*)``."""
        uv = torch.tensor(HIMMELBLAU_MINIMA)
        return self.target[:, None, :] + STRETCH * torch.einsum("tji,mj->tmi", self.rot, uv)

    def to_dict(self) -> dict:
        return {"angles": self.angles.tolist(), "c0": self.c0.tolist(), "c2": self.c2.tolist(),
                "targets": self.target.tolist()}


def make_tasks(seed: int = 0, num_tasks: int = NUM_TASKS) -> Tasks:
    rng = np.random.default_rng(seed)
    angles = rng.uniform(0.0, 2 * math.pi, num_tasks)
    c0 = rng.uniform(0.0, 1.0, num_tasks)
    c2 = rng.uniform(0.0, 1.0, num_tasks)
    k = np.arange(num_tasks)
    targets = np.stack([CIRCLE_CENTER[0] + CIRCLE_RADIUS * np.cos(2 * math.pi * k / num_tasks),
                        CIRCLE_CENTER[1] + CIRCLE_RADIUS * np.sin(2 * math.pi * k / num_tasks)], 1)
    return Tasks(angles, c0, c2, targets)


def task_loss(x: torch.Tensor, rot: torch.Tensor, target: torch.Tensor, c0, c2) -> torch.Tensor:
    """``L(x)`` for points ``x [..., 2]``; the task parameters broadcast against the leading dims of x."""
    d = (x - target) / STRETCH
    u = rot[..., 0, 0] * d[..., 0] + rot[..., 0, 1] * d[..., 1]
    v = rot[..., 1, 0] * d[..., 0] + rot[..., 1, 1] * d[..., 1]
    return c0 * (u * u + v - 11) ** 2 + c2 * (u + v * v - 7) ** 2


# ----------------------------------------------------------------------------------------------- engine glue
class Point(nn.Module):
    """The 'backbone': a single 2-D point x."""

    def __init__(self, x):
        super().__init__()
        self.x = nn.Parameter(torch.as_tensor(x, dtype=torch.float32).clone().reshape(2))


def point_loss(backbone: Point, head: nn.Module, batch) -> torch.Tensor:
    """The engine's ``loss_fn``: the 'batch' of a task is its fixed coefficients (``Tasks.task``); no head.

    Equal to ``task_loss`` (see the tests) in 5 ops instead of ~17: on a 2-D point the cost is all per-op
    overhead, and the engine runs 8 of these forward and backward per step.
    """
    a_mat, a, flipped, b, w = batch
    uv = torch.addmv(a, a_mat, backbone.x)
    p = torch.addcmul(torch.addmv(b, flipped, backbone.x), uv, uv)
    return torch.dot(w * p, p)


def inner_spec(optimizer: str) -> dict:
    return {**OPTIMIZERS[optimizer], "lr": INNER_LR}


def make_engine(rule: str, phi0, tasks: Tasks, k: int, optimizer: str) -> TrajectoryEngine:
    """CTS: meta-step after every inner step, shift, reset every K. Reptile: meta-step every K steps, then reset."""
    batches = [(lambda b=tasks.task(t): b) for t in range(len(tasks))]
    heads = [nn.Identity() for _ in range(len(tasks))]  # no parameters: the point is the whole model
    return TrajectoryEngine(
        Point(phi0), heads, batches, rule=rule, reset_period=k,
        meta_interval=1 if rule == "cts" else k,
        inner_optimizer=inner_spec(optimizer), meta_optimizer={"name": "sgd", "lr": META_LR},
        loss_fn=point_loss,
    )


def meta_train(rule: str, phi0, tasks: Tasks, k: int, optimizer: str, steps: int = TOTAL_STEPS) -> dict:
    """Run ``steps`` global steps; return the meta-path (phi0 and phi after every meta-step) and the final phi."""
    engine = make_engine(rule, phi0, tasks, k, optimizer)
    path = [engine.phi.detach().clone()]
    meta_steps = 0
    for _ in range(steps):
        result = engine.step()
        if result.meta_step:
            meta_steps += 1
            path.append(engine.phi.detach().clone())
    return {"phi": engine.phi.detach().clone(), "path": torch.stack(path), "meta_steps": meta_steps}


# ----------------------------------------------------------------------------------------------- evaluation
def adapt_losses(x0: torch.Tensor, tasks: Tasks, k: int, optimizer: str) -> torch.Tensor:
    """Task losses ``[N, T]`` after K inner steps from each of the points ``x0 [N, 2]`` (fresh optimizer state).

    Vectorized in plain torch: one ``[N, T, 2]`` parameter, one optimizer. SGD, momentum and Adam act per
    element and the summed loss gives each (point, task) pair its own gradient, so this is exactly N x T
    independent K-step runs (checked against the engine in the tests).
    """
    x = x0.detach().float().reshape(-1, 1, 2).expand(-1, len(tasks), 2).clone().requires_grad_(True)
    opt = OptimizerSpec.from_dict(inner_spec(optimizer)).build([x])
    for _ in range(k):
        opt.zero_grad(set_to_none=False)
        task_loss(x, tasks.rot, tasks.target, tasks.c0, tasks.c2).sum().backward()
        opt.step()
    with torch.no_grad():
        return task_loss(x, tasks.rot, tasks.target, tasks.c0, tasks.c2)


def meta_loss(x0: torch.Tensor, tasks: Tasks, k: int, optimizer: str) -> torch.Tensor:
    """The long-horizon meta-loss ``[N]``: mean over tasks of the task loss after K inner steps."""
    return adapt_losses(x0, tasks, k, optimizer).mean(1)


def finite_mean(values) -> float | None:
    a = np.asarray(list(values), dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else None


def summarize(settings: list[dict], key: str = "final_meta_loss") -> dict:
    """Means over finite values only; ``diverged`` counts the settings whose value is inf/nan."""
    vals = [s[key] for s in settings]
    out = {key: finite_mean(vals), "diverged": int(sum(not math.isfinite(v) for v in vals)), "n": len(vals)}
    if settings and "final_phi" in settings[0]:  # of those: the meta-training itself blew up (phi is inf/nan)
        out["diverged_training"] = int(sum(not all(map(math.isfinite, s["final_phi"])) for s in settings))
    out["by_k"] = {str(k): finite_mean([s[key] for s in settings if s["k"] == k])
                   for k in sorted({s["k"] for s in settings})}
    out["by_optimizer"] = {o: finite_mean([s[key] for s in settings if s["optimizer"] == o])
                           for o in OPTIMIZERS if any(s["optimizer"] == o for s in settings)}
    return out


def jsonable(obj):
    """A copy with non-finite floats as the strings 'nan', 'inf', '-inf' (strict JSON has neither)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def compare(cts: list[dict], reptile: list[dict]) -> dict:
    """Per-setting head-to-head: in how many settings CTS's final meta-loss is below Reptile's (a diverged
    Reptile run counts as a CTS win if CTS stayed finite, and vice versa)."""
    def better(a, b):
        a = a["final_meta_loss"] if math.isfinite(a["final_meta_loss"]) else math.inf
        b = b["final_meta_loss"] if math.isfinite(b["final_meta_loss"]) else math.inf
        return a < b

    pairs = list(zip(cts, reptile))
    assert all((a["k"], a["optimizer"], a["start"]) == (b["k"], b["optimizer"], b["start"]) for a, b in pairs)
    out = {"cts_better": sum(better(a, b) for a, b in pairs), "reptile_better": sum(better(b, a) for a, b in pairs),
           "n": len(pairs)}
    out["cts_better_by_k"] = {str(k): sum(better(a, b) for a, b in pairs if a["k"] == k)
                              for k in sorted({a["k"] for a, _ in pairs})}
    out["cts_better_by_optimizer"] = {o: sum(better(a, b) for a, b in pairs if a["optimizer"] == o)
                                      for o in OPTIMIZERS if any(a["optimizer"] == o for a, _ in pairs)}
    return out


# ----------------------------------------------------------------------------------------------- plot
def plot_paths(path: Path, tasks: Tasks, k: int, optimizer: str, start, paths: dict, finals: dict,
               lim=(-12.0, 22.0), resolution: int = 171) -> float:
    """Contour of the meta-loss (K steps, ``optimizer``) with both meta-paths and the task minima; returns seconds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    t0 = time.perf_counter()
    g = torch.linspace(lim[0], lim[1], resolution)
    gx, gy = torch.meshgrid(g, g, indexing="xy")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    z = meta_loss(grid, tasks, k, optimizer).reshape(resolution, resolution).numpy().astype(np.float64)
    finite = np.isfinite(z)
    logz = np.where(finite, np.log10(np.maximum(z, 1e-12)), np.nan)
    lo, hi = np.floor(np.nanpercentile(logz, 0.5)), np.ceil(np.nanmax(logz))
    logz = np.clip(logz, lo, hi)
    gx, gy = gx.numpy(), gy.numpy()

    fig, ax = plt.subplots(figsize=(8.6, 8.0), dpi=120)
    levels = np.linspace(lo, hi, 29)
    cf = ax.contourf(gx, gy, logz, levels=levels, cmap="viridis")
    ax.contour(gx, gy, logz, levels=np.arange(lo, hi + 0.5, 1.0), colors="k", linewidths=0.4, alpha=0.5)
    cbar = fig.colorbar(cf, ax=ax, ticks=np.arange(lo, hi + 0.5, 1.0), shrink=0.9)
    cbar.set_label(f"log10 meta-loss: mean over tasks of the loss after K={k} {optimizer} steps")
    handles = []
    if not finite.all():
        ax.contourf(gx, gy, (~finite).astype(float), levels=[0.5, 1.5], colors="none", hatches=["xx"])
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="xx",
                             label=f"K-step {optimizer} diverges (inf/nan) from here"))

    minima = tasks.minima().numpy()
    cmap = plt.get_cmap("tab10")
    for t in range(len(tasks)):
        ax.scatter(minima[t, :, 0], minima[t, :, 1], marker="*", s=80, color=cmap(t), edgecolors="white",
                   linewidths=0.6, zorder=4, label="task minima (4 per task, one colour a task)" if t == 0 else None)
    ax.scatter(tasks.target[:, 0], tasks.target[:, 1], marker="+", s=45, color="white", zorder=4,
               label="task centres (circle r=7 around (5, 5))")
    ax.scatter([start[0]], [start[1]], marker="o", s=110, facecolors="none", edgecolors="white", linewidths=2,
               zorder=4.5, label=f"start phi0 = ({start[0]:g}, {start[1]:g})")
    styles = {"cts": ("tab:red", "o", 1.8, 2), "reptile": ("tab:orange", "s", 2.2, 6)}
    for algo, p in paths.items():
        p = p.numpy()
        color, marker, lw, ms = styles[algo]
        ax.plot(p[:, 0], p[:, 1], "-", color=color, lw=lw, marker=marker, ms=ms, zorder=5,
                label=f"{algo.upper()} meta-path ({len(p) - 1} meta-steps), final phi: meta-loss {finals[algo]:.3g}")
        ax.scatter(p[-1, 0], p[-1, 1], marker="X", s=120, color=color, edgecolors="black", zorder=6)
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.set_aspect("equal")
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    ax.set_title(f"CTS vs Reptile meta-paths, {TOTAL_STEPS} inner steps, reset every K={k}\n"
                 f"inner {optimizer} lr {INNER_LR}, meta SGD lr {META_LR}; "
                 f"{len(tasks)} rotated, 3x-stretched Himmelblau tasks", fontsize=10)
    h, _ = ax.get_legend_handles_labels()
    ax.legend(handles=h + handles, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, fontsize=7.5,
              facecolor="0.75", framealpha=1.0)  # grey, so that the white markers show
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------- main
def _train_job(job: tuple) -> tuple:
    """One meta-training run (picklable, for the worker pool): ``(algo, k, optimizer, start) -> (job, run, s)``."""
    algo, k, optimizer, start = job
    t0 = time.perf_counter()
    out = meta_train(algo, start, _JOB_TASKS, k, optimizer)
    return job, out, time.perf_counter() - t0


_JOB_TASKS: Tasks | None = None  # set before the runs; forked workers inherit it


def train_all(jobs: list[tuple], tasks: Tasks, workers: int) -> dict:
    """Run all jobs, in ``workers`` forked processes (one torch thread each) when workers > 1."""
    global _JOB_TASKS
    _JOB_TASKS = tasks
    results = {}
    if workers > 1 and len(jobs) > 1 and "fork" in mp.get_all_start_methods():
        # Slowest (Adam) first, so that the two workers finish together.
        order = sorted(jobs, key=lambda j: j[2] != "adam")
        with mp.get_context("fork").Pool(min(workers, len(jobs)), initializer=torch.set_num_threads,
                                         initargs=(1,)) as pool:
            for i, (job, out, secs) in enumerate(pool.imap_unordered(_train_job, order), 1):
                results[job] = (out, secs)
                if i % 18 == 0 or i == len(jobs):
                    log(f"[synthetic] {i}/{len(jobs)} meta-training runs done")
    else:
        for i, job in enumerate(jobs, 1):
            _, out, secs = _train_job(job)
            results[job] = (out, secs)
            if i % 18 == 0 or i == len(jobs):
                log(f"[synthetic] {i}/{len(jobs)} meta-training runs done")
    return results


def run(seed: int = 0, quick: bool = False, out: Path | None = None, plot: bool = True, workers: int = 1,
        plot_setting: tuple[int, str, tuple[float, float]] = (120, "sgd", (15.0, 15.0))) -> dict:
    t_start = time.perf_counter()
    torch.manual_seed(seed)
    tasks = make_tasks(seed)
    if quick:  # one K, SGD only, three starts on the diagonal
        ks, optimizers = (120,), ("sgd",)
        starts = [(-5.0, -5.0), (5.0, 5.0), (15.0, 15.0)]
    else:
        ks, optimizers = RESET_PERIODS, tuple(OPTIMIZERS)
        starts = [(a, b) for a in START_GRID for b in START_GRID]
    start_tensor = torch.tensor(starts)

    jobs = [(algo, k, o, s) for k in ks for o in optimizers for algo in ALGORITHMS for s in starts]
    t_train = time.perf_counter()
    runs = train_all(jobs, tasks, workers)
    train_wall = time.perf_counter() - t_train

    settings: dict[str, list[dict]] = {a: [] for a in ALGORITHMS}
    initial: list[dict] = []
    plot_runs: dict = {}
    train_seconds = {a: 0.0 for a in ALGORITHMS}
    for k in ks:
        for optimizer in optimizers:
            phi0_losses = meta_loss(start_tensor, tasks, k, optimizer)
            for s, v in zip(starts, phi0_losses.tolist()):
                initial.append({"k": k, "optimizer": optimizer, "start": list(s), "final_meta_loss": v})
            line = f"[synthetic] K={k:>3} {optimizer:<12} initial {finite_mean(phi0_losses.tolist()):9.4g}"
            for algo in ALGORITHMS:
                group = [runs[(algo, k, optimizer, s)] for s in starts]
                train_seconds[algo] += sum(secs for _, secs in group)
                finals = torch.stack([r["phi"] for r, _ in group])
                values = meta_loss(finals, tasks, k, optimizer).tolist()
                for s, (r, _), v in zip(starts, group, values):
                    settings[algo].append({
                        "k": k, "optimizer": optimizer, "start": list(s), "final_meta_loss": v,
                        "final_phi": r["phi"].tolist(), "meta_steps": r["meta_steps"],
                    })
                    if (k, optimizer, tuple(s)) == (plot_setting[0], plot_setting[1], tuple(plot_setting[2])):
                        plot_runs[algo] = (r["path"], v)
                line += f"  {algo} {finite_mean(values):9.4g}"
            log(line)

    result: dict = {}
    for algo in ALGORITHMS:
        summary = summarize(settings[algo])
        summary["settings"] = settings[algo]
        summary["train_cpu_seconds"] = round(train_seconds[algo], 3)  # summed over runs (workers overlap)
        result[algo] = summary
    init_summary = summarize(initial)
    result["initial"] = {key: init_summary[key] for key in ("final_meta_loss", "diverged", "n", "by_k", "by_optimizer")}
    cts, rep = result["cts"]["final_meta_loss"], result["reptile"]["final_meta_loss"]
    result["cts_below_reptile"] = bool(cts is not None and rep is not None and cts < rep)
    result["comparison"] = compare(settings["cts"], settings["reptile"])
    result["config"] = {
        "seed": seed, "quick": quick, "num_tasks": NUM_TASKS, "total_inner_steps": TOTAL_STEPS,
        "reset_periods": list(ks), "inner_optimizers": {o: inner_spec(o) for o in optimizers},
        "inner_lr": INNER_LR, "meta_optimizer": {"name": "sgd", "lr": META_LR}, "starts": [list(s) for s in starts],
        "reptile_meta_steps": {str(k): TOTAL_STEPS // k for k in ks}, "cts_meta_steps": TOTAL_STEPS,
        "workers": workers, "train_wall_seconds": round(train_wall, 3),
        "stretch": STRETCH, "circle": {"center": list(CIRCLE_CENTER), "radius": CIRCLE_RADIUS},
        "tasks": tasks.to_dict(),
        "final_meta_loss": "mean over settings and start points of the mean over the 8 tasks of the task loss after "
                           "K inner steps (setting's inner optimizer, fresh state) from the final phi; means are over "
                           "finite values only, 'diverged' counts the inf/nan settings",
        "initial": "the same meta-loss at the start points phi0 (no meta-training), for reference",
    }

    if plot and out is not None:
        k, optimizer, start = plot_setting
        if set(plot_runs) != set(ALGORITHMS):
            log(f"[synthetic] plot setting {plot_setting} was not run; no figure")
        else:
            png = Path(out) / "synthetic_paths.png"
            secs = plot_paths(png, tasks, k, optimizer, start, {a: plot_runs[a][0] for a in ALGORITHMS},
                              {a: plot_runs[a][1] for a in ALGORITHMS}, resolution=81 if quick else 171)
            result["figure"] = {"path": str(png), "k": k, "optimizer": optimizer, "start": list(start),
                                "seconds": round(secs, 3)}
            log(f"[synthetic] wrote {png} ({secs:.1f}s)")
    result["seconds"] = round(time.perf_counter() - t_start, 3)
    return result


def format_table(result: dict) -> str:
    def f(v):
        return "n/a" if v is None else f"{v:.4g}"

    cols = ["initial", "cts", "reptile"]
    lines = [f"{'final meta-loss (mean over tasks after K steps)':<48}" + "".join(f"{c:>12}" for c in cols)]
    lines.append("-" * len(lines[0]))
    lines.append(f"{'all settings':<48}" + "".join(f"{f(result[c]['final_meta_loss']):>12}" for c in cols))
    for k in result["cts"]["by_k"]:
        lines.append(f"{'K=' + k:<48}" + "".join(f"{f(result[c]['by_k'][k]):>12}" for c in cols))
    for o in result["cts"]["by_optimizer"]:
        lines.append(f"{'inner ' + o:<48}" + "".join(f"{f(result[c]['by_optimizer'][o]):>12}" for c in cols))
    lines.append(f"{'diverged settings':<48}" + "".join(f"{result[c]['diverged']:>12}" for c in cols))
    if "diverged_training" in result["cts"]:
        lines.append(f"{'  of which meta-training diverged':<48}" + f"{'':>12}"
                     + "".join(f"{result[c]['diverged_training']:>12}" for c in cols[1:]))
    cmp = result["comparison"]
    lines.append(f"CTS below Reptile (mean): {result['cts_below_reptile']};  CTS better in {cmp['cts_better']} of "
                 f"{cmp['n']} settings {cmp['cts_better_by_optimizer']}   ({result['seconds']:.1f}s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results",
                        help="folder of the figure (default benchmarks/results/)")
    parser.add_argument("--quick", action="store_true", help="a subset: K=120, SGD only, 3 starts")
    parser.add_argument("--seed", type=int, default=0, help="seed of the task angles and weights (default 0)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="processes for the meta-training runs (default: min(2, CPUs))")
    parser.add_argument("--plot-k", type=int, default=120, help="K of the plotted setting (default 120)")
    parser.add_argument("--plot-optimizer", default="sgd", choices=list(OPTIMIZERS),
                        help="inner optimizer of the plotted setting (default sgd)")
    parser.add_argument("--plot-start", type=float, nargs=2, default=(15.0, 15.0), metavar=("X1", "X2"),
                        help="start point of the plotted setting (default 15 15)")
    parser.add_argument("--no-plot", action="store_true", help="skip the figure")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2-D problems: threads only add overhead
    try:
        result = run(seed=args.seed, quick=args.quick, out=args.out, plot=not args.no_plot,
                     workers=max(1, args.workers),
                     plot_setting=(args.plot_k, args.plot_optimizer, tuple(args.plot_start)))
    finally:
        torch.set_num_threads(threads)
    if args.json:
        print(json.dumps(jsonable(result), allow_nan=False))
    else:
        print(format_table(result))
    return result


if __name__ == "__main__":
    main()
