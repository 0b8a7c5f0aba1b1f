"""Build the bundled colour suite (``builtin:colour-*``): heterogeneous 32x32 RGB tasks from Debian packages.

Sources are Debian packages only (one package manager: apt-get), read from their installed files; no network
is used at run time. Install them once with

    apt-get update && apt-get install -y --no-install-recommends \\
        fonts-noto-color-emoji unicode-data kdegames-card-data-kf5 kdegames-mahjongg-data-kf5 gimp-data \\
        librsvg2-bin breeze-icon-theme elementary-xfce-icon-theme faba-icon-theme tango-icon-theme \\
        gnome-icon-theme mate-icon-theme lxde-icon-theme oxygen-icon-theme gnome-icon-theme-gartoon \\
        gnome-icon-theme-nuovo gnome-icon-theme-yasis suru-icon-theme numix-icon-theme adwaita-icon-theme

then run (from the repository root; a few minutes on one idle CPU core, the 100-per-class meta-test tasks most)

    python scripts/build_colour_suite.py [--out ctinit/data/colour] [--tasks cards mahjong textures]

Python needs numpy and Pillow (with FreeType; the emoji font is a colour bitmap font). The Fashion-MNIST and
Latin glyph tasks are re-coloured from the grayscale suite in ``ctinit/data/builtin/`` (built by
``scripts/build_builtin_suite.py``), which must be present.

Every task file holds ``x_train`` uint8 [N,32,32,3], ``y_train`` int64 [N], ``x_test``, ``y_test``, ``classes``
(str), ``hflip`` (0-d bool), ``source_train`` / ``source_test`` (str [N]: a short hash of the source item each
sample was drawn from: the file's bytes plus the element / glyph / region used) and ``domain`` (0-d str).
Test samples are drawn from other source items than training samples wherever the source allows it (other icon
themes, card decks, mahjong tilesets, emoji, pattern regions, Fashion-MNIST test images); the build asserts that
no ``source_test`` value occurs in ``source_train``. Samples are augmented at build time (random scale, rotation,
shift, colour jitter, backgrounds, blur and noise), so the stored images already differ from their sources.
"""
from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_builtin_suite import write_npz  # noqa: E402  (fixed zip timestamps: a rebuild is byte-identical)

SIZE = 32
ROOT = Path(__file__).resolve().parent.parent
GRAY_SUITE = ROOT / "ctinit" / "data" / "builtin"

EMOJI_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
EMOJI_TEST = "/usr/share/unicode/emoji/emoji-test.txt"
CARD_DIR = "/usr/share/carddecks"
MAHJONGG_DIR = "/usr/share/kmahjongglib/tilesets"
ICON_DIR = "/usr/share/icons"

# Which task belongs to which domain, and which domains are held out of meta-training (see ctinit/tasks/builtin.py).
DOMAINS = {
    "emoji-faces": "emoji", "emoji-objects": "emoji",
    "icons-actions": "icons", "icons-places": "icons",
    "fashion": "fashion", "latin": "glyphs",
    "cards": "cards", "mahjong": "mahjong", "textures": "textures",
}

# Icon themes: test themes are never used for training samples.
ICON_TRAIN_THEMES = ["Adwaita", "Faba", "Numix", "Nuovo", "breeze", "gartoon", "gnome", "mate", "nuoveXT2", "suru",
                     "yasis"]
