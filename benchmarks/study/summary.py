"""The compact table of one suite of the ratio study that benchmarks/RESULTS.md shows, rendered from a recorded
``results.json`` (``results.md`` beside it has everything; this is the condensed view):

    python -m benchmarks.study.summary benchmarks/recorded/study-ratio/glyph/results.json

A long preset's results.json (issue 29) gets its own table and claims, and its two figures (accuracy_vs_k.png,
meta_validation.png) are rendered beside it.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .report import _fmt

BASELINES = ("reptile", "mtl", "scratch")


def _claim(c: dict) -> str:
    lo, hi = c["ci95"]
    return f"{c['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}] ({c['verdict']}, {c['verdict_holm']})"


def suite_block(result: dict, where: str) -> str:
    """Splits, per-algorithm accuracies and chosen rates, CTS's claims and the equivalence verdicts."""
    cfg, claims = result["config"], result["claims"]
    done = sorted(cfg["splits"], key=int)
    short = lambda task: task.split(":")[-1]  # noqa: E731
    splits = "; ".join(f"meta-seed {m}: meta-test {', '.join(short(t) for t in cfg['splits'][m]['meta_test'])}"
                       for m in done)
    n_ft = next(iter(result["main"].values()))["finetune_seeds_per_meta_seed"]
    lines = [f"**{result['suite']}** ({splits}; {n_ft} fine-tuning seeds each; `{where}`):", "",
             f"| | chosen meta lr (per meta-seed) | all data [95% interval over {len(done)} meta-seeds] | 20 per class "
             "| per meta-test task, all data |", "| --- | --- | --- | --- | --- |"]
    for name, a in result["main"].items():
        chosen = ", ".join(f"{a['chosen_lr'][m]:g}" for m in done) if "chosen_lr" in a else "-"
        full, per_task = a["full"], ", ".join(f"{t} {v['mean']:.3f}" for t, v in sorted(a["per_task"].items()))
        lines.append(f"| {name} | {chosen} | {_fmt(full)} | {a['limited']['mean']:.3f} | {per_task} |")
    for setting, label in (("full", "CTS minus the others, all data (95% interval; verdict, Holm)"),
                           ("limited", "20 per class")):
        parts = [f"{b} {_claim(claims[f'cts_beats_{b}_{setting}'])}" for b in BASELINES
                 if f"cts_beats_{b}_{setting}" in claims]
        lines += ["", f"{label}: " + "; ".join(parts) + "."]
    same = [k for k in claims if k.startswith("cts_same_as_")]
    if same:
        lines += ["", "Equivalence within +-2 points (TOST): " + "; ".join(
            f"{k[len('cts_same_as_'):]} {claims[k]['verdict']} (Holm {claims[k]['verdict_holm']})" for k in same) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_file():
        print("usage: python -m benchmarks.study.summary PATH/results.json (a ratio or long study's results)",
              file=sys.stderr)
        return 2
    path = Path(args[0])
    result = json.loads(path.read_text())
    if result.get("protocol") == "long":  # its table and claims, and its two figures beside results.json
        from .long_report import markdown_long, write_figures

        print(markdown_long(result), end="")
        for name in write_figures(result, path.parent):
            print(f"wrote {path.parent.as_posix()}/{name}", file=sys.stderr)
        return 0
    if result.get("protocol") != "ratio":
        print(f"{path}: not a ratio study's results (protocol {result.get('protocol')!r})", file=sys.stderr)
        return 2
    print(suite_block(result, path.parent.as_posix() + "/"), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
