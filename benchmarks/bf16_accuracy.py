"""Does bf16 meta-training on the CPU cost held-out accuracy? (issues 21 and 32: bf16 became the CPU default,
through ``mixed_precision: auto``, once this showed it equivalent to fp32 on both suites.)

    nohup nice -n 5 env OMP_NUM_THREADS=1 python benchmarks/bf16_accuracy.py --meta-seeds 6 \
        --records benchmarks/recorded/cpu-modes/bf16-accuracy-6 --write benchmarks/recorded/cpu-modes/bf16-accuracy-6.json &

For each meta-seed, CTS meta-trains the study's shared setup (convnet4-32 at 28 px, batch 32, inner SGD-momentum,
meta SGD 0.1, K 20, 1000 steps) on a suite's meta-train tasks (``--suite``, glyph's 8 by default) twice, in fp32 and with
``mixed_precision: bf16`` (autocast for the inner forward/backward; phi and the meta-updates stay fp32), from the
same seed. Both inits are fine-tuned (fp32, the study's recipe: 200 steps, batch 64, Adam 1e-3) on the suite's meta-test
tasks with the same fine-tuning seeds. The claim "bf16 is the same as fp32" is an equivalence test (two one-sided
tests, +-1 point by default) on the per-meta-seed paired differences, beside the plain paired difference and its 95%
interval. Meta-training wall time of each precision is reported too (same process, one after the other: a ratio, not
a benchmark of its own).

Resuming: each finished meta-seed is written to RECORDS/meta-seed-N.json (default OUT/meta_seeds; a small JSON that
can be committed) and read back instead of recomputed while its config is the same; unfinished meta-training runs and
fine-tuning results are reused from OUT (the study's workspace). Rerunning the same command finishes the recording.

Both cores: ``--shard 0/2`` and ``--shard 1/2`` (each with OMP_NUM_THREADS=1, same OUT and RECORDS) record disjoint
meta-seeds side by side and stop; the same command without ``--shard`` then reads every record and reports.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.study.config import BASE, SUITES  # noqa: E402
from benchmarks.study.runs import Workspace, finetune_seeds, recipe_of, say  # noqa: E402
from benchmarks.study.stats import equivalence_claim, paired_claim, summary  # noqa: E402
from ctinit.execution.compiled import cpu_model  # noqa: E402

PRECISIONS = ("no", "bf16")


def base_of(suite: dict) -> dict:
    """The study's shared setup at the suite's image size (colour's images are 32 px), without its precision: each
    side of the comparison sets its own."""
    base = {k: v for k, v in BASE.items() if k != "mixed_precision"}
    return {**base, "image_size": suite.get("image_size", BASE["image_size"])}


def meta_seed_config(args, suite: dict, recipe: dict) -> dict:
    """What one meta-seed's record depends on (a record made with anything else is recomputed)."""
    return {"base": base_of(suite), "algorithm": "cts", "meta_lr": 0.1, "steps": args.steps, "reset_period": args.reset_period,
            "meta_train": suite["meta_train"], "meta_test": suite["meta_test"], "finetune_recipe": recipe,
            "finetune_seeds_per_meta_seed": args.finetune_seeds}


def run_meta_seed(m: int, args, suite: dict, recipe: dict) -> dict:
    """Meta-train both precisions from seed M and fine-tune both inits: ``{"seconds": {precision: s},
    "accuracy": {precision: [[task, seed, accuracy], ...]}}``."""
    seconds, accuracy = {}, {}
    for precision in PRECISIONS:
        ws = Workspace(Path(args.out), {**base_of(suite), "mixed_precision": precision})
        run = ws.meta_train(f"cts-{precision}-s{m}", "cts", 0.1, suite["meta_train"], args.steps,
                            args.reset_period, seed=m)
        seconds[precision] = run["seconds"]
        grid = ws.finetune_grid({precision: run["init"]}, suite["meta_test"],
                                finetune_seeds(m, args.finetune_seeds), recipe)[precision]
        accuracy[precision] = [[t, s, v] for (t, s), v in sorted(grid.items())]
    return {"seconds": seconds, "accuracy": accuracy}


def recorded(path: Path, config: dict) -> dict | None:
    """A finished meta-seed's record if PATH holds one made with CONFIG."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:  # cut short by a kill: that meta-seed is redone (its runs are reused from OUT)
        return None
    return record if record.get("config") == json.loads(json.dumps(config)) else None


def by_cpu(acc: dict, made_on: dict[int, str], margin: float) -> dict:
    """The same claims within the meta-seeds each CPU made (a CPU with one meta-seed gets its difference only)."""
    out = {}
    for cpu in sorted(set(made_on.values())):
        seeds = sorted(m for m, c in made_on.items() if c == cpu)
        mine = {p: {k: v for k, v in a.items() if made_on[k[0]] == cpu} for p, a in acc.items()}
        out[cpu] = {"meta_seeds": seeds, "bf16_minus_fp32": paired_claim(mine["bf16"], mine["no"]),
                    "bf16_same_as_fp32": equivalence_claim(mine["bf16"], mine["no"], margin)}
    return out


def parse_shard(parser, text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` as ``(I, N)`` with 0 <= I < N."""
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        parser.error(f"--shard {text!r}: expected I/N with 0 <= I < N, for example 0/2")
    return i, n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITES), default="glyph")
    p.add_argument("--meta-seeds", type=int, default=6)
    p.add_argument("--finetune-seeds", type=int, default=2, help="per meta-seed")
    p.add_argument("--steps", type=int, default=1000, help="meta-training steps")
    p.add_argument("--reset-period", type=int, default=20)
    p.add_argument("--finetune-steps", type=int, default=200)
    p.add_argument("--margin", type=float, default=0.01, help="equivalence margin (accuracy; 0.01 = 1 point)")
    p.add_argument("--out", default="runs/bf16_accuracy")
    p.add_argument("--records", default=None, help="folder of the per-meta-seed records (default OUT/meta_seeds)")
    p.add_argument("--write", default=None, help="also write the result JSON to this file")
    p.add_argument("--json", action="store_true")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="record only meta-seeds m with m %% N == I, then stop (no report)")
    args = p.parse_args(argv)
    shard = parse_shard(p, args.shard)

    suite = SUITES[args.suite]
    recipe = recipe_of({"finetune_batch_size": 64}, args.finetune_steps)
    config = meta_seed_config(args, suite, recipe)
    records_dir = Path(args.records) if args.records else Path(args.out) / "meta_seeds"
    records_dir.mkdir(parents=True, exist_ok=True)
    acc = {precision: {} for precision in PRECISIONS}
    made_on: dict[int, str] = {}
    seconds = {precision: [] for precision in PRECISIONS}
    for m in range(args.meta_seeds):
        path = records_dir / f"meta-seed-{m}.json"
        record = recorded(path, config)
        if shard and m % shard[1] != shard[0]:
            continue
        if record is None:
            # the CPU that made it: bf16 arithmetic differs by CPU (AMX tiles, AVX512-BF16 dot products)
            record = {"meta_seed": m, "config": config, "cpu": cpu_model(), **run_meta_seed(m, args, suite, recipe)}
            path.write_text(json.dumps(record, indent=1) + "\n")
        else:
            say(f"meta-seed {m}: read from {path}")
        made_on[m] = record.get("cpu", "not recorded")
        for precision in PRECISIONS:
            seconds[precision].append(record["seconds"][precision])
            acc[precision].update({(m, t, s): v for t, s, v in record["accuracy"][precision]})
        if shard:
            continue
        say(f"meta-seed {m}: fp32 {summary({k: v for k, v in acc['no'].items() if k[0] == m})['mean']:.4f}, "
            f"bf16 {summary({k: v for k, v in acc['bf16'].items() if k[0] == m})['mean']:.4f}")
    if shard:
        say(f"shard {args.shard}: its meta-seeds are recorded in {records_dir}; run without --shard to report")
        return 0
    result = {
        "command": "python benchmarks/bf16_accuracy.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "cpu": cpu_model(),
        "question": "bf16 meta-training (CPU autocast) vs fp32: held-out accuracy after fine-tuning",
        "config": {**config, "meta_seeds": args.meta_seeds, "margin": args.margin},
        "fp32": summary(acc["no"]), "bf16": summary(acc["bf16"]),
        "bf16_minus_fp32": paired_claim(acc["bf16"], acc["no"]),
        "bf16_same_as_fp32": equivalence_claim(acc["bf16"], acc["no"], args.margin),
        "by_cpu": by_cpu(acc, made_on, args.margin),
        "meta_train_seconds": seconds,
        # per meta-seed, then the median: one run made under another load (or resumed in another session) must
        # not swing it; the two precisions of a meta-seed run one after the other (a ratio, not a benchmark)
        "meta_train_speedup_bf16": statistics.median(a / b for a, b in zip(seconds["no"], seconds["bf16"])),
        "runs": {precision: [[m, t, s, v] for (m, t, s), v in sorted(a.items())] for precision, a in acc.items()},
    }
    d, e = result["bf16_minus_fp32"], result["bf16_same_as_fp32"]
    say(f"fp32 {result['fp32']['mean']:.4f}, bf16 {result['bf16']['mean']:.4f}; bf16 - fp32 {d['diff']:+.4f} "
        f"(95% interval {d['ci95']}), equivalence within +-{args.margin}: {e['verdict']} (90% interval "
        f"{e['ci90']}); meta-training {result['meta_train_speedup_bf16']:.2f}x faster in bf16 (median over meta-seeds)")
    for cpu, part in result["by_cpu"].items():
        d, e = part["bf16_minus_fp32"], part["bf16_same_as_fp32"]
        say(f"  made on {cpu} ({len(part['meta_seeds'])} meta-seeds): bf16 - fp32 {d['diff']:+.4f} (95% interval "
            f"{d['ci95']}), equivalence {e['verdict']}")
    text = json.dumps(result, indent=1)
    if args.write:
        Path(args.write).write_text(text + "\n")
    if args.json:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