ICON_TEST_THEMES = ["Tango", "oxygen", "elementary-xfce"]
# Icon names present in most of the themes above; aliases of one another (gtk-add = list-add, ...) are left out.
ICON_CLASSES = {
    "icons-actions": ["go-up", "go-down", "go-previous", "go-next", "go-first", "go-last", "go-home", "edit-undo",
                      "edit-redo", "edit-cut", "edit-copy", "edit-paste", "edit-delete", "edit-find",
                      "document-save", "document-open", "document-print", "list-add", "list-remove",
                      "view-refresh", "view-fullscreen", "mail-forward", "bookmark-new", "system-shutdown"],
    "icons-places": ["folder", "folder-open", "folder-new", "folder-remote", "user-home", "user-desktop",
                     "network-workgroup", "computer", "printer", "package-x-generic", "text-html", "text-x-generic",
                     "text-x-script", "x-office-document", "audio-x-generic", "image-x-generic", "audio-volume-muted",
                     "audio-volume-high", "contact-new", "appointment-new", "system-lock-screen"],
}
CARD_TEST_DECKS = ["svg-oxygen-white", "svg-penguins", "svg-xskat-german", "svg-nicu-ornamental"]
# Test tilesets draw the same tiles as the training ones (egypt and alphabet replace them with unrelated pictures
# and letters, so they stay in training where they only add variety).
MAHJONGG_TEST_TILESETS = ["jade", "traditional"]
EMOJI_GROUPS = {
    "emoji-faces": ["Smileys & Emotion", "People & Body"],
    "emoji-objects": ["Animals & Nature", "Food & Drink", "Travel & Places", "Activities", "Objects"],
}
# Samples per class (train, test) of each task. The meta-train tasks are sized so that together they stay under
# 25 MB compressed; the meta-test tasks have 100 training samples per class (many-shot fine-tuning: more renders of
# the same training sources) and keep their test size.
PER_CLASS = {"emoji-faces": (24, 8), "emoji-objects": (16, 6), "icons-actions": (32, 10),
             "icons-places": (32, 10), "fashion": (80, 20), "latin": (28, 10), "cards": (100, 8),
             "mahjong": (100, 8), "textures": (100, 8)}
# The Debian package whose GIMP patterns the textures task uses (gimp-data-extras installs more patterns into the
# same folder; they are not part of the suite).
TEXTURE_PACKAGE = "gimp-data"


# --------------------------------------------------------------------------------------------------
# Pure helpers


def source_id(*parts: bytes | str) -> str:
    """A short, stable identifier of one source item: the first 16 hex digits of a SHA-1 over its parts."""
    h = hashlib.sha1()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:16]


def parse_emoji_test(text: str) -> list[tuple[str, str, str]]:
    """(group, subgroup, emoji) for every fully-qualified single-codepoint emoji (an optional U+FE0F allowed)
    in Unicode's emoji-test.txt; skin-tone variants, ZWJ sequences, flags and keycaps are left out."""
    out, group, subgroup = [], "", ""
    for line in text.splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#") and "; fully-qualified" in line:
            points = [int(c, 16) for c in line.split(";")[0].split()]
            points = [p for p in points if p != 0xFE0F]
            if len(points) == 1:
                out.append((group, subgroup, chr(points[0])))
    return out


def read_gimp_pattern(data: bytes) -> np.ndarray:
    """A GIMP .pat file as uint8 [H,W,3] (gray and gray+alpha repeated, alpha dropped)."""
    header_size, _version, width, height, depth = struct.unpack(">5I", data[:20])
    if data[20:24] != b"GPAT":
        raise ValueError("not a GIMP pattern (magic GPAT missing)")
    pixels = np.frombuffer(data[header_size:header_size + width * height * depth], np.uint8)
    pixels = pixels.reshape(height, width, depth)
    if depth in (1, 2):
        return np.repeat(pixels[:, :, :1], 3, axis=2)
    return pixels[:, :, :3].copy()


def package_files(package: str, suffix: str) -> list[str]:
    """The installed files of a Debian package whose names end with ``suffix``, sorted."""
    listing = subprocess.run(["dpkg-query", "-L", package], check=True, capture_output=True, text=True).stdout
    return sorted(line for line in listing.splitlines() if line.endswith(suffix) and os.path.isfile(line))


def split_items(items: list, test_fraction: float, rng: np.random.Generator, min_test: int = 1) -> tuple[list, list]:
    """Shuffle items and split them into (train, test), at least ``min_test`` test items and one train item."""
    order = list(rng.permutation(len(items)))
    n_test = min(len(items) - 1, max(min_test, int(round(test_fraction * len(items)))))
    return [items[i] for i in order[n_test:]], [items[i] for i in order[:n_test]]


# --------------------------------------------------------------------------------------------------
# Rendering and augmentation


