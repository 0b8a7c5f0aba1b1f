#!/usr/bin/env python
"""Build the bundled offline task suite (``builtin:`` task specs) into ``ctinit/data/builtin/``.

    python scripts/build_builtin_suite.py [--out ctinit/data/builtin] [--seed 0] [--jobs 2]

Sources (Debian packages, no network):
  * ``dataset-fashion-mnist``: /usr/share/datasets/fashion-mnist/*-ubyte.gz (MIT, Zalando Research)
  * ``fonts-noto-core``: /usr/share/fonts/truetype/noto/*.ttf (SIL Open Font License 1.1)

Every task is one ``<name>.npz`` holding exactly
  x_train uint8 [N,28,28], y_train int64 [N], x_test uint8 [M,28,28], y_test int64 [M],
  classes '<U..' [C] (class names), hflip 0-d bool (True only for fashion-mnist).
Images are white foreground on black, like MNIST.

Glyph tasks: every letter of a script is rendered with every face/weight of the Noto families
that cover the script (a face lacking a glyph is skipped, checked via the font's cmap), cropped
to its ink box, fitted into 20x20 inside a 28x28 canvas (aspect kept), then given a seeded random
affine distortion (rotation, shear, anisotropic scale, translation), a random stroke thickness
and contrast, and mild quantized noise on the ink only. Train and test samples are independent
draws of the same generator (fresh distortions; the fonts are shared between the splits).

The output is deterministic for a given seed and given installed versions of numpy, Pillow,
FreeType and the two Debian packages; the npz archives are written with fixed zip timestamps so
a rebuild is byte-identical.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import sys
import time
import zipfile
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_DIR = Path("/usr/share/fonts/truetype/noto")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "ctinit" / "data" / "builtin"

# Per-class sample counts.
FASHION_TRAIN_PER_CLASS = 600
FASHION_TEST_PER_CLASS = 100
GLYPH_TRAIN_PER_CLASS = 200
GLYPH_TEST_PER_CLASS = 40

# Rendering geometry.
RENDER_PX = 64       # font size (px per em) for the clean master rendering
RENDER_CANVAS = 320  # master canvas, large enough for tall/wide glyphs (Nastaliq, Thai)
OUT_PX = 28
BOX_PX = 20          # the ink box is fitted into BOX_PX x BOX_PX (MNIST convention), then distorted
SUPER = 4            # distort at SUPER x resolution, then area-downsample to 28x28

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def _chars(*ranges, skip=()) -> tuple[str, ...]:
    out = []
    for r in ranges:
        if isinstance(r, int):
            out.append(r)
        else:
            lo, hi = r
            out.extend(range(lo, hi + 1))
    return tuple(chr(c) for c in out if c not in set(skip))


LATIN_SANS_SERIF = ("NotoSans", "NotoSerif", "NotoSansDisplay", "NotoSerifDisplay")

# name -> (font families, letters). A family name F matches the files F-<Style>.ttf.
GLYPH_TASKS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # Lowercase only: o/O, s/S, c/C, x/X, v/V, w/W, z/Z, p/P... are indistinguishable at 28 px.
    "latin": (LATIN_SANS_SERIF, _chars((0x61, 0x7A))),
    # α..ω without final sigma ς (U+03C2): 24 letters.
    "greek": (LATIN_SANS_SERIF, _chars((0x3B1, 0x3C9), skip=(0x3C2,))),
    # а..я: 32 letters (ё omitted: it is е with a diaeresis).
    "cyrillic": (LATIN_SANS_SERIF, _chars((0x430, 0x44F))),
    # ա..ֆ: 38 lowercase letters (the ligature և omitted).
    "armenian": (("NotoSansArmenian", "NotoSerifArmenian"), _chars((0x561, 0x586))),
    # א..ת: the 22 letters, final forms omitted (final nun ן vs vav ו is ambiguous once cropped).
    "hebrew": (("NotoSansHebrew", "NotoSerifHebrew", "NotoRashiHebrew"),
               _chars((0x5D0, 0x5EA), skip=(0x5DA, 0x5DD, 0x5DF, 0x5E3, 0x5E5))),
    # 11 independent vowels अ..औ (no candra/short forms) + 34 consonants क..ह incl. ळ (no nukta
    # forms).
    "devanagari": (("NotoSansDevanagari", "NotoSerifDevanagari"),
                   _chars((0x905, 0x90B), (0x90F, 0x910), (0x913, 0x939),
                          skip=(0x929, 0x931, 0x934))),
    # The 28 letters of the alphabet, isolated forms (hamza-only forms and ta marbuta omitted).
    "arabic": (("NotoSansArabic", "NotoNaskhArabic", "NotoKufiArabic", "NotoNastaliqUrdu"),
               _chars(0x627, 0x628, (0x62A, 0x63A), (0x641, 0x64A), skip=(0x649,))),
    # Mkhedruli ა..ჰ: 33 letters.
    "georgian": (("NotoSansGeorgian", "NotoSerifGeorgian"), _chars((0x10D0, 0x10F0))),
    # ก..ฮ: the 42 consonants in use (obsolete ฃ ฅ and the vowels ฤ ฦ omitted).
    "thai": (("NotoSansThai", "NotoSerifThai", "NotoLoopedThai"),
             _chars((0xE01, 0xE2E), skip=(0xE03, 0xE05, 0xE24, 0xE26))),
    # The first-order (ä) form of 34 consonant series, plus the other 6 vowel orders of አ: 40.
    "ethiopic": (("NotoSansEthiopic", "NotoSerifEthiopic"),
                 _chars(*[0x1200 + 8 * k for k in (0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 13, 14, 15, 16,
                                                   18, 19, 20, 21, 23, 25, 26, 27, 28, 29, 30, 32,
                                                   33, 36, 37, 38, 39, 40, 41, 42)],
                        (0x12A1, 0x12A6))),
    # 11 independent vowels অ..ঔ + 32 consonants ক..হ + ড় ঢ় য়: 46.
    "bengali": (("NotoSansBengali", "NotoSerifBengali"),
                _chars((0x985, 0x98B), (0x98F, 0x990), (0x993, 0x9A8), (0x9AA, 0x9B0), 0x9B2,
                       (0x9B6, 0x9B9), (0x9DC, 0x9DD), 0x9DF)),
}

META_TRAIN = ("fashion-mnist", "latin", "greek", "cyrillic", "armenian", "hebrew", "devanagari",
              "arabic")
META_TEST = ("georgian", "thai", "ethiopic", "bengali")
ALL_TASKS = META_TRAIN + META_TEST


# --------------------------------------------------------------------------------------- output

def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed, then re-zip with fixed timestamps so rebuilds are byte-identical."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    buf.seek(0)
    tmp = path.with_suffix(".npz.tmp")
    with zipfile.ZipFile(buf) as zin, zipfile.ZipFile(tmp, "w") as zout:
        for info in zin.infolist():
            zi = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o644 << 16
            zout.writestr(zi, zin.read(info.filename), compresslevel=9)
    os.replace(tmp, path)


def task_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


# ------------------------------------------------------------------------------- fashion-mnist

def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _balanced_subset(y: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    idx = []
    for c in range(len(FASHION_CLASSES)):
        members = np.flatnonzero(y == c)
        if len(members) < per_class:
            raise SystemExit(f"fashion-mnist: class {c} has only {len(members)} samples")
        idx.append(rng.choice(members, size=per_class, replace=False))
    idx = np.concatenate(idx)
    return idx[rng.permutation(len(idx))]


def build_fashion(seed: int) -> dict:
    rng = task_rng(seed, "fashion-mnist")
    xs = {}
    for split, prefix, per_class in (("train", "train", FASHION_TRAIN_PER_CLASS),
                                     ("test", "t10k", FASHION_TEST_PER_CLASS)):
        x = _read_idx(FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz")
        y = _read_idx(FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
        sel = _balanced_subset(y, per_class, rng)
        xs[f"x_{split}"] = np.ascontiguousarray(x[sel])
        xs[f"y_{split}"] = y[sel]
    return dict(xs, classes=np.array(FASHION_CLASSES, dtype=str), hflip=np.array(True))


# -------------------------------------------------------------------------------------- glyphs

def family_fonts(family: str) -> list[Path]:
    fonts = sorted(FONT_DIR.glob(f"{family}-*.ttf"))
    if not fonts:
        raise SystemExit(f"no font files {FONT_DIR}/{family}-*.ttf (install fonts-noto-core)")
    return fonts


def _ink(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.uint8)


def _render_master(font: ImageFont.FreeTypeFont, ch: str) -> np.ndarray:
    img = Image.new("L", (RENDER_CANVAS, RENDER_CANVAS), 0)
    ImageDraw.Draw(img).text((RENDER_CANVAS / 2, RENDER_CANVAS / 2), ch, fill=255, font=font,
                             anchor="mm")
    return _ink(img)


class _Coverage:
    """Does a font have a real glyph for a character? fontTools cmap, else a tofu comparison."""

    def __init__(self, path: Path, font: ImageFont.FreeTypeFont):
        self.cmap = None
        try:
            from fontTools.ttLib import TTFont
            self.cmap = set(TTFont(str(path), lazy=True).getBestCmap())
        except ImportError:
            # U+0378 is unassigned: every font draws its .notdef (tofu) or nothing for it.
            self.tofu = _render_master(font, "\u0378")

    def has(self, ch: str, bitmap: np.ndarray) -> bool:
        if not bitmap.any():
            return False
        if self.cmap is not None:
            return ord(ch) in self.cmap
        return not np.array_equal(bitmap, self.tofu)


def render_masters(families: tuple[str, ...], chars: tuple[str, ...]):
    """Clean, ink-cropped renderings: masters[c] = list of (font file name, uint8 array)."""
    masters: list[list[tuple[str, np.ndarray]]] = [[] for _ in chars]
    used_fonts = []
    for fam in families:
        for path in family_fonts(fam):
            font = ImageFont.truetype(str(path), RENDER_PX, layout_engine=ImageFont.Layout.BASIC)
            cov = _Coverage(path, font)
            n = 0
            for c, ch in enumerate(chars):
                bm = _render_master(font, ch)
                if not cov.has(ch, bm):
                    continue
                rows, cols = np.flatnonzero(bm.any(1)), np.flatnonzero(bm.any(0))
                r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
                if r0 == 0 or c0 == 0 or r1 == RENDER_CANVAS or c1 == RENDER_CANVAS:
                    raise SystemExit(f"{path.name}: glyph {ch!r} overflows the render canvas")
                masters[c].append((path.name, bm[r0:r1, c0:c1]))
                n += 1
            if n:
                used_fonts.append(path.name)
    for ch, m in zip(chars, masters):
        if not m:
            raise SystemExit(f"no font among {families} has a glyph for {ch!r} (U+{ord(ch):04X})")
    return masters, used_fonts


def _square_filter(img: np.ndarray, op, radius: int) -> np.ndarray:
    """Grey erosion (op=np.minimum) or dilation (np.maximum) with a (2r+1)^2 square."""
    out = img.copy()
    for axis in (0, 1):
        src = out.copy()
        n = src.shape[axis]
        for d in range(1, radius + 1):
            for lo, hi in ((slice(d, n), slice(0, n - d)), (slice(0, n - d), slice(d, n))):
                dst_idx = [slice(None)] * 2
                src_idx = [slice(None)] * 2
                dst_idx[axis], src_idx[axis] = lo, hi
                view = out[tuple(dst_idx)]
                op(view, src[tuple(src_idx)], out=view)
    return out


def distort(master: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random 28x28 sample from a clean ink-cropped master rendering."""
    src = Image.fromarray(master)
    h, w = master.shape
    cy, cx = h / 2.0, w / 2.0  # ink-box centre in master pixels

    fit = BOX_PX / max(h, w)
    angle = np.deg2rad(rng.uniform(-12, 12))
    shear = rng.uniform(-0.2, 0.2)
    scale = rng.uniform(0.8, 1.1)
    aspect = np.exp(rng.uniform(-0.1, 0.1))
    tx, ty = rng.uniform(-2, 2, size=2)
    # Stroke thickness, applied at SUPER x resolution: thinner / as is / thicker / much thicker
    # (-0.25 / 0 / +0.25 / +0.5 output pixels on each side of a stroke).
    k = int(rng.choice(4, p=(0.2, 0.35, 0.3, 0.15)))

    # Forward map (master pixels around the centre -> output pixels around the canvas centre).
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shr = np.array([[1.0, shear], [0.0, 1.0]])
    stretch = np.diag([aspect, 1.0 / aspect])
    a = fit * scale * rot @ shr @ stretch
    # Keep the distorted ink box (plus stroke growth) inside the canvas with a 1 px margin:
    # shrink if needed, then clamp the translation.
    corners = np.array([[-w, -h], [w, -h], [-w, h], [w, h]], dtype=np.float64).T / 2.0
    half = np.abs(a @ corners).max(axis=1)  # half extents (x, y) in output pixels
    room = OUT_PX / 2.0 - 1.5
    if half.max() > room:
        a *= room / half.max()
        half *= room / half.max()
    tx = float(np.clip(tx, -(room - half[0]), room - half[0]))
    ty = float(np.clip(ty, -(room - half[1]), room - half[1]))

    a = SUPER * a
    inv = np.linalg.inv(a)
    size = OUT_PX * SUPER
    centre_out = np.array([size / 2.0 + SUPER * tx, size / 2.0 + SUPER * ty])
    # master = inv @ (out - centre_out) + centre_master
    b = np.array([cx, cy]) - inv @ centre_out
    coeffs = (inv[0, 0], inv[0, 1], b[0], inv[1, 0], inv[1, 1], b[1])
    big = src.transform((size, size), Image.Transform.AFFINE, coeffs,
                        resample=Image.Resampling.BILINEAR, fillcolor=0)
    if k != 1:
        op, radius = ((np.minimum, 1), None, (np.maximum, 1), (np.maximum, 2))[k]
        big = Image.fromarray(_square_filter(np.asarray(big), op, radius))
    small = big.resize((OUT_PX, OUT_PX), Image.Resampling.BOX)
    x = np.asarray(small, dtype=np.float32)
    # Contrast, then mild noise on the ink only (the background stays exactly 0 so that the
    # files compress well), quantized to steps of 8.
    x *= rng.uniform(0.75, 1.0) * 255.0 / max(float(x.max()), 1.0)
    ink = x > 0
    x[ink] += rng.normal(0.0, 6.0, size=int(ink.sum()))
    x = np.clip(np.round(x / 8.0) * 8.0, 0, 255)
    return x.astype(np.uint8)


