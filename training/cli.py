"""``ctinit-train``: the arguments are parsed (``--help`` and argument errors answer) before torch is imported;
then :func:`ctinit_training.meta_train.execute` runs them."""
from __future__ import annotations

import sys

from .arguments import build_parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .meta_train import execute

    return execute(args, argv)


if __name__ == "__main__":
    sys.exit(main())