def render_svg(path: str, width: int | None = None, element: str | None = None) -> "Image.Image":
    """Render an SVG(Z) file with rsvg-convert to an RGBA image ``width`` px wide, or one element of it at the
    file's own scale, cropped to the element's visible pixels (rsvg keeps the page origin in its output)."""
    from PIL import Image

    cmd = ["rsvg-convert", "-f", "png"] + (["-a", "-w", str(width)] if width else ["-z", "1"])
    if element:
        cmd += ["-i", element]
    data = subprocess.run(cmd + [path], check=True, capture_output=True).stdout
    im = Image.open(io.BytesIO(data)).convert("RGBA")
    return crop_to_content(im) if element else im


def crop_to_content(im: "Image.Image") -> "Image.Image":
    box = im.getchannel("A").getbbox()
    return im.crop(box) if box else im


def background(rng: np.random.Generator) -> np.ndarray:
    """A random 32x32 float background: a flat colour, a two-colour gradient or smooth coloured noise."""
    kind = rng.integers(3)
    if kind == 0:
        return np.broadcast_to(rng.uniform(0, 255, 3), (SIZE, SIZE, 3)).copy()
    if kind == 1:
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
        t = np.clip((np.cos(angle) * (xx - .5) + np.sin(angle) * (yy - .5)) + .5, 0, 1)[..., None]
        return a * (1 - t) + b * t
    coarse = rng.uniform(0, 255, (4, 4, 3)).astype(np.float32)
    from PIL import Image

    channels = [np.asarray(Image.fromarray(coarse[:, :, c]).resize((SIZE, SIZE), Image.BICUBIC)) for c in range(3)]
    return np.clip(np.stack(channels, axis=2), 0, 255)


def jitter(rgb: np.ndarray, rng: np.random.Generator, hue: bool = True) -> np.ndarray:
    """Brightness, contrast, saturation (and a small channel mix standing in for hue) on float RGB."""
    rgb = rgb * rng.uniform(0.7, 1.3)
    mean = rgb.mean()
    rgb = (rgb - mean) * rng.uniform(0.7, 1.3) + mean
    gray = rgb.mean(axis=2, keepdims=True)
    rgb = gray + (rgb - gray) * rng.uniform(0.5, 1.4)
    if hue:
        mix = np.eye(3) + rng.normal(0, 0.08, (3, 3))
        rgb = rgb @ mix.T
    return np.clip(rgb, 0, 255)


def compose(item: "Image.Image", rng: np.random.Generator, fill: tuple[float, float] = (0.6, 0.95),
            rotate: float = 12.0, hue: bool = True) -> np.ndarray:
    """One augmented 32x32 sample of an RGBA item: scaled so its longer side fills ``fill`` of the image,
    rotated, shifted, colour-jittered, put on a random background, sometimes blurred, with noise."""
    from PIL import Image, ImageFilter

    item = crop_to_content(item)
    side = rng.uniform(*fill) * SIZE
    scale = side / max(item.size)
    w, h = max(1, round(item.size[0] * scale * rng.uniform(0.9, 1.1))), max(1, round(item.size[1] * scale))
    small = item.resize((w, h), Image.LANCZOS).rotate(rng.uniform(-rotate, rotate), Image.BICUBIC, expand=True)
    canvas = Image.new("RGBA", (SIZE, SIZE))
    x = int(rng.integers(min(0, SIZE - small.size[0]), max(0, SIZE - small.size[0]) + 1))
    y = int(rng.integers(min(0, SIZE - small.size[1]), max(0, SIZE - small.size[1]) + 1))
    canvas.paste(small, (x, y), small)
    arr = np.asarray(canvas, dtype=np.float64)
    alpha = arr[:, :, 3:] / 255
    out = jitter(arr[:, :, :3], rng, hue) * alpha + background(rng) * (1 - alpha)
    return finish(out, rng)


