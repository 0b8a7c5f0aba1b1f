"""The command line's fine-tuning recipe options (:func:`add_recipe_args`), and among them the length options: ``--steps N|auto``, ``--epochs``, ``--early-stop`` and the schedule
(``--schedule``, ``--warmup``, ``--label-smoothing``), shared by ``ctinit finetune``, ``evaluate`` and ``pick``.

``--steps auto`` (``ctinit finetune``'s default) sizes the run to the data: at most AUTO_EPOCHS passes over the
training split, evaluated once per epoch on the validation split (``--val-fraction``), stopped once AUTO_PATIENCE
evaluations in a row brought no better accuracy, and the best weights kept. A folder of 800 images thus runs a few
hundred steps, a large one as many as it keeps improving for.
"""
from __future__ import annotations

import argparse

from .errors import ConfigError
from .execution import DEFAULT_PRECISION
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


def add_recipe_args(p: argparse.ArgumentParser, steps) -> None:
    """The fine-tuning recipe's options (``finetune``, ``evaluate`` and ``pick`` share them; ``steps``: the default)."""
    g = p.add_argument_group("fine-tuning recipe (defaults: the paper's meta-test protocol)")
    add_length_args(p, g, steps)
    g.add_argument("--batch-size", type=int, default=128, help="(default: %(default)s)")
    g.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd"], help="(default: %(default)s)")
    g.add_argument("--lr", type=float, default=1e-3, help="learning rate (default: %(default)s)")
    g.add_argument("--weight-decay", type=float, default=0.0, help="(default: %(default)s)")
    g.add_argument("--milestones", type=float, nargs="+", default=None, metavar="FRACTION",
                   help="lr decay points as fractions of the steps (default 0.4 0.7 0.9)")
    g.add_argument("--gamma", type=float, default=None, help="lr factor at each milestone (default 0.3)")
    g.add_argument("--eval-every", type=int, default=0, help="a curve point every N steps, on the validation split (finetune: 0 = no curve; "
                                                             "evaluate: 0 = every steps/10)")
    g.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                   help="share of each class's training examples held out (seeded) as the validation split that "
                        "curves and early stopping are measured on (finetune: with --eval-every or early stopping only; "
                        "0: curves on the test split; "
                        "default: %(default)s)")
    g.add_argument("--max-train-per-class", type=int, default=0,
                   help="limited data: N training examples per class (default: 0, all)")
    g.add_argument("--max-train-samples", type=int, default=0,
                   help="limited data: at most N training examples in all (default: 0, all)")
    g.add_argument("--no-augment", action="store_true", help="no random crop and no flip")
    g.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                   help="flip training images horizontally (or not) when augmenting (default: the task's own setting: "
                        "an npz's hflip, a folder's ctinit-task.json {\"hflip\": true}, off otherwise; on for hf:; "
                        "on only for fashion-mnist, colour-fashion and colour-textures among the bundled tasks)")
    g.add_argument("--mixed-precision", default=DEFAULT_PRECISION, choices=["no", "bf16", "fp16", "auto"],
                   help="autocast for the training steps; auto: bf16 where the CPU has bf16 hardware (AMX or "
                        "AVX512-BF16) and the first steps measure it faster, else fp32; no: exact fp32 "
                        "(default: %(default)s)")
    g.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"],
                   help="input memory format of the training steps: auto measures on the CPU over the first steps "
                        "(runs of 100+ steps) and keeps the faster one; on/off fix it, e.g. for runs that must match "
                        "bitwise across machines (default: %(default)s)")
    g.add_argument("--device", default=None, help="cpu or cuda (default: the GPU if there is one)")


__all__ = ["add_length_args", "add_recipe_args", "length_options", "steps_arg"]
