"""``ctinit-train``'s arguments: the parser, built without torch, so that ``--help`` and argument errors answer at
once (:mod:`ctinit_training.cli` parses, then imports the trainer).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ctinit.entrypoint import ArgumentParser

#: The command's name, as the user types it (errors and notes on stderr start with it).
PROG = "ctinit-train"
#: The bundled recipes (the folder ``ctinit_training.config.RECIPES`` names; not imported: it imports torch).
RECIPES = Path(__file__).resolve().parent / "recipes"


def _meta_train_doc() -> str:
    """meta_train's docstring (the --help description), read from its source without importing it."""
    import ast

    return ast.get_docstring(ast.parse((Path(__file__).resolve().parent / "meta_train.py").read_text("utf-8"))) or ""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=_meta_train_doc(), formatter_class=argparse.RawDescriptionHelpFormatter)
    bundled = ", ".join(sorted(p.stem for p in RECIPES.glob("*.yaml")))
    parser.add_argument("--config", required=True, help=f"a YAML recipe file or a bundled recipe's name ({bundled})")
    parser.add_argument("--out", required=True, help="the run directory")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in OUT from its newest complete checkpoint (same config)")
    parser.add_argument("--overwrite", action="store_true", help="delete the earlier run in OUT and start a new one")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--push-to-hub", default=None, metavar="ORG/NAME",
                        help="at the end, export the run and upload it to this Hub repo (main process only)")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    parser.add_argument("--cpu-processes", default="auto", metavar="auto|N",
                        help="on the CPU: run as N processes (forked on Linux, else through torch's launcher), with "
                             "the free cores shared out as threads; auto: the split measured fastest on the cores "
                             "free now, one process for runs under 100 steps (default: auto)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. steps=200 meta_optimizer.lr=0.1")
    return parser


__all__ = ["PROG", "RECIPES", "build_parser"]