def finish(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sometimes blur, then add Gaussian noise of a random strength; uint8 [32,32,3]."""
    from PIL import Image, ImageFilter

    if rng.random() < 0.25:
        im = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(.3, .8)))
        rgb = np.asarray(im, dtype=np.float64)
    if rng.random() < 0.5:  # (noise is what costs most in the compressed files: half the samples get some)
        rgb = rgb + rng.normal(0, rng.uniform(1, 4), rgb.shape)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def tinted(gray: np.ndarray, rng: np.random.Generator) -> "Image.Image":
    """A grayscale white-on-black image as an RGBA item: alpha = the gray value, colour = a random colour
    (or a two-colour gradient) shaded by the gray value."""
    from PIL import Image

    g = gray.astype(np.float64) / 255
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = np.linspace(0, 1, g.shape[0])[:, None, None] if rng.random() < .5 else 0.0
    colour = a * (1 - t) + b * t
    shade = 0.5 + 0.5 * g[..., None]
    rgb = np.broadcast_to(colour * shade, g.shape + (3,))
    rgba = np.concatenate([rgb, (g * 255)[..., None]], axis=2)
    return Image.fromarray(np.clip(rgba, 0, 255).astype(np.uint8), "RGBA")


# --------------------------------------------------------------------------------------------------
# Sources: each returns {class name: {"train": [(source id, item)], "test": [...]}} where an item is
# anything ``draw`` can turn into one sample.


def emoji_items(groups: list[str], rng: np.random.Generator):
    """A class per Unicode subgroup (of at least 6 emoji) of the emoji ``groups``; test items are other emoji."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(EMOJI_FONT, 109)
    font_bytes = Path(EMOJI_FONT).read_bytes()
    by_subgroup: dict[str, list[str]] = {}
    for group, subgroup, char in parse_emoji_test(Path(EMOJI_TEST).read_text(encoding="utf-8")):
        if group in groups:
            by_subgroup.setdefault(subgroup, []).append(char)
    classes = {}
    for subgroup, chars in sorted(by_subgroup.items()):
        if len(chars) < 6:
            continue
        train, test = split_items(chars, 0.25, rng, min_test=2)
        classes[subgroup] = {}
        for split, part in (("train", train), ("test", test)):
            items = []
            for char in part:
                im = Image.new("RGBA", (160, 160))
                ImageDraw.Draw(im).text((10, 10), char, font=font, embedded_color=True)
                if im.getbbox() is None:
                    continue
                items.append((source_id(font_bytes, char), im))
            classes[subgroup][split] = items
    return classes


def icon_file(theme: str, name: str) -> str | None:
    """The best file for icon ``name`` in ``theme``: a scalable SVG, else the largest PNG of at least 32 px."""
    candidates = [p for p in glob.glob(f"{ICON_DIR}/{theme}/**/{name}.*", recursive=True)
                  if "symbolic" not in p and p.endswith((".svg", ".svgz", ".png")) and os.path.isfile(p)]
    svgs = [p for p in candidates if p.endswith((".svg", ".svgz"))]
    if svgs:
        return sorted(svgs, key=lambda p: ("scalable" not in p, p))[0]

    def px(p):
        digits = "".join(c if c.isdigit() else " " for c in p[len(ICON_DIR) + len(theme):]).split()
        return max((int(d) for d in digits if int(d) <= 512), default=0)

    pngs = sorted((p for p in candidates if px(p) >= 32), key=px)
    return pngs[-1] if pngs else None


def icon_items(names: list[str], rng: np.random.Generator):
    """A class per icon name; training items come from the training themes, test items from the test themes."""
    from PIL import Image

    classes = {}
    for name in names:
        classes[name] = {"train": [], "test": []}
        for split, themes in (("train", ICON_TRAIN_THEMES), ("test", ICON_TEST_THEMES)):
            for theme in themes:
                path = icon_file(theme, name)
                if path is None:
                    continue
                data = Path(path).read_bytes()
                im = render_svg(path, 96) if path.endswith((".svg", ".svgz")) else Image.open(path).convert("RGBA")
                classes[name][split].append((source_id(data, name), im))
    return classes


def card_items(rng: np.random.Generator):
    ranks = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "jack", "queen", "king"]
    suits = ["club", "diamond", "heart", "spade"]
    classes = {f"{r}_{s}": {"train": [], "test": []} for s in suits for r in ranks}
    for deck in sorted(os.listdir(CARD_DIR)):
        files = glob.glob(f"{CARD_DIR}/{deck}/*.svgz")
        if not deck.startswith("svg-") or not files:
            continue
        data = Path(files[0]).read_bytes()
        split = "test" if deck in CARD_TEST_DECKS else "train"
        try:
            rendered = {card: render_svg(files[0], element=card) for card in classes}
        except subprocess.CalledProcessError as exc:  # svg-konqi-modern: "has no dimensions" for rsvg 2.54
            print(f"  cards: skipping deck {deck}: {exc.stderr.decode().strip()}", file=sys.stderr)
            continue
        if any(im.size[0] > im.size[1] for im in rendered.values()):  # svg-future: rsvg draws another element
            print(f"  cards: skipping deck {deck}: its cards render wider than tall", file=sys.stderr)
            continue
        for card, im in rendered.items():
            classes[card][split].append((source_id(data, card), im))
    return classes