def build_glyphs(name: str, seed: int) -> dict:
    families, chars = GLYPH_TASKS[name]
    masters, used_fonts = render_masters(families, chars)
    rng = task_rng(seed, name)
    out = {}
    for split, per_class in (("train", GLYPH_TRAIN_PER_CLASS), ("test", GLYPH_TEST_PER_CLASS)):
        xs, ys = [], []
        for c, faces in enumerate(masters):
            # Spread the samples of a class evenly over the faces that have the glyph.
            face_ids = rng.permutation(np.resize(np.arange(len(faces)), per_class))
            for f in face_ids:
                xs.append(distort(faces[f][1], rng))
                ys.append(c)
        order = rng.permutation(len(ys))
        out[f"x_{split}"] = np.stack(xs)[order]
        out[f"y_{split}"] = np.asarray(ys, dtype=np.int64)[order]
    faces_per_class = [len(m) for m in masters]
    out["classes"] = np.array(chars, dtype=str)
    out["hflip"] = np.array(False)
    out["_fonts"] = used_fonts
    out["_faces"] = (min(faces_per_class), max(faces_per_class))
    return out


# ------------------------------------------------------------------------------------- driver

def build_one(args: tuple[str, int, str]) -> dict:
    name, seed, out_dir = args
    t0 = time.time()
    data = build_fashion(seed) if name == "fashion-mnist" else build_glyphs(name, seed)
    fonts = data.pop("_fonts", None)
    faces = data.pop("_faces", None)
    path = Path(out_dir) / f"{name}.npz"
    write_npz(path, data)
    return dict(name=name, classes=len(data["classes"]), n_train=len(data["y_train"]),
                n_test=len(data["y_test"]), bytes=path.stat().st_size, fonts=fonts, faces=faces,
                seconds=time.time() - t0)


