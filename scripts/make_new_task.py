"""Render a task that is in NEITHER bundled suite, to measure transfer to data no initialization was meta-trained on.

    python scripts/make_new_task.py NAME OUT.npz [--preview GRID.png]            # a glyph script, 28x28 gray
    python scripts/make_new_task.py --colour NAME OUT.npz [--preview GRID.png]   # a colour task, 32x32 RGB

Glyph scripts (``GLYPH_SCRIPTS``) are rendered like the glyph suite (``scripts/build_builtin_suite.py``: every
Regular/Bold face of the Noto families that cover a letter, random affine distortion, stroke and noise; letters no
installed face has are dropped) and written as ``x, y, classes, hflip`` (240 images per class; ctinit holds out a
seeded 20% as the test split). Needs Debian's fonts-noto-core.

Colour tasks (``COLOUR_TASKS``) use the colour suite's sources and drawing code (``scripts/build_colour_suite.py``)
on items the suite does not use: emoji of the Symbols group (the suite's emoji tasks use seven other groups), icon
names of neither icon task, and the GIMP patterns of gimp-data-extras (the suite's textures are gimp-data's). They
are written in the suite's format (``x_train, y_train, x_test, y_test, source_train, source_test, classes, hflip,
domain``) with a test split drawn from other source items (other emoji of the subgroup, other icon themes, other
rows of the pattern), 40 training and 20 test samples per class. Needs the packages in build_colour_suite.py's
docstring plus gimp-data-extras.

``scripts/make_new_tasks.sh DIR`` installs the packages and renders every task into DIR.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_builtin_suite as glyph_suite  # noqa: E402
import build_colour_suite as colour_suite  # noqa: E402


def _r(lo: int, hi: int, step: int = 1) -> list[int]:
    return list(range(lo, hi + 1, step))


# name -> (Noto families, code points): letters (mostly consonants, or lowercase) of scripts outside the glyph suite.
GLYPH_SCRIPTS: dict[str, tuple[tuple[str, ...], list[int]]] = {
    "gujarati": (("NotoSansGujarati", "NotoSerifGujarati"), _r(0xA95, 0xAA8) + _r(0xAAA, 0xAB0) + [0xAB2, 0xAB3]
                 + _r(0xAB5, 0xAB9)),
    "kannada": (("NotoSansKannada", "NotoSerifKannada"), _r(0xC95, 0xCA8) + _r(0xCAA, 0xCB3) + _r(0xCB5, 0xCB9)),
    "digits": (glyph_suite.LATIN_SANS_SERIF, _r(0x30, 0x39)),
    "gurmukhi": (("NotoSansGurmukhi", "NotoSerifGurmukhi"), _r(0xA15, 0xA28) + _r(0xA2A, 0xA30)),
    "oriya": (("NotoSansOriya",), _r(0xB15, 0xB28) + _r(0xB2A, 0xB30)),
    "tamil": (("NotoSansTamil", "NotoSerifTamil"), _r(0xB85, 0xB8A) + _r(0xB8E, 0xB90) + _r(0xB92, 0xB95)
              + [0xB99, 0xB9A, 0xB9C, 0xB9E, 0xB9F, 0xBA3, 0xBA4, 0xBA8, 0xBA9, 0xBAA] + _r(0xBAE, 0xBB9)),
    "telugu": (("NotoSansTelugu", "NotoSerifTelugu"), _r(0xC15, 0xC28) + _r(0xC2A, 0xC39)),
    "malayalam": (("NotoSansMalayalam", "NotoSerifMalayalam"), _r(0xD15, 0xD28) + _r(0xD2A, 0xD39)),
    "sinhala": (("NotoSansSinhala", "NotoSerifSinhala"), _r(0xD9A, 0xDB1) + _r(0xDB3, 0xDBB)),
    "khmer": (("NotoSansKhmer", "NotoSerifKhmer"), _r(0x1780, 0x17A2)),
    "lao": (("NotoSansLao", "NotoSerifLao", "NotoLoopedLao"),
            [0xE81, 0xE82, 0xE84, 0xE87, 0xE88, 0xE8A, 0xE8D] + _r(0xE94, 0xE97) + _r(0xE99, 0xE9F)
            + [0xEA1, 0xEA2, 0xEA3, 0xEA5, 0xEA7, 0xEAA, 0xEAB, 0xEAD, 0xEAE]),
    "myanmar": (("NotoSansMyanmar", "NotoSerifMyanmar"), _r(0x1000, 0x1020)),
    "tibetan": (("NotoSerifTibetan",), _r(0xF40, 0xF47) + _r(0xF49, 0xF6A)),
    "cherokee": (("NotoSansCherokee",), _r(0x13A0, 0x13C5)),
    "canadian-syllabics": (("NotoSansCanadianAboriginal",), _r(0x1401, 0x1430)),
    "runic": (("NotoSansRunic",), _r(0x16A0, 0x16C5)),
    "tifinagh": (("NotoSansTifinagh",), _r(0x2D30, 0x2D55)),
    "nko": (("NotoSansNKo",), _r(0x7CA, 0x7EA)),
    "thaana": (("NotoSansThaana",), _r(0x780, 0x7A5)),
    "syriac": (("NotoSansSyriac",), _r(0x710, 0x72C)),
    "vai": (("NotoSansVai",), _r(0xA500, 0xA52B)),
    "yi": (("NotoSansYi",), _r(0xA000, 0xA02F)),
    "javanese": (("NotoSansJavanese",), _r(0xA984, 0xA9B2)),
    "balinese": (("NotoSansBalinese", "NotoSerifBalinese"), _r(0x1B05, 0x1B33)),
    "sundanese": (("NotoSansSundanese",), _r(0x1B83, 0x1BA0)),
    "coptic": (("NotoSansCoptic",), _r(0x2C81, 0x2CB1, 2)),
    "glagolitic": (("NotoSansGlagolitic",), _r(0x2C30, 0x2C5E)),
    "gothic": (("NotoSansGothic",), _r(0x10330, 0x1034A)),
    "old-italic": (("NotoSansOldItalic",), _r(0x10300, 0x1031F)),
    "mongolian": (("NotoSansMongolian",), _r(0x1820, 0x1842)),
    "ol-chiki": (("NotoSansOlChiki",), _r(0x1C5A, 0x1C77)),
    "lisu": (("NotoSansLisu",), _r(0xA4D0, 0xA4F7)),
    "cham": (("NotoSansCham",), _r(0xAA06, 0xAA28)),
}
MIN_CLASSES = 10

# Icon names that neither colour-icons task uses, found in at least 5 of the suite's 11 training themes and 2 of its
# 3 test themes; a name whose file is the same as another name's in some theme (drive-optical = media-optical,
# drive-removable-media = media-flash) keeps only one of them.
ICONS_DEVICES = [
    "drive-harddisk", "drive-optical", "drive-removable-media", "media-floppy", "camera-photo", "camera-web",
    "input-keyboard", "input-mouse", "input-gaming", "input-tablet", "video-display", "network-wired",
    "network-wireless", "phone", "scanner", "multimedia-player", "battery", "audio-card", "utilities-terminal",
    "accessories-calculator", "accessories-text-editor", "accessories-character-map", "web-browser",
    "system-file-manager", "help-browser", "system-users", "preferences-desktop-font", "preferences-desktop-theme",
    "preferences-desktop-accessibility", "preferences-desktop-wallpaper"]
ICONS_STATUS = [
    "dialog-error", "dialog-warning", "dialog-information", "dialog-password", "weather-clear", "weather-few-clouds",
    "weather-overcast", "weather-showers", "weather-snow", "weather-storm", "weather-clear-night", "battery-caution",
    "battery-low", "network-offline", "network-error", "network-idle", "user-trash", "user-trash-full",
    "image-missing", "security-high", "security-low", "printer-error", "mail-unread", "mail-attachment",
    "emblem-important", "emblem-favorite", "emblem-readonly", "emblem-unreadable", "audio-volume-low",
    "media-playback-start", "media-playback-pause", "media-playback-stop", "media-record", "media-eject",
    "media-seek-forward", "x-office-spreadsheet", "x-office-presentation", "x-office-calendar", "x-office-drawing",
    "x-office-address-book", "video-x-generic", "font-x-generic", "application-x-executable"]

# name -> (domain, the suite task whose drawing it shares, hflip, source items: rng -> classes)
COLOUR_TASKS = {
    "emoji-symbols": ("emoji", "emoji-objects", False, lambda rng: colour_suite.emoji_items(["Symbols"], rng)),
    "icons-devices": ("icons", "icons-actions", False, lambda rng: colour_suite.icon_items(ICONS_DEVICES, rng)),
    "icons-status": ("icons", "icons-actions", False, lambda rng: colour_suite.icon_items(ICONS_STATUS, rng)),
    "textures-extra": ("textures", "textures", True,
                       lambda rng: colour_suite.texture_items(rng, package="gimp-data-extras")),
}
COLOUR_PER_CLASS = (40, 20)


def covered_letters(families: tuple[str, ...], points: list[int]) -> tuple[str, ...]:
    """The letters of ``points`` that at least one installed face of ``families`` has."""
    from fontTools.ttLib import TTFont

    cmaps = [set(TTFont(str(f), lazy=True).getBestCmap()) for fam in families for f in glyph_suite.family_fonts(fam)]
    return tuple(chr(c) for c in points if any(c in cmap for cmap in cmaps))


def glyph_task(name: str, seed: int) -> dict:
    """The glyph script ``name`` as ``x, y, classes, hflip`` (train and test draws of the suite's renderer)."""
    families, points = GLYPH_SCRIPTS[name]
    letters = covered_letters(families, points)
    if len(letters) < MIN_CLASSES:
        raise SystemExit(f"make_new_task.py: error: {name}: the installed Noto faces cover only {len(letters)} of its "
                         f"letters; install fonts-noto-core")
    glyph_suite.GLYPH_TASKS[name] = (families, letters)
    d = glyph_suite.build_glyphs(name, seed)
    return {"x": np.concatenate([d["x_train"], d["x_test"]]), "y": np.concatenate([d["y_train"], d["y_test"]]),
            "classes": d["classes"], "hflip": np.asarray(False)}


def colour_task(name: str, seed: int) -> dict:
    """The colour task ``name`` in the colour suite's format, with a source-disjoint test split."""
    domain, draws_like, hflip, items = COLOUR_TASKS[name]
    rng = glyph_suite.task_rng(seed, name)
    arrays = colour_suite.render_task(draws_like, items(rng), *COLOUR_PER_CLASS, rng)
    arrays["hflip"] = np.asarray(hflip)
    arrays["domain"] = np.asarray(domain)
    return arrays


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="make_new_task.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help=f"glyph script: {', '.join(GLYPH_SCRIPTS)}; with --colour: "
                                     f"{', '.join(COLOUR_TASKS)}")
    parser.add_argument("out", type=Path)
    parser.add_argument("--colour", action="store_true", help="a colour task (32x32 RGB) instead of a glyph script")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--preview", type=Path, help="also write a PNG grid of training samples here")
    args = parser.parse_args(argv)
    tasks = COLOUR_TASKS if args.colour else GLYPH_SCRIPTS
    if args.name not in tasks:
        parser.error(f"unknown {'colour task' if args.colour else 'glyph script'} {args.name!r}; choose from "
                     f"{', '.join(tasks)}" + ("" if args.colour or args.name not in COLOUR_TASKS else " (or --colour)"))
    arrays = colour_task(args.name, args.seed) if args.colour else glyph_task(args.name, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    glyph_suite.write_npz(args.out, arrays)
    if args.colour:
        print(colour_suite.summary(args.name, arrays, args.out))
    else:
        print(f"{args.name}: {len(arrays['classes'])} classes, {len(arrays['y'])} images (x, y: ctinit holds out "
              f"20% as test), {args.out.stat().st_size / 1e6:.2f} MB")
    if args.preview:
        preview = arrays if args.colour else {"x_train": arrays["x"], "y_train": arrays["y"]}
        colour_suite.write_preview(preview, args.preview)
    return 0


if __name__ == "__main__":
    sys.exit(main())
