"""The ``ctinit`` command line.

    ctinit finetune --init DIR|scratch:DIR|scratch:ARCH --data SPEC --steps N [--seed S] [--json]

Logs and progress go to stderr; ``--json`` prints one JSON object on stdout. Bad input gets one line on stderr
and a non-zero exit (``--debug`` shows the traceback).
"""
from __future__ import annotations

import argparse
import json
import sys

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_finetune(args) -> int:
    from .errors import ConfigError
    from .finetune import FinetuneConfig, finetune
    from .loading import init_info, load_init
    from .tasks import load_task

    if args.steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {args.steps}")
    backbone = load_init(args.init, seed=args.seed)
    image_size = getattr(backbone.config, "image_size", 28)
    task = load_task(args.data, image_size=image_size, seed=args.seed)
    if args.max_train_per_class:
        task = task.subset_train(args.max_train_per_class, seed=args.seed)
    _log(f"ctinit finetune: init {args.init} ({type(backbone).__name__}), task {task.name}: {task.num_classes} classes, "
         f"{len(task.y_train)} train / {len(task.y_test)} test, {args.steps} steps, seed {args.seed}")
    optimizer = {"name": args.optimizer, "lr": args.lr}
    if args.weight_decay:
        optimizer["weight_decay"] = args.weight_decay
    config = FinetuneConfig(steps=args.steps, batch_size=args.batch_size, optimizer=optimizer, seed=args.seed,
                            eval_every=args.eval_every, augment=not args.no_augment,
                            mixed_precision=args.mixed_precision, progress=not args.no_progress)
    result = finetune(backbone, task, config, device=args.device, log=_log)
    report = {
        "init": args.init, "data": args.data, "task": task.name, "num_classes": task.num_classes,
        "train_size": len(task.y_train), "test_size": len(task.y_test), "seed": args.seed,
        "algorithm": init_info(args.init).get("algorithm", "scratch" if args.init.startswith("scratch:") else None),
        **result.to_dict(),
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{task.name}: test accuracy {result.test_accuracy:.4f} (loss {result.test_loss:.4f}) after "
              f"{result.steps} steps in {result.seconds:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctinit", description="Meta-learned initializations (CTS): fine-tune and evaluate.")
    sub = parser.add_subparsers(dest="command", required=True)

    ft = sub.add_parser("finetune", help="fine-tune an initialization on a task and report test accuracy")
    ft.add_argument("--init", required=True, help="an initialization directory, scratch:DIR or scratch:ARCH (e.g. scratch:resnet20)")
    ft.add_argument("--data", required=True, help="task spec: npz:PATH, folder:DIR, hf:NAME[:CONFIG] or builtin:NAME")
    ft.add_argument("--steps", type=int, default=1000)
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--batch-size", type=int, default=128)
    ft.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd"])
    ft.add_argument("--lr", type=float, default=1e-3)
    ft.add_argument("--weight-decay", type=float, default=0.0)
    ft.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (0: at the end only)")
    ft.add_argument("--max-train-per-class", type=int, default=0, help="limited-data setting: examples per class")
    ft.add_argument("--no-augment", action="store_true")
    ft.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    ft.add_argument("--device", default=None, help="cpu or cuda (default: what Accelerate picks)")
    ft.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ft.add_argument("--no-progress", action="store_true")
    ft.add_argument("--debug", action="store_true", help="show tracebacks")
    ft.set_defaults(func=cmd_finetune)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        _log("ctinit: interrupted")
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI turns every error into one line unless --debug
        if args.debug:
            raise
        from .errors import CtinitError

        if isinstance(e, CtinitError):
            _log(f"ctinit: error: {e}")
            return EXIT_BAD_INPUT
        message = str(e).splitlines()[0] if str(e) else ""
        _log(f"ctinit: internal error: {type(e).__name__}: {message} (rerun with --debug for the traceback)")
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
