"""The names of the files ctinit reads and writes, and Hub ids (``ORG/NAME[@REVISION]``). Imports nothing."""
from __future__ import annotations

import re

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
PREPROCESSOR_NAME = "preprocessor_config.json"
CARD_NAME = "README.md"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
#: Never downloaded from the Hub: files that could only be read by unpickling.
PICKLE_PATTERNS = [f"*{s}" for s in PICKLE_SUFFIXES]
HUB_PREFIX = "hf-hub:"
_REPO_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+?)(?:@(?P<rev>[^\s@]+))?$")
COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")


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
           "PREPROCESSOR_NAME", "WEIGHTS_NAME", "one_line", "parse_hub_id"]
