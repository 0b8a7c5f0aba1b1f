"""The command line's fine-tuning length options: ``--steps N|auto``, ``--epochs``, ``--early-stop`` and the schedule
(``--schedule``, ``--warmup``, ``--label-smoothing``), shared by ``ctinit finetune``, ``evaluate`` and ``pick``.

``--steps auto`` (``ctinit finetune``'s default) sizes the run to the data: at most AUTO_EPOCHS passes over the
training split, evaluated once per epoch on the validation split (``--val-fraction``), stopped once AUTO_PATIENCE
evaluations in a row brought no better accuracy, and the best weights kept. A folder of 800 images thus runs a few
hundred steps, a large one as many as it keeps improving for.
"""
from __future__ import annotations

import argparse

from .errors import ConfigError
from .finetune_schedule import AUTO_EPOCHS, AUTO_PATIENCE


def steps_arg(text: str):
    """``--steps``: a number of steps or ``auto``."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of steps or 'auto'") from None


def add_length_args(parser: argparse.ArgumentParser, group, steps) -> None:
    """The length and schedule options; ``steps``: this command's default (a number or ``auto``)."""
    parser.set_defaults(default_steps=steps)
    group.add_argument("--steps", type=steps_arg, default=None, metavar="N|auto",
                       help=f"fine-tuning steps, or auto: at most {AUTO_EPOCHS} epochs, stopped early on the "
                            f"validation split (--early-stop {AUTO_PATIENCE}, one evaluation per epoch) with the best "
                            f"weights kept (default: {steps})")
    group.add_argument("--epochs", type=float, default=None, metavar="E",
                       help="the length in passes over the training split instead of --steps")
    group.add_argument("--early-stop", type=int, default=None, metavar="PATIENCE",
                       help="stop when validation accuracy has not improved for PATIENCE evaluations (every "
                            "--eval-every steps, default once per epoch) and keep the best weights; 0: off")
    group.add_argument("--schedule", default="step", choices=["step", "cosine"],
                       help="lr schedule: step (x --gamma at --milestones) or cosine (to 0 at the last step) "
                            "(default: %(default)s)")
    group.add_argument("--warmup", type=float, default=0.0, metavar="FRACTION",
                       help="linear lr warm-up over this fraction of the steps, before either schedule "
                            "(default: %(default)s)")
    group.add_argument("--label-smoothing", type=float, default=0.0, metavar="EPS", help="(default: %(default)s)")


def length_options(args) -> dict:
    """``--steps``, ``--epochs`` and ``--early-stop`` as FinetuneConfig fields (see the module doc for ``auto``)."""
    steps = args.default_steps if args.steps is None else args.steps
    length = {"early_stop": args.early_stop or 0}
    if args.epochs is not None:
        if args.steps not in (None, "auto"):
            raise ConfigError(f"--steps {args.steps} and --epochs {args.epochs:g}: give one length, not both")
        length["epochs"] = args.epochs
    if steps == "auto":
        length.setdefault("epochs", float(AUTO_EPOCHS))
        length["early_stop"] = AUTO_PATIENCE if args.early_stop is None else args.early_stop
    else:
        length["steps"] = steps
    return length


__all__ = ["add_length_args", "length_options", "steps_arg"]
