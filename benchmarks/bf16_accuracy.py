"""Does bf16 meta-training on the CPU cost held-out accuracy? (issue 21: bf16 stays opt-in until this is measured.)

    OMP_NUM_THREADS=1 python benchmarks/bf16_accuracy.py --meta-seeds 3 --json     # runs/bf16_accuracy/

For each meta-seed, CTS meta-trains the study's shared setup (convnet4-32 at 28 px, batch 32, inner SGD-momentum,
meta SGD 0.1, K 20) on the glyph suite's 8 meta-train tasks twice, in fp32 and with ``mixed_precision: bf16``
(autocast for the inner forward/backward; phi and the meta-updates stay fp32), from the same seed. Both inits are
fine-tuned (fp32, the study's recipe: 200 steps, batch 64, Adam 1e-3) on the 4 meta-test scripts with the same
fine-tuning seeds. The claim "bf16 is the same as fp32" is an equivalence test (two one-sided tests, +-2 points) on
the per-meta-seed paired differences, beside the plain paired difference and its 95% interval. Meta-training
wall time of each precision is reported too (same process, one after the other: a ratio, not a benchmark of its own).
Finished meta-training runs and fine-tuning results are reused from the output folder (the study's workspace).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.study.config import BASE, SUITES  # noqa: E402
from benchmarks.study.runs import Workspace, finetune_seeds, recipe_of, say  # noqa: E402
from benchmarks.study.stats import equivalence_claim, paired_claim, summary  # noqa: E402

PRECISIONS = ("no", "bf16")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--meta-seeds", type=int, default=3)
    p.add_argument("--finetune-seeds", type=int, default=2, help="per meta-seed")
    p.add_argument("--steps", type=int, default=1000, help="meta-training steps")
    p.add_argument("--reset-period", type=int, default=20)
    p.add_argument("--finetune-steps", type=int, default=200)
    p.add_argument("--margin", type=float, default=0.02, help="equivalence margin (accuracy)")
    p.add_argument("--out", default="runs/bf16_accuracy")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    suite = SUITES["glyph"]
    recipe = recipe_of({"finetune_batch_size": 64}, args.finetune_steps)
    acc = {precision: {} for precision in PRECISIONS}
    seconds = {precision: [] for precision in PRECISIONS}
    for m in range(args.meta_seeds):
        for precision in PRECISIONS:
            ws = Workspace(Path(args.out), {**BASE, "mixed_precision": precision})
            run = ws.meta_train(f"cts-{precision}-s{m}", "cts", 0.1, suite["meta_train"], args.steps,
                                args.reset_period, seed=m)
            seconds[precision].append(run["seconds"])
            grid = ws.finetune_grid({precision: run["init"]}, suite["meta_test"],
                                    finetune_seeds(m, args.finetune_seeds), recipe)[precision]
            acc[precision].update({(m, t, s): v for (t, s), v in grid.items()})
        say(f"meta-seed {m}: fp32 {summary({k: v for k, v in acc['no'].items() if k[0] == m})['mean']:.4f}, "
            f"bf16 {summary({k: v for k, v in acc['bf16'].items() if k[0] == m})['mean']:.4f}")
    result = {
        "question": "bf16 meta-training (CPU autocast) vs fp32: held-out accuracy after fine-tuning",
        "config": {"base": BASE, "algorithm": "cts", "meta_lr": 0.1, "steps": args.steps,
                   "reset_period": args.reset_period, "meta_train": suite["meta_train"],
                   "meta_test": suite["meta_test"], "finetune_recipe": recipe,
                   "finetune_seeds_per_meta_seed": args.finetune_seeds, "meta_seeds": args.meta_seeds},
        "fp32": summary(acc["no"]), "bf16": summary(acc["bf16"]),
        "bf16_minus_fp32": paired_claim(acc["bf16"], acc["no"]),
        "bf16_same_as_fp32": equivalence_claim(acc["bf16"], acc["no"], args.margin),
        "meta_train_seconds": seconds,
        "meta_train_speedup_bf16": sum(seconds["no"]) / sum(seconds["bf16"]),
        "runs": {precision: [[m, t, s, v] for (m, t, s), v in sorted(a.items())] for precision, a in acc.items()},
    }
    d, e = result["bf16_minus_fp32"], result["bf16_same_as_fp32"]
    say(f"fp32 {result['fp32']['mean']:.4f}, bf16 {result['bf16']['mean']:.4f}; bf16 - fp32 {d['diff']:+.4f} "
        f"(95% interval {d['ci95']}), equivalence within +-{args.margin}: {e['verdict']}; meta-training "
        f"{result['meta_train_speedup_bf16']:.2f}x faster in bf16")
    if args.json:
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
