"""The names of the files ctinit reads and writes, and Hub ids (``ORG/NAME[@REVISION]``). Imports nothing."""
from __future__ import annotations

import re

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
PREPROCESSOR_NAME = "preprocessor_config.json"
CARD_NAME = "README.md"
#: Files that are read by unpickling, by their suffix in any case (``weights.PT`` too).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib")
#: Never downloaded from the Hub: files that could only be read by unpickling (the Hub matches case-sensitively).
PICKLE_PATTERNS = [f"*{s}" for s in PICKLE_SUFFIXES] + [f"*{s.upper()}" for s in PICKLE_SUFFIXES]
HUB_PREFIX = "hf-hub:"
_REPO_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+?)(?:@(?P<rev>[^\s@]+))?$")
COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")


def is_pickle_name(name: str) -> bool:
    """Whether a file name has a pickle suffix, in any case."""
    return str(name).lower().endswith(PICKLE_SUFFIXES)


def is_pickle_file(path) -> bool:
    """Whether a file is a pickle: by its name (:func:`is_pickle_name`) or by its content, whatever its name: the
    pickle protocol 2-5 opcode, or a zip (``torch.save``) holding a ``.pkl``."""
    if is_pickle_name(path):
        return True
    if str(path).lower().endswith(".safetensors"):  # its first 8 bytes are a length, which may look like a PROTO
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if len(head) >= 3 and head[0] == 0x80 and 2 <= head[1] <= 5 and \
                head[2] in (b"\x95" if head[1] >= 4 else b"}]()cq\x8a\x8c"):  # PROTO, then FRAME or a first opcode
            return True
        if head == b"PK\x03\x04":
            import zipfile

            with zipfile.ZipFile(path) as z:
                return any(n.lower().endswith(".pkl") for n in z.namelist())
    except (OSError, ValueError, RuntimeError):  # unreadable, or a damaged zip: not a pickle ctinit could be fooled by
        return False
    return False


def parse_hub_id(text: str) -> tuple[str, str | None] | None:
    """``ORG/NAME[@REV]`` (or ``hf-hub:ORG/NAME[@REV]``) -> ``(repo_id, revision)``; None when it is not one."""
    text = text[len(HUB_PREFIX):] if text.startswith(HUB_PREFIX) else text
    match = _REPO_ID.match(text)
    if not match or ".." in match.group("repo") or match.group("repo").endswith("."):
        return None
    return match.group("repo"), match.group("rev")


def one_line(text: object, limit: int = 300) -> str:
    """``text`` on one line, cut to ``limit`` characters: what an error line quotes of a message."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


__all__ = ["CARD_NAME", "COMMIT_HASH", "CONFIG_NAME", "HUB_PREFIX", "PICKLE_PATTERNS", "PICKLE_SUFFIXES",
           "PREPROCESSOR_NAME", "WEIGHTS_NAME", "is_pickle_file", "is_pickle_name", "one_line", "parse_hub_id"]
