"""What a study run writes: results.json (``partial`` until complete), results.md and the figures."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from .config import K_SWEEP_ALGORITHMS

CURVES_LABEL = "measured on meta-test tasks, not used for selection"


def machine() -> dict:
    import torch

    from ctinit.execution.compiled import cpu_model

    return {"cpu": cpu_model(), "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def write_results(out: Path, result: dict) -> list[str]:
    """results.json and results.md (a partial result: those two only), and the figures of a complete one."""
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / "results.md").write_text(markdown(result))
    written = ["results.json", "results.md"]
    if result["protocol"] == "long":
        from .long_report import write_figures

        return written + write_figures(result, out)
    if result["partial"]:
        return written
    plot_accuracy(result, out / "accuracy.png")
    written.append("accuracy.png")
    if result["protocol"] == "staged":
        plot_convergence(result["convergence"], out / "convergence.png")
        plot_k_sweep(result["k_sweep"], out / "k_sweep.png")
        written += ["convergence.png", "k_sweep.png"]
    plot_beta({k: v for k, v in _beta_curves(result).items() if k != "note"}, out / "beta.png")
    return written + ["beta.png"]


def _beta_curves(result: dict) -> dict:
    return result["beta_robustness"] if result["protocol"] == "staged" else result["beta_curves_on_meta_test"]


# ----------------------------------------------------------------------------------------- figures
def _axes(size, **subplots):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size, **subplots)


def _save(fig, ax, path: Path, title: str, xlabel: str | None, ylabel: str) -> None:
    import matplotlib.pyplot as plt

    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _err(stats: dict) -> tuple[float, float]:
    if stats["ci95"] is None:
        return 0.0, 0.0
    return stats["mean"] - stats["ci95"][0], stats["ci95"][1] - stats["mean"]


def plot_accuracy(result: dict, path: Path) -> None:
    if result["protocol"] == "staged":
        table = result["tuned"]
        bars = [(table, "full", "tuned, all data"), (table, "limited", "tuned, limited data"),
                (result["paper_protocol"], "full", "paper protocol, all data")]
    else:
        table = result["main"]
        bars = [(table, "full", "rate chosen per meta-seed, all data"),
                (table, "limited", "rate chosen per meta-seed, limited data")]
    names = list(table)
    fig, ax = _axes((9, 4))
    width = 0.8 / len(bars)
    for i, (source, setting, label) in enumerate(bars):
        stats = [source[n][setting] for n in names]
        errs = list(zip(*[_err(s) for s in stats]))
        ax.bar([j + (i - (len(bars) - 1) / 2) * width for j in range(len(names))], [s["mean"] for s in stats], width,
               yerr=errs, capsize=3, label=label)
    ax.set_xticks(range(len(names)), names)
    _save(fig, ax, path, "Fine-tuned from each initialization (mean, 95% interval over meta-seeds)", None,
          "mean test accuracy, meta-test tasks")


def plot_convergence(convergence: dict, path: Path) -> None:
    fig, ax = _axes((7, 4))
    for name, color in (("cts", "tab:blue"), ("reptile", "tab:red")):
        b = convergence[name]
        ax.plot(b["steps"], b["mean"], "o-", color=color, label=f"{name} (mean over meta-seeds)")
        if all(c is not None for c in b["ci95"]):
            ax.fill_between(b["steps"], [c[0] for c in b["ci95"]], [c[1] for c in b["ci95"]], color=color, alpha=0.2,
                            label=f"{name} 95% band")
    _save(fig, ax, path, f"Meta-level convergence ({CURVES_LABEL})", "meta-training step",
          "held-out accuracy (short fine-tuning)")


def plot_k_sweep(k_sweep: dict, path: Path) -> None:
    fig, ax = _axes((6, 4))
    for name, color in (("cts", "tab:blue"), ("reptile", "tab:red")):
        ks = k_sweep["K"]
        stats = [k_sweep[name][str(k)]["full"] for k in ks]
        ax.errorbar(ks, [s["mean"] for s in stats], yerr=list(zip(*[_err(s) for s in stats])), fmt="o-", capsize=3,
                    color=color, label=f"{name} (rate tuned per K)")
    ax.set_xscale("log")
    _save(fig, ax, path, "K sweep (same steps; meta rate and schedule searched per K)",
          "trajectory length K (reset period)", "mean test accuracy, meta-test tasks")


def plot_beta(beta: dict, path: Path) -> None:
    fig, ax = _axes((6, 4))
    colors = ("tab:blue", "tab:red", "tab:green", "tab:orange", "tab:purple", "tab:brown")
    for (name, curve), color in zip(beta.items(), colors):
        width = curve.get("width")
        label = f"{name}: within 1 pt of best over {width['width_decades']:.1f} decades" if width else name
        ax.errorbar(curve["betas"], [s["mean"] for s in curve["stats"]],
                    yerr=list(zip(*[_err(s) for s in curve["stats"]])), fmt="o-", capsize=3, color=color, label=label)
    ax.set_xscale("log")
    _save(fig, ax, path, f"Accuracy vs meta rate ({CURVES_LABEL})", "meta learning rate beta",
          "mean test accuracy, meta-test tasks")


# ----------------------------------------------------------------------------------------- markdown
def _fmt_range(s: dict) -> str:
    """A mean with the range of its per-meta-seed means (no interval: a descriptive summary)."""
    values = s["per_meta_seed"]
    return f"{s['mean']:.3f}" + (f" ({min(values):.3f} - {max(values):.3f})" if len(values) > 1 else "")


def _fmt(stats: dict) -> str:
    ci = stats["ci95"]
    return f"{stats['mean']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{stats['mean']:.3f}"


def _claims_table(claims: dict) -> list[str]:
    lines = ["Claims (paired difference, claim's side minus the other; 95% t-interval over meta-seeds; p two-sided; "
             "Holm: adjusted over every claim of this run):", "",
             "| claim | verdict | Holm | diff | 95% interval | p | pairs | meta-seeds |", "|---|---|---|---|---|---|---|---|"]
    for name, c in claims.items():
        if "margin" in c:
            continue
        ci = f"[{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]" if c["ci95"] else "-"
        p = f"{c['p']:.3g}" if c.get("p") is not None else "-"
        lines.append(f"| {name} | {c['verdict']} | {c['verdict_holm']} | {c['diff']:+.3f} | {ci} | {p} | "
                     f"{c['n_pairs']} | {c['n_meta_seeds']} |")
    same = {k: c for k, c in claims.items() if "margin" in c}
    if same:
        lines += ["", "Equivalence (two one-sided tests: the same within the margin when the 90% interval is inside it):",
                  "", "| claim | verdict | Holm | diff | 90% interval | margin | TOST p |", "|---|---|---|---|---|---|---|"]
        for name, c in same.items():
            ci = f"[{c['ci90'][0]:+.3f}, {c['ci90'][1]:+.3f}]" if c["ci90"] else "-"
            p = f"{c['p']:.3g}" if c.get("p") is not None else "-"
            lines.append(f"| {name} | {c['verdict']} | {c['verdict_holm']} | {c['diff']:+.3f} | {ci} | "
                         f"+-{c['margin']:g} | {p} |")
    return lines


def markdown(result: dict) -> str:
    if result["protocol"] == "long":
        from .long_report import markdown_long

        text = markdown_long(result)
    else:
        text = markdown_staged(result) if result["protocol"] == "staged" else markdown_ratio(result)
    if result["partial"]:
        progress = result["progress"]
        text = (f"**PARTIAL**: {progress['meta_seeds_done']} of {progress['meta_seeds_planned']} meta-seeds done.\n\n"
                + text)
    return text


def markdown_staged(result: dict) -> str:
    cfg = result["config"]
    lines = [f"Suite {cfg['suite']}, preset {cfg['preset']}: {cfg['steps']} meta-steps, K {cfg['reset_period']}, "
             f"meta-seeds {cfg['meta_seeds']}. Mean test accuracy on the meta-test tasks, [95% interval over "
             "meta-seeds]:", "",
             "| algorithm | tuned: meta lr, schedule | tuned, all data | tuned, limited data | paper protocol (lr 1e-2; Leap 1e-2 x K) |",
             "|---|---|---|---|---|"]
    for name in sorted(result["tuned"], key=lambda n: -result["tuned"][n]["full"]["mean"]):
        a, p = result["tuned"][name], result["paper_protocol"][name]
        lr = f"{a['meta_lr']:.3g}, {a['meta_lr_schedule']}" if a.get("meta_lr") is not None else "-"
        lines.append(f"| {name} | {lr} | {_fmt(a['full'])} | {_fmt(a['limited'])} | {_fmt(p['full'])} |")
    lines += [""] + _claims_table(result["claims"])
    lines += ["", f"Beta robustness (constant schedule, all data; {CURVES_LABEL}):", "",
              "| meta lr beta | " + " | ".join(f"{b:g}" for b in cfg["beta_grid"]) + " | within 1 pt of best |",
              "|---" * (len(cfg["beta_grid"]) + 2) + "|"]
    for name, curve in result["beta_robustness"].items():
        if name == "note":
            continue
        w = curve["width"]
        lines.append(f"| {name} | " + " | ".join(_fmt(s) for s in curve["stats"]) +
                     f" | {w['width_decades']:.1f} decades ({w['range'][0]:g}-{w['range'][1]:g})"
                     + (" (reaches the grid's end)" if w["open_low"] or w["open_high"] else "") + " |")
    ks = result["k_sweep"]["K"]
    lines += ["", "K sweep (rate and schedule searched per K; all data):", "",
              "| K | " + " | ".join(str(k) for k in ks) + " |", "|---" * (len(ks) + 1) + "|"]
    for name in K_SWEEP_ALGORITHMS:
        lines.append(f"| {name} | " + " | ".join(
            f"{_fmt(result['k_sweep'][name][str(k)]['full'])} (lr {result['k_sweep'][name][str(k)]['meta_lr']:.3g} "
            f"{result['k_sweep'][name][str(k)]['meta_lr_schedule']})" for k in ks) + " |")
    conv = result["convergence"]
    lines += ["", f"Convergence (held-out accuracy along meta-training, mean [95% band] over meta-seeds; {CURVES_LABEL}):",
              "", "| step | " + " | ".join(str(s) for s in conv["cts"]["steps"]) + " |",
              "|---" * (len(conv["cts"]["steps"]) + 1) + "|"]
    for name in ("cts", "reptile"):
        lines.append(f"| {name} | " + " | ".join(_fmt({"mean": m, "ci95": c}) for m, c in
                                                 zip(conv[name]["mean"], conv[name]["ci95"])) + " |")
    lines += ["", "Search (held-out meta-train tasks' accuracy per (schedule, meta lr)):"]
    for name, s in result["search"].items():
        lines.append(f"- {name}: " + ", ".join(f"{sch[:3]} {lr:.3g} -> {acc:.3f}" for sch, lr, acc in s["scores"])
                     + f"; selected {s['selected_schedule']} {s['selected_lr']:.3g}"
                     + (" (at the end of the extended grid)" if s["at_edge"] else ""))
    return "\n".join(lines) + "\n"


def markdown_ratio(result: dict) -> str:
    cfg = result["config"]
    done = sorted(cfg["splits"], key=int)
    lines = [f"Suite {cfg['suite']}, preset {cfg['preset']}: {cfg['steps']} meta-steps, K {cfg['reset_period']} "
             f"(steps / K = {cfg['steps_per_K']:g}), meta-seeds {', '.join(done)}, "
             f"{cfg['finetune_seeds_per_meta_seed']} fine-tuning seeds each. Every meta-seed draws its own split; "
             f"{len(cfg['meta_test_tasks'])} distinct meta-test tasks in all. Mean test accuracy on each meta-seed's "
             "meta-test tasks [95% interval over meta-seeds]; rates chosen inside each meta-seed on its validation "
             "(held-out meta-train) tasks:", "",
             "| algorithm | chosen meta lr per meta-seed | all data | limited data |", "|---|---|---|---|"]
    for name in sorted(result["main"], key=lambda n: -result["main"][n]["full"]["mean"]):
        a = result["main"][name]
        chosen = ", ".join(f"{a['chosen_lr'][m]:g}" for m in done) if "chosen_lr" in a else "-"
        lines.append(f"| {name} | {chosen} | {_fmt(a['full'])} | {_fmt(a['limited'])} |")
    lines += [""] + _claims_table(result["claims"])
    rec = result["recommendation"]
    lines += ["", f"Recommendation basis: {rec['basis']}:"]
    for name, r in rec.items():
        if name != "basis":
            counts = ", ".join(f"{lr} x{n}" for lr, n in r["chosen_lr_counts"].items())
            lines.append(f"- {name}: chosen {counts}; most often {r['most_chosen_lr']:g}")
    tasks = sorted({t for n in result["main"] for t in result["main"][n]["per_task"]})
    lines += ["", "Per meta-test task (all data; descriptive and unpaired, the claims above are the comparisons): mean "
              "over the meta-seeds that drew the task (lowest - highest of their means, where 2 or more).",
              "", "| task | meta-seeds | " + " | ".join(result["main"]) + " |", "|---" * (len(result["main"]) + 2) + "|"]
    for t in tasks:
        row = [result["main"][n]["per_task"][t] for n in result["main"]]
        lines.append(f"| {t} | {row[0]['meta_seeds']} | " + " | ".join(_fmt_range(s) for s in row) + " |")
    curves = result["beta_curves_on_meta_test"]
    lines += ["", f"Every candidate rate, fine-tuned on the meta-test tasks ({curves['note']}):", ""]
    for name, curve in curves.items():
        if name != "note":
            lines.append(f"- {name}: " + ", ".join(f"{b:g} -> {_fmt(s)}" for b, s in zip(curve["betas"], curve["stats"])))
    lines += ["", "Splits (meta-seed: meta-test | validation):"]
    for m in done:
        s = cfg["splits"][m]
        lines.append(f"- {m}: {', '.join(t.split(':')[-1] for t in s['meta_test'])} | "
                     f"{', '.join(t.split(':')[-1] for t in s['validation'])}")
    return "\n".join(lines) + "\n"