def _versions() -> str:
    """The tool and package versions the output depends on (for the record in LICENSES.md)."""
    import platform
    import subprocess

    import PIL
    from PIL import features

    parts = [f"Python {platform.python_version()}", f"numpy {np.__version__}",
             f"Pillow {PIL.__version__}", f"FreeType {features.version('freetype2')}"]
    for pkg in ("fonts-noto-core", "dataset-fashion-mnist"):
        try:
            v = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True,
                               text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            v = "unknown version"
        parts.append(f"{pkg} {v}")
    return ", ".join(parts)


def write_licenses(out_dir: Path, stats: list[dict], seed: int) -> None:
    rel_out = os.path.relpath(out_dir, REPO_ROOT) if out_dir.is_relative_to(REPO_ROOT) else out_dir
    cmd = f"python scripts/build_builtin_suite.py --out {rel_out} --seed {seed}"
    lines = [
        "# Bundled task suite (`builtin:` task specs)",
        "",
        "Each `<name>.npz` holds exactly: `x_train` uint8 [N,28,28], `y_train` int64 [N] (0..C-1),",
        "`x_test` uint8 [M,28,28], `y_test` int64 [M], `classes` unicode [C] (class names) and",
        "`hflip` 0-d bool (True only where mirroring keeps the class: fashion-mnist).",
        "Images are white foreground on black, 28x28 grayscale. Classes are balanced in both splits.",
        "Load with `np.load(path, allow_pickle=False)`.",
        "",
        f"Meta-train tasks: {', '.join(META_TRAIN)}.  ",
        f"Meta-test tasks: {', '.join(META_TEST)}.",
        "",
        "## How the files were made",
        "",
        "From the repository root, with the Debian packages `dataset-fashion-mnist` and",
        "`fonts-noto-core` installed (no network needed):",
        "",
        "```",
        cmd,
        "```",
        "",
        f"Built with {_versions()}. The build is deterministic for a given seed and versions "
        "(the zip timestamps are fixed, so a rebuild is byte-identical).",
        "",
        "* **fashion-mnist**: a class-balanced random subset of Fashion-MNIST, "
        f"{FASHION_TRAIN_PER_CLASS} train images per class from the training files and "
        f"{FASHION_TEST_PER_CLASS} test images per class from the t10k files, unchanged.",
        "* **glyph tasks** (one per script; the classes are the letters themselves): every letter "
        "is rendered at 64 px/em with every face and weight of the Noto families covering the "
        "script (a face lacking the glyph in its cmap is skipped), cropped to its ink box and "
        f"fitted into {BOX_PX}x{BOX_PX} inside the 28x28 canvas keeping the aspect ratio; each "
        "sample then gets a seeded random affine distortion (rotation ±12°, shear ±0.2, scale "
        "0.8-1.1, aspect ±10%, translation ±2 px, all kept inside the canvas), a random stroke "
        "thickness (min/max filter at 4x resolution, -0.25 to +0.5 px per side), "
        "a random contrast (peak 75-100%) and mild Gaussian noise (σ=6) on the ink, quantized "
        f"to steps of 8. {GLYPH_TRAIN_PER_CLASS} train and {GLYPH_TEST_PER_CLASS} test samples "
        "per class; test samples are fresh distortions of the same faces (faces are spread "
        "evenly over the samples).",
        "",
        "| file | classes | train | test | fonts (files) |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for s in stats:
        fonts = "Fashion-MNIST" if s["fonts"] is None else ", ".join(
            f.removesuffix(".ttf") for f in s["fonts"])
        lines.append(f"| `{s['name']}.npz` | {s['classes']} | {s['n_train']} | {s['n_test']} "
                     f"| {fonts} |")
    lines += [
        "",
        "Letters per glyph task: latin a-z; greek α-ω without ς; cyrillic а-я; armenian ա-ֆ;",
        "hebrew א-ת without final forms; devanagari 11 independent vowels + 34 consonants (incl. ळ);",
        "arabic the 28 isolated letters; georgian mkhedruli ა-ჰ; thai the 42 consonants in use",
        "ก-ฮ (without ฃ ฅ ฤ ฦ); ethiopic the first order of 34 consonant series plus the",
        "other six orders of አ; bengali 11 independent vowels + 32 consonants + ড় ঢ় য়.",
        "The exact list is each file's `classes` array.",
        "",
        "## Licenses",
        "",
        "* **Fashion-MNIST** (`fashion-mnist.npz`): Copyright (c) 2017 Zalando SE, released by",
        "  Zalando Research under the MIT License; taken from the Debian package",
        "  `dataset-fashion-mnist` (see /usr/share/doc/dataset-fashion-mnist/copyright).",
        "* **Noto fonts** (all other files): the images are bitmaps rendered with the Noto fonts,",
        "  Copyright the Noto Project Authors, licensed under the SIL Open Font License 1.1;",
        "  taken from the Debian package `fonts-noto-core` (see",
        "  /usr/share/doc/fonts-noto-core/copyright). The files contain rendered images made",
        "  with the fonts, not the fonts themselves.",
        "",
    ]
    (out_dir / "LICENSES.md").write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (%(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (%(default)s)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="worker processes (%(default)s)")
    p.add_argument("--tasks", nargs="*", default=list(ALL_TASKS), choices=ALL_TASKS,
                   help="build only these tasks (default: all)")
    args = p.parse_args(argv)
    out_dir = args.out.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    # Largest jobs first so that the two workers finish together.
    order = sorted(args.tasks, key=lambda n: -len(GLYPH_TASKS[n][1]) if n in GLYPH_TASKS else 0)
    jobs = [(name, args.seed, str(out_dir)) for name in order]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as ex:
            results = {r["name"]: r for r in ex.map(build_one, jobs)}
    else:
        results = {r["name"]: r for r in map(build_one, jobs)}
    stats = [results[n] for n in ALL_TASKS if n in results]

    print(f"{'task':<14}{'classes':>8}{'train':>8}{'test':>7}{'faces':>8}{'size':>10}{'secs':>7}")
    for s in stats:
        faces = "-" if s["faces"] is None else "%d-%d" % s["faces"]
        print(f"{s['name']:<14}{s['classes']:>8}{s['n_train']:>8}{s['n_test']:>7}{faces:>8}"
              f"{s['bytes'] / 1e6:>8.2f}MB{s['seconds']:>7.1f}")
    total = sum(f.stat().st_size for f in out_dir.glob("*.npz"))
    print(f"total {total / 1e6:.2f} MB in {out_dir}, {time.time() - t0:.1f} s")
    if set(args.tasks) == set(ALL_TASKS):
        write_licenses(out_dir, stats, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
