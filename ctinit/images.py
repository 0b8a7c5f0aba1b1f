"""Image files: the one list of image suffixes and the one reader, shared by ``ctinit predict`` and ``folder:`` tasks.

A leaf module (numpy, PIL and :mod:`ctinit.errors` only). An image becomes 8-bit grayscale (``L``) or RGB: 16-bit
images are scaled to 0..255 (not clipped), palette and alpha images become RGB. Whatever is wrong with a file (not a
regular file, too many pixels, not an image, truncated) is one :class:`~ctinit.errors.TaskSpecError` line naming it.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .errors import TaskSpecError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: The most pixels an image file may have (8192 x 8192, below PIL's decompression-bomb warning): a larger file is
#: refused from its header, before gigabytes are decoded.
MAX_PIXELS = 8192 * 8192
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_GRAY_MODES = ("1", "L", "LA", "I", "F") + _SIXTEEN_BIT_MODES


def is_image_file(path: Path) -> bool:
    """A regular file with an image suffix (FIFOs, devices and folders are not)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def to_8bit(img):
    """A PIL image as a new 8-bit ``L`` (grayscale modes) or ``RGB`` image (every other mode)."""
    from PIL import Image

    # PNG stores 16-bit grayscale, which PIL opens as I;16 (older versions: I); converting clips it at 255
    if img.mode in _SIXTEEN_BIT_MODES or (img.mode == "I" and img.format == "PNG"):
        wide = np.clip(np.asarray(img, dtype=np.int64), 0, 65535)
        return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), mode="L")
    return img.convert("L" if img.mode in _GRAY_MODES else "RGB")


def pil_to_array(img) -> np.ndarray:
    """A PIL image -> uint8 ``[H, W]`` for grayscale modes, ``[H, W, 3]`` otherwise (alpha dropped)."""
    return np.asarray(to_8bit(img), dtype=np.uint8)


def open_image(path: Path, reduce_to: int | None = None):
    """The image file ``path`` as an 8-bit ``L`` or ``RGB`` PIL image (see :func:`to_8bit`). ``reduce_to``: a JPEG
    is decoded at the smallest of 1/2, 1/4 or 1/8 scale that keeps both sides at least twice that (PIL's
    ``draft``): a 4000 x 4000 photo for a 32-pixel model never occupies its full size in memory."""
    from PIL import Image

    path = Path(path)
    if not path.exists():
        raise TaskSpecError(f"{path}: no such file")
    if not path.is_file():  # a FIFO would block the read forever; a device has no end
        raise TaskSpecError(f"{path}: not a regular file; name image files ({', '.join(IMAGE_SUFFIXES)}) or folders")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # an error below, not a raw warning
            with Image.open(path) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise TaskSpecError(f"{path}: {width} x {height} pixels, more than {MAX_PIXELS:,} pixels "
                                        f"(8192 x 8192); downscale it")
                if reduce_to:
                    img.draft(img.mode, (2 * reduce_to, 2 * reduce_to))  # only JPEG decoders act on it
                img.load()
                return to_8bit(img)
    except TaskSpecError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TaskSpecError(f"{path}: more than {MAX_PIXELS:,} pixels (8192 x 8192); downscale it") from None
    except Exception as exc:  # unidentified format, truncated or corrupt data...
        text = " ".join(str(exc).split())[:120]
        raise TaskSpecError(f"{path}: unreadable image ({type(exc).__name__}{': ' + text if text else ''}); "
                            f"delete or re-save it") from exc


def read_image_array(path: Path, reduce_to: int | None = None) -> np.ndarray:
    """The image file ``path`` as uint8 ``[H, W]`` (grayscale) or ``[H, W, 3]`` (``reduce_to``: see
    :func:`open_image`)."""
    return np.asarray(open_image(path, reduce_to), dtype=np.uint8)


__all__ = ["IMAGE_SUFFIXES", "MAX_PIXELS", "is_image_file", "open_image", "pil_to_array", "read_image_array", "to_8bit"]
