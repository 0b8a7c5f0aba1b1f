"""JSON-lines files that a kill can cut short: the trainer's ``metrics.jsonl`` and the evaluator's ``runs.jsonl``
are appended to one line at a time, so a reader keeps every complete line and drops a torn last one."""
from __future__ import annotations

import json
from pathlib import Path


def read_jsonl(path: str | Path) -> tuple[list[tuple[str, object]], int]:
    """The complete JSON lines of a file, each with its parsed value (a line cut short by a kill mid-write is
    dropped), and how many were dropped."""
    kept, dropped = [], 0
    for line in Path(path).read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        kept.append((line, record))
    return kept, dropped
