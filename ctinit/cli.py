"""The ``ctinit`` command line.

    ctinit finetune --init DIR|ORG/NAME[@REV]|scratch:DIR|scratch:ARCH --data SPEC --steps N [--seed S] [--json]
    ctinit evaluate --init A --init scratch:A --data SPEC [--data SPEC ...] --seeds 3 --steps N --out DIR
                    [--update-card EXPORT_DIR]
    ctinit list [--author ORG] [--search TEXT]

Logs and progress go to stderr; results go to stdout. Bad input gets one line on stderr and a non-zero exit
(``--debug`` shows the traceback).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys

from .entrypoint import EXIT_BAD_INPUT, EXIT_INTERNAL, ArgumentParser, run_command  # noqa: F401


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


#: FinetuneConfig keys as the command line spells them (for one-line errors that name the option).
_OPTION_NAMES = {"optimizer.weight_decay": "--weight-decay", "optimizer.lr": "--lr", "optimizer.name": "--optimizer",
                 "batch_size": "--batch-size", "eval_every": "--eval-every", "mixed_precision": "--mixed-precision",
                 "milestones": "--milestones", "steps": "--steps", "gamma": "--gamma", "seed": "--seed"}


def _recipe(args, seed: int = 0):
    """The fine-tuning recipe from the options, and every other option checked, before any work starts."""
    from .config import NonNegInt, check_device, check_option
    from .errors import ConfigError
    from .finetune import make_config

    optimizer = {"name": args.optimizer, "lr": args.lr}
    if args.weight_decay:
        optimizer["weight_decay"] = args.weight_decay
    overrides = dict(steps=args.steps, batch_size=args.batch_size, optimizer=optimizer, seed=seed,
                     eval_every=args.eval_every, augment=not args.no_augment, mixed_precision=args.mixed_precision,
                     progress=not args.no_progress)
    if args.milestones is not None:
        overrides["milestones"] = tuple(args.milestones)
    if args.gamma is not None:
        overrides["gamma"] = args.gamma
    try:
        config = make_config(None, **overrides)
    except ConfigError as e:
        message = str(e)
        for key, option in _OPTION_NAMES.items():
            if message.startswith((key + " ", key + ".", key + ":")):
                message = option + message[len(key):]
                break
        raise ConfigError(message) from None
    check_option("--max-train-per-class", args.max_train_per_class, NonNegInt)
    check_option("--max-train-samples", args.max_train_samples, NonNegInt)
    args.device = check_device(args.device)
    return config


def cmd_finetune(args) -> int:
    from .errors import ConfigError
    from .evaluate import limit_task
    from .finetune import finetune
    from .loading import init_info, load_init, resolve_init
    from .models import image_size_of
    from .tasks import load_task, parse_spec

    config = _recipe(args, seed=args.seed)
    parse_spec(args.data)  # an unknown spec fails before anything is downloaded
    source = resolve_init(args.init, args.revision)
    backbone = load_init(source, seed=args.seed)
    task = load_task(args.data, image_size=image_size_of(backbone), seed=args.seed)
    task = limit_task(task, args.seed, args.max_train_per_class, args.max_train_samples)
    _log(f"ctinit finetune: init {source.describe()} ({type(backbone).__name__}), task {task.name}: "
         f"{task.num_classes} classes, {len(task.y_train)} train / {len(task.y_test)} test, {args.steps} steps, seed {args.seed}")
    result = finetune(backbone, task, config, device=args.device, log=_log)
    report = {
        "init": args.init, "data": args.data, "task": task.name, "num_classes": task.num_classes,
        "train_size": len(task.y_train), "test_size": len(task.y_test), "seed": args.seed,
        "algorithm": init_info(source).get("algorithm", "scratch" if source.scratch else None),
        "repo_id": source.repo_id, "commit": source.commit,
        **result.to_dict(),
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{task.name}: test accuracy {result.test_accuracy:.4f} (loss {result.test_loss:.4f}) after "
              f"{result.steps} steps in {result.seconds:.1f} s")
    return 0


def cmd_evaluate(args) -> int:
    from .errors import ConfigError
    from .evaluate import run_evaluation, results_table, update_card, write_results

    from .evaluate import check_out_dir, parse_seeds

    config = _recipe(args)
    parse_seeds(args.seeds)
    check_out_dir(args.out)  # a file, or a folder we cannot write: fail before an hour of fine-tuning
    if args.update_card:  # check the card folder before an hour of fine-tuning
        from pathlib import Path

        card = Path(args.update_card)
        if not (card / "README.md").is_file() or not (card / "config.json").is_file():
            raise ConfigError(f"--update-card {card}: not an export folder (README.md + config.json); "
                              f"make one with `ctinit-hub export RUN_DIR {card}`")
    results = run_evaluation(
        args.init, args.data, args.seeds, config, revision=args.revision,
        max_train_per_class=args.max_train_per_class or None, max_train_samples=args.max_train_samples or None,
        device=args.device, progress=not args.no_progress, log=_log if args.no_progress else None,
        command=args.command_line, out=args.out,
    )
    paths = write_results(results, args.out)
    _log(f"ctinit evaluate: wrote {paths['json']}, {paths['md']}, {paths['png']}")
    if args.update_card:
        readme = update_card(args.update_card, results, init=args.card_init, results_dir=args.out)
        _log(f"ctinit evaluate: updated {readme} (model-index and results table)")
    if args.json:
        print(json.dumps({"summary": results["summary"], "out": str(args.out)}))
    else:
        print(results_table(results))
    return 0


def cmd_list(args) -> int:
    from .config import PositiveInt, check_option
    from .loading import list_inits

    check_option("--limit", args.limit, PositiveInt)
    rows = list_inits(author=args.author, search=args.search, limit=args.limit)
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        _log("ctinit list: no initializations found on the Hub" + (f" for author {args.author}" if args.author else ""))
        return 0
    header = ["id", "algorithm", "downloads", "likes", "updated"]
    table = [[str(r["id"]), r["algorithm"] or "-", "-" if r["downloads"] is None else str(r["downloads"]),
              "-" if r["likes"] is None else str(r["likes"]), r["last_modified"] or "-"] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return 0


def _add_recipe_args(p: argparse.ArgumentParser, steps: int) -> None:
    g = p.add_argument_group("fine-tuning recipe (defaults: the paper's meta-test protocol)")
    g.add_argument("--steps", type=int, default=steps)
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd"])
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--milestones", type=float, nargs="+", default=None, metavar="FRACTION",
                   help="lr decay points as fractions of the steps (default 0.4 0.7 0.9)")
    g.add_argument("--gamma", type=float, default=None, help="lr factor at each milestone (default 0.3)")
    g.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (finetune: 0 = at the end only; "
                                                             "evaluate: 0 = every steps/10)")
    g.add_argument("--max-train-per-class", type=int, default=0, help="limited data: N training examples per class")
    g.add_argument("--max-train-samples", type=int, default=0, help="limited data: at most N training examples in all")
    g.add_argument("--no-augment", action="store_true")
    g.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    g.add_argument("--device", default=None, help="cpu or cuda (default: what Accelerate picks)")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="ctinit", description="Meta-learned initializations (CTS): fine-tune and evaluate.")
    sub = parser.add_subparsers(dest="command", required=True)
    init_help = ("an initialization directory, a Hub id ORG/NAME[@REVISION], scratch:DIR, scratch:ORG/NAME or "
                 "scratch:ARCH (e.g. scratch:resnet20)")

    ft = sub.add_parser("finetune", help="fine-tune an initialization on a task and report test accuracy")
    ft.add_argument("--init", required=True, help=init_help)
    ft.add_argument("--revision", default=None, help="Hub branch, tag or commit hash of --init (default: main)")
    ft.add_argument("--data", required=True, help="task spec: npz:PATH, folder:DIR, hf:NAME[:CONFIG] or builtin:NAME")
    ft.add_argument("--seed", type=int, default=0)
    _add_recipe_args(ft, steps=1000)
    ft.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ft.add_argument("--no-progress", action="store_true")
    ft.add_argument("--debug", action="store_true", help="show tracebacks")
    ft.set_defaults(func=cmd_finetune)

    ev = sub.add_parser("evaluate", help="fine-tune several initializations on several tasks and seeds; "
                                         "write results.json, results.md and curves.png")
    ev.add_argument("--init", action="append", required=True, help=init_help + "; repeat to compare")
    ev.add_argument("--data", action="append", required=True, help="task spec; repeat for several tasks")
    ev.add_argument("--seeds", default="3", help="a number of seeds (3 = seeds 0,1,2) or a comma-separated list (0,4,7)")
    ev.add_argument("--out", required=True, help="folder for results.json, results.md and curves.png")
    ev.add_argument("--update-card", metavar="EXPORT_DIR", default=None,
                    help="write the results into this export's model card (model-index and results table)")
    ev.add_argument("--card-init", default=None, metavar="INIT",
                    help="which --init the card is about (default: the one with the export's weights)")
    ev.add_argument("--revision", default=None, help="Hub revision for --init Hub ids without their own @REVISION")
    _add_recipe_args(ev, steps=1000)
    ev.add_argument("--json", action="store_true", help="print the summary as JSON on stdout (default: the table)")
    ev.add_argument("--no-progress", action="store_true")
    ev.add_argument("--debug", action="store_true", help="show tracebacks")
    ev.set_defaults(func=cmd_evaluate)

    ls = sub.add_parser("list", help="initializations published on the Hub with ctinit")
    ls.add_argument("--author", default=None, help="only this user or organization")
    ls.add_argument("--search", default=None, help="only ids containing this text")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--debug", action="store_true", help="show tracebacks")
    ls.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command_line = "ctinit " + shlex.join(argv)
    return run_command("ctinit", lambda: args.func(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
