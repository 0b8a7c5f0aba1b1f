"""What ``ctinit list`` shows: offline, the zoo (with its measured gain over scratch), the backbones, the bundled
tasks and the meta-training recipes (reads the registry and the package's files; builds no model); with ``--hub``,
the initializations published on the Hub (``ctinit list --hub``, ``ctinit-hub list``)."""
from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path

from .errors import CheckpointError
from .hubio.errors import hub_offline, is_connection_error, raise_hub_error
from .stats import BETTER, format_difference
from .zoo import PREFIX as ZOO_PREFIX, entries as zoo_entries


def recipes_dir() -> Path | None:
    """The trainer's recipes folder, found without importing the trainer (ctinit never imports it): the installed
    ``ctinit_training`` package's, else the checkout's ``training/``."""
    try:
        spec = importlib.util.find_spec("ctinit_training")
    except (ImportError, ValueError):
        spec = None
    for root in list(spec.submodule_search_locations or []) if spec else []:
        if (Path(root) / "recipes").is_dir():
            return Path(root) / "recipes"
    checkout = Path(__file__).resolve().parent.parent / "training" / "recipes"
    return checkout if checkout.is_dir() else None


def gain_text(entry: dict) -> str:
    """Each measured evaluation as ``+10.2 pts [+6.1, +14.3] on NAME``, saying so where the entry does not beat
    scratch; ``not measured`` when nothing is recorded."""
    results = entry.get("results") or []
    if not results:
        return "not measured"
    parts = []
    for r in results:
        text = f"{format_difference(r['difference'])} on {r['name']}"
        if r.get("verdict") != BETTER:
            text += " (does not beat scratch)"
        parts.append(text)
    return "; ".join(parts)


def zoo_rows() -> list[dict]:
    rows = []
    for e in zoo_entries():
        rows.append({"name": e["name"], "init": ZOO_PREFIX + e["name"], "backbone": e.get("backbone"),
                     "image_size": e.get("image_size"), "channels": e.get("channels"), "tasks": e.get("tasks") or [],
                     "size": e.get("size"), "hub_id": e.get("hub_id"), "revision": e.get("revision"),
                     "results": e.get("results") or [], "gain": gain_text(e)})
    return rows


def catalog() -> dict:
    """``{"zoo": [...], "backbones": [...], "tasks": [...], "recipes": [...]}`` (plain data, offline)."""
    from .models import ARCHITECTURES
    from .tasks.builtin import SUITES

    tasks = []
    for suite, (train, test) in SUITES.items():
        tasks += [{"spec": f"builtin:{n}", "suite": suite, "role": "meta-train"} for n in train]
        tasks += [{"spec": f"builtin:{n}", "suite": suite, "role": "meta-test"} for n in test]
    folder = recipes_dir()
    recipes = sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.yaml")) if folder else []
    backbones = [{"name": name, "library": "transformers" if name.startswith("hf-") else "ctinit"}
                 for name in ARCHITECTURES]
    return {"zoo": zoo_rows(), "backbones": backbones, "tasks": tasks, "recipes": [{"name": r} for r in recipes]}


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header] + rows)


def _size(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


def catalog_text(data: dict) -> str:
    zoo_part = _table(["init", "backbone", "input", "meta-trained on", "gain over scratch (paired, 95% interval)",
                       "size"],
                      [[r["init"], str(r["backbone"]), f"{r['channels']}x{r['image_size']}x{r['image_size']}",
                        _tasks_text(r["tasks"]), r["gain"], _size(r["size"])] for r in data["zoo"]]) \
        if data["zoo"] else "(none in this version)"
    suites: dict[tuple, list[str]] = {}
    for t in data["tasks"]:
        suites.setdefault((t["suite"], t["role"]), []).append(t["spec"].split(":", 1)[1])
    return "\n".join([
        "Initializations (ctinit finetune --init zoo:NAME; scratch:zoo:NAME for the same architecture, fresh):",
        zoo_part, "",
        "Backbones (scratch:NAME, backbone: NAME in a recipe): " + ", ".join(b["name"] for b in data["backbones"]),
        "",
        "Bundled tasks (builtin:NAME):",
        *(f"  {suite} {role}: {', '.join(names)}" for (suite, role), names in suites.items()),
        "",
        "Recipes (ctinit-train --config NAME): " + (", ".join(r["name"] for r in data["recipes"]) or "-"),
        "",
        "Initializations published on the Hub: ctinit list --hub [--author ORG]",
    ])


def _tasks_text(tasks: list[str]) -> str:
    names = [str(t).split(":", 1)[-1] for t in tasks]
    return ", ".join(names) if len(names) <= 3 else f"{len(names)} tasks ({', '.join(names[:2])}, ...)"


# ------------------------------------------------------------------------------------------------ on the Hub


def list_inits(author: str | None = None, search: str | None = None, limit: int | None = 50,
               sort: str = "downloads") -> list[dict]:
    """Initializations published on the Hub by this library (repos tagged ``ctinit``), as plain dicts."""
    from huggingface_hub import HfApi

    from .meta import RULES

    hf_logger = logging.getLogger("huggingface_hub")
    level = hf_logger.level
    hf_logger.setLevel(logging.ERROR)  # no "Retrying in 8s" lines: the outcome is one line either way
    try:
        models = list(HfApi().list_models(filter="ctinit", author=author, search=search, sort=sort, limit=limit))
    except Exception as e:  # noqa: BLE001
        if is_connection_error(e):
            why = "HF_HUB_OFFLINE is set; listing needs the network" if hub_offline() else "check the network"
            raise CheckpointError(f"cannot list initializations: the Hub cannot be reached ({type(e).__name__}); {why}") from e
        raise_hub_error(e, author or "ctinit", None)
    finally:
        hf_logger.setLevel(level)
    rows = []
    for m in models:
        tags = list(getattr(m, "tags", None) or [])
        algorithm = next((t for t in tags if t in RULES), "")
        modified = getattr(m, "last_modified", None) or getattr(m, "created_at", None)
        rows.append({"id": m.id, "algorithm": algorithm, "downloads": getattr(m, "downloads", None),
                     "likes": getattr(m, "likes", None),
                     "last_modified": modified.strftime("%Y-%m-%d") if hasattr(modified, "strftime") else (modified or None)})
    return rows




def inits_table(rows: list[dict]) -> str:
    """The rows of :func:`list_inits` as an aligned text table (what ``ctinit list`` and ``ctinit-hub list`` print)."""
    header = ["id", "algorithm", "downloads", "likes", "updated"]
    table = [[str(r["id"]), r["algorithm"] or "-", "-" if r["downloads"] is None else str(r["downloads"]),
              "-" if r["likes"] is None else str(r["likes"]), r["last_modified"] or "-"] for r in rows]
    return _table(header, table)


def print_inits(author: str | None, search: str | None, limit: int, as_json: bool, prog: str) -> int:
    """What ``ctinit list`` and ``ctinit-hub list`` do: the published initializations as a table (or JSON) on
    stdout; "none found" on stderr. Returns the exit code."""
    from .schema import PositiveInt, check_option

    check_option("--limit", limit, PositiveInt)
    rows = list_inits(author=author, search=search, limit=limit)
    if as_json:
        print(json.dumps(rows))
    elif not rows:
        print(f"{prog}: no initializations found on the Hub" + (f" for author {author}" if author else ""),
              file=sys.stderr, flush=True)
    else:
        print(inits_table(rows))
    return 0


__all__ = ["catalog", "catalog_text", "gain_text", "inits_table", "list_inits", "print_inits", "recipes_dir",
           "zoo_rows"]