def mahjong_items(rng: np.random.Generator):
    from PIL import Image

    names = ([f"BAMBOO_{i}" for i in range(1, 10)] + [f"CHARACTER_{i}" for i in range(1, 10)] +
             [f"ROD_{i}" for i in range(1, 10)] + [f"WIND_{i}" for i in range(1, 5)] +
             [f"DRAGON_{i}" for i in range(1, 4)] + [f"FLOWER_{i}" for i in range(1, 5)] +
             [f"SEASON_{i}" for i in range(1, 5)])
    classes = {n.lower(): {"train": [], "test": []} for n in names}
    for path in sorted(glob.glob(f"{MAHJONGG_DIR}/*.svgz")):
        tileset = Path(path).name[:-len(".svgz")]
        data = Path(path).read_bytes()
        split = "test" if tileset in MAHJONGG_TEST_TILESETS else "train"
        tile = render_svg(path, element="TILE_1")
        for n in names:
            face = render_svg(path, element=n)
            if face.getchannel("A").getbbox() is None:  # jade's white dragon is an empty face
                continue
            # The face on its tileset's tile (scaled to 80% of the tile's width), so the tile style is part of
            # the item.
            base = tile.copy()
            fw = round(base.size[0] * .8)
            face = face.resize((fw, max(1, round(fw * face.size[1] / face.size[0]))), Image.LANCZOS)
            base.alpha_composite(face.crop((0, 0, fw, min(face.size[1], base.size[1]))),
                                 (round(base.size[0] * .02), round(base.size[1] * .02)))
            classes[n.lower()][split].append((source_id(data, n), base))
    return classes


def texture_items(rng: np.random.Generator, package: str = TEXTURE_PACKAGE):
    """Each GIMP pattern of the Debian ``package`` of at least 48x48 px is a class; training crops come from its
    top 65% rows, test crops from the rest, so no test pixel was seen in training."""
    classes = {}
    for path in package_files(package, ".pat"):
        data = Path(path).read_bytes()
        pixels = read_gimp_pattern(data)
        h, w = pixels.shape[:2]
        if min(h, w) < 48:
            continue
        cut = int(h * .65)
        name = Path(path).stem
        classes[name] = {"train": [(source_id(data, "rows", "0", str(cut)), pixels[:cut])],
                         "test": [(source_id(data, "rows", str(cut), str(h)), pixels[cut:])]}
    return classes


def gray_items(name: str, rng: np.random.Generator):
    """The grayscale bundled task ``name``: its train images for training, its test images for testing."""
    with np.load(GRAY_SUITE / f"{name}.npz", allow_pickle=False) as z:
        classes = [str(c) for c in z["classes"]]
        out = {c: {"train": [], "test": []} for c in classes}
        for split in ("train", "test"):
            x, y = z[f"x_{split}"], z[f"y_{split}"]
            for i in range(len(x)):
                out[classes[y[i]]][split].append((source_id(name, x[i].tobytes()), x[i]))
    return out


