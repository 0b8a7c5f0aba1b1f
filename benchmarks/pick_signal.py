"""Does pick's cheap first-stage signal agree with fine-tuning? Measured on tasks no zoo entry was meta-trained on.

    OMP_NUM_THREADS=1 python benchmarks/pick_signal.py --out benchmarks/recorded/pick/signal-agreement.json
    python benchmarks/pick_signal.py --quick --out /tmp/x.json      # a smoke run (2 steps, 1 task): measures nothing

For each held-out task (the bundled meta-test tasks: glyph scripts and colour tasks outside every entry's meta-training
tasks), cut as pick sees a small folder (``--per-class`` training images per class once pick's validation share is
carved), every zoo entry gets
- the first-stage signal (:func:`ctinit.pick_rank.feature_scores`: nearest-class-mean accuracy of the frozen features,
  batch-norm statistics re-estimated on the training part, on pick's validation split; 1-NN beside it), and
- fine-tuning: ``--steps`` steps at batch ``--batch-size`` (the zoo's evaluation recipe), test accuracy, over
  ``--seeds`` seeds, on the same training part.
Agreement per task: whether the signal's best entry is fine-tuning's best, whether fine-tuning's best is among the
signal's top 2 (what pick's default second stage fine-tunes), and Spearman's rank correlation. The JSON is rewritten
after each task, so a partial run keeps what it measured.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HELD_OUT = ["builtin:georgian", "builtin:thai", "builtin:colour-cards", "builtin:ethiopic", "builtin:colour-textures",
            "builtin:bengali", "builtin:colour-mahjong"]


def _ranks(values: list[float]) -> list[float]:
    """Ranks from 1, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (the Pearson correlation of the ranks)."""
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return round(cov / var, 3) if var else float("nan")


def small_task(spec: str, per_class: int, folder: Path) -> Path:
    """The bundled task cut to ``per_class`` training images per class (seeded; its test split and flip setting
    kept), written as an npz."""
    import numpy as np

    from ctinit.tasks import load_task

    task = load_task(spec, seed=0).subset_train(per_class, seed=0)
    channels_last = lambda x: x.permute(0, 2, 3, 1).numpy() if x.shape[1] == 3 else x[:, 0].numpy()
    path = folder / f"{spec.split(':', 1)[1]}.npz"
    np.savez(path, x_train=channels_last(task.x_train), y_train=task.y_train.numpy(),
             x_test=channels_last(task.x_test), y_test=task.y_test.numpy(), classes=np.array(task.classes),
             hflip=np.array(task.hflip))
    return path


def versus_best_average(done: list[dict]) -> dict | None:
    """Does choosing per task beat always taking the entry with the best average (issue 30, item 6)? The "best
    average" entry for a task is the one with the highest mean fine-tuned accuracy on the OTHER tasks (leave one
    out: it never sees the task it is judged on). Paired over tasks: the fine-tuned accuracy of the signal's best
    (pick's first stage alone), and of the better of the signal's top 2 (pick with a second stage that ranks its two
    finalists as this fine-tuning does: optimistic, pick's own second stage is 60 steps on a validation split),
    minus that of the best-average entry; mean with a 95% t-interval over tasks."""
    from ctinit.stats import paired_difference

    if len(done) < 3:
        return None
    inits = list(done[0]["finetuned"])
    rows = {"first_stage": {}, "two_stages": {}, "best_average": {}}
    for k, t in enumerate(done):
        others = [u for j, u in enumerate(done) if j != k]
        best_average = max(inits, key=lambda i: sum(u["finetuned"][i] for u in others))
        by_signal = sorted(inits, key=lambda i: -t["signal"][i])
        rows["first_stage"][t["task"]] = t["finetuned"][by_signal[0]]
        rows["two_stages"][t["task"]] = max(t["finetuned"][i] for i in by_signal[:2])
        rows["best_average"][t["task"]] = t["finetuned"][best_average]
    out = {}
    for name in ("first_stage", "two_stages"):
        d = paired_difference(rows[name], rows["best_average"])
        out[f"{name}_minus_best_average"] = {"mean": round(d["mean"], 4), "ci95": [round(x, 4) for x in d["ci95"]],
                                             "n": d["n"], "verdict": d["verdict"]}
    out["per_task"] = {t["task"]: {k: round(v[t["task"]], 4) for k, v in rows.items()} for t in done}
    return out


def summarize(done: list[dict]) -> dict:
    """Agreement counts and regrets over the tasks measured so far, and the comparison with the best-average entry."""
    return {
        "tasks": len(done), "top1_agrees": sum(t["top1_agrees"] for t in done),
        "best_in_signal_top2": sum(t["best_in_signal_top2"] for t in done),
        "knn1_top1_agrees": sum(t["knn1_top1_agrees"] for t in done),
        "mean_spearman": round(sum(t["spearman"] for t in done) / len(done), 3),
        "mean_regret": round(sum(t["regret"] for t in done) / len(done), 4),
        "mean_regret_top2": round(sum(t["regret_top2"] for t in done) / len(done), 4),
        "versus_best_average": versus_best_average(done)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=HELD_OUT)
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--val-fraction", type=float, default=0.25, help="pick's default")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", required=True)
    parser.add_argument("--report", action="store_true", help="recompute the summary of the tasks in --out and stop")
    args = parser.parse_args(argv)
    if args.report:
        record = json.loads(Path(args.out).read_text())
        record["summary"] = summarize(record["tasks"])
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
        print(json.dumps(record["summary"], indent=1))
        return 0

    import torch

    from ctinit import zoo
    from ctinit.evaluate import run_evaluation
    from ctinit.finetune import FinetuneConfig
    from ctinit.pick_rank import feature_scores

    if args.quick:
        args.tasks, args.steps, args.seeds = args.tasks[:1], 2, 1
    inits = [zoo.PREFIX + n for n in zoo.names()]
    config = FinetuneConfig(steps=args.steps, batch_size=args.batch_size, eval_every=args.steps, progress=False)
    record = {"command": "python benchmarks/pick_signal.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
              "per_class": args.per_class, "validation_fraction": args.val_fraction,
              "finetune": {"steps": args.steps, "batch_size": args.batch_size, "seeds": list(range(args.seeds)),
                           "score": "test accuracy"},
              "signal": "ncm", "inits": inits, "tasks": []}
    tmp = Path(tempfile.mkdtemp(prefix="ctinit-pick-signal-"))
    for name in args.tasks:
        start = time.perf_counter()
        # as pick sees a small folder: per class, `per_class` training images once the validation share is carved
        spec = f"npz:{small_task(name, math.ceil(args.per_class / (1 - args.val_fraction)), tmp)}"
        scores = feature_scores(inits, spec, validation_fraction=args.val_fraction)
        results = run_evaluation(inits, [spec], seeds=list(range(args.seeds)), config=config, progress=False,
                                 validation_fraction=args.val_fraction)
        tuned = {i: results["summary"][i]["tasks"][spec]["mean"] for i in inits}
        by_signal = sorted(inits, key=lambda i: -scores[i]["ncm"])
        by_tuning = sorted(inits, key=lambda i: -tuned[i])
        by_knn = sorted(inits, key=lambda i: -scores[i]["knn1"])
        record["tasks"].append({
            "task": name, "train_size": results["tasks"][0]["train_size"], "seconds": round(time.perf_counter() - start, 1),
            "signal": {i: round(scores[i]["ncm"], 4) for i in inits},
            "knn1": {i: round(scores[i]["knn1"], 4) for i in inits},
            "signal_seconds": {i: round(scores[i]["seconds"], 2) for i in inits},
            "finetuned": {i: round(tuned[i], 4) for i in inits},
            "best_by_signal": by_signal[0], "best_by_finetuning": by_tuning[0],
            "top1_agrees": by_signal[0] == by_tuning[0], "best_in_signal_top2": by_tuning[0] in by_signal[:2],
            "knn1_top1_agrees": by_knn[0] == by_tuning[0],
            "spearman": spearman([scores[i]["ncm"] for i in inits], [tuned[i] for i in inits]),
            # how much worse fine-tuning's result is when the signal's best is taken instead of fine-tuning's best
            "regret": round(tuned[by_tuning[0]] - tuned[by_signal[0]], 4),
            "regret_top2": round(tuned[by_tuning[0]] - max(tuned[i] for i in by_signal[:2]), 4),
        })
        record["summary"] = summarize(record["tasks"])
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
        print(json.dumps(record["tasks"][-1]), flush=True)
    print(json.dumps(record["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
