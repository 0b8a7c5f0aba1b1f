"""Render a glyph task that is NOT in the bundled suite, as an npz with just ``x, y`` (ctinit makes the hold-out).

    python scripts/make_new_task.py gujarati /tmp/gujarati.npz

Used to check transfer to data an initialization never saw (needs Debian's fonts-noto-core).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_builtin_suite as suite  # noqa: E402

NEW_TASKS = {
    "gujarati": (("NotoSansGujarati", "NotoSerifGujarati"),
                 suite._chars((0xA95, 0xAA8), (0xAAA, 0xAB0), 0xAB2, 0xAB3, (0xAB5, 0xAB9))),
    "kannada": (("NotoSansKannada", "NotoSerifKannada"), suite._chars((0xC95, 0xCA8), (0xCAA, 0xCB3), (0xCB5, 0xCB9))),
    "digits": (suite.LATIN_SANS_SERIF, suite._chars((0x30, 0x39))),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(NEW_TASKS))
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    suite.GLYPH_TASKS[args.name] = NEW_TASKS[args.name]
    d = suite.build_glyphs(args.name, args.seed)
    x = np.concatenate([d["x_train"], d["x_test"]])
    y = np.concatenate([d["y_train"], d["y_test"]])
    np.savez(args.out, x=x, y=y)
    print(f"{args.out}: {len(y)} images, {len(set(y.tolist()))} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