def draw(task: str, item, rng: np.random.Generator) -> np.ndarray:
    """One augmented sample of ``item`` as the suite's task ``task`` draws its items (a crop for textures, the
    item composed on a background otherwise)."""
    from PIL import Image

    if task == "textures":
        region = item
        h, w = region.shape[:2]
        side = int(rng.integers(max(8, min(h, w) // 4), min(h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(region[y:y + side, x:x + side]).resize((SIZE, SIZE), Image.BILINEAR)
        crop = crop.rotate(90 * int(rng.integers(4)))
        return finish(jitter(np.asarray(crop, dtype=np.float64), rng, hue=True), rng)
    if task in ("fashion", "latin"):
        return compose(tinted(item, rng), rng, fill=(0.7, 1.0), rotate=10)
    if task == "cards":
        return compose(item, rng, fill=(0.8, 1.0), rotate=8, hue=False)
    if task == "mahjong":
        return compose(item, rng, fill=(0.8, 1.0), rotate=8, hue=False)
    return compose(item, rng)


def build_task(task: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    if task.startswith("emoji"):
        classes = emoji_items(EMOJI_GROUPS[task], rng)
    elif task.startswith("icons"):
        classes = icon_items(ICON_CLASSES[task], rng)
    elif task == "cards":
        classes = card_items(rng)
    elif task == "mahjong":
        classes = mahjong_items(rng)
    elif task == "textures":
        classes = texture_items(rng)
    elif task == "fashion":
        classes = gray_items("fashion-mnist", rng)
    else:
        classes = gray_items(task, rng)
    arrays = render_task(task, classes, *PER_CLASS[task], rng)
    arrays["hflip"] = np.asarray(task in ("fashion", "textures"))
    arrays["domain"] = np.asarray(DOMAINS[task])
    return arrays


def render_task(task: str, classes: dict, n_train: int, n_test: int, rng: np.random.Generator) -> dict:
    """``x_train, y_train, source_train, x_test, y_test, source_test, classes`` of the classes that have both
    training and test items: ``n_train`` / ``n_test`` samples per class drawn as the suite's task ``task`` draws."""
    classes = {c: v for c, v in classes.items() if v["train"] and v["test"]}
    names = sorted(classes)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        xs, ys, srcs = [], [], []
        for label, name in enumerate(names):
            items = classes[name][split]
            # Cycle through the source items so every one is used about equally often.
            order = rng.permutation(max(n, len(items)))[:n] % len(items)
            for k in order:
                sid, item = items[k]
                xs.append(draw(task, item, rng))
                ys.append(label)
                srcs.append(sid)
        arrays[f"x_{split}"] = np.stack(xs)
        arrays[f"y_{split}"] = np.asarray(ys, np.int64)
        arrays[f"source_{split}"] = np.asarray(srcs)
    shared = set(arrays["source_train"]) & set(arrays["source_test"])
    assert not shared, f"{task}: {len(shared)} source items in both splits"
    arrays["classes"] = np.asarray(names)
    return arrays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "ctinit" / "data" / "colour"))
    parser.add_argument("--tasks", nargs="*", default=list(DOMAINS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preview", help="also write a PNG grid of the first samples of each task to this folder")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for task in args.tasks:
        arrays = build_task(task, seed=args.seed * 1000 + list(DOMAINS).index(task))
        write_npz(out / f"{task}.npz", arrays)
        print(summary(task, arrays, out / f"{task}.npz"), flush=True)
        if args.preview:
            write_preview(arrays, Path(args.preview) / f"{task}.png")
    return 0


def summary(name: str, arrays: dict, path: Path) -> str:
    """One line: classes, train / test samples and source items, file size."""
    line = (f"{name}: {len(arrays['classes'])} classes, {len(arrays['x_train'])} train / {len(arrays['x_test'])} "
            f"test")
    if "source_train" in arrays:
        line += f", {len(set(arrays['source_train']))}/{len(set(arrays['source_test']))} source items"
    return line + f", {path.stat().st_size / 1e6:.2f} MB"


def write_preview(arrays: dict, path: Path, rows: int = 8) -> None:
    """A PNG grid of ``rows`` x ``rows`` random training images (gray or RGB) at 4x, in label order so that
    samples of one class sit side by side."""
    from PIL import Image

    x, y = arrays["x_train"], arrays["y_train"]
    pick = np.random.default_rng(0).choice(len(x), rows * rows, replace=False)
    pick = pick[np.argsort(y[pick], kind="stable")]
    side = x.shape[1]
    grid = x[pick].reshape(rows, rows, side, side, -1).transpose(0, 2, 1, 3, 4).reshape(rows * side, rows * side, -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.squeeze(-1) if grid.shape[-1] == 1 else grid).resize(
        (4 * rows * side, 4 * rows * side), Image.NEAREST).save(path)


if __name__ == "__main__":
    sys.exit(main())
