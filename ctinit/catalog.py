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
        against = r.get("against", "scratch")
        text = f"{format_difference(r['difference'])} on {r['name']}"
        if against != "scratch":
            text += f" (vs {ZOO_PREFIX}{against})"
        if r.get("verdict") != BETTER:
            text += f" (does not beat {'scratch' if against == 'scratch' else ZOO_PREFIX + against})"
        parts.append(text)
    return "; ".join(parts)


#: What ``ctinit list --json`` gives of each zoo entry, beside ``init``, ``gain`` and ``headline``.
ZOO_FIELDS = ("name", "algorithm", "counterpart", "counterpart_of", "backbone", "image_size", "channels", "params",
              "flops", "gflops", "flops_counted", "size", "license", "tasks", "training_data", "recipe", "command",
              "seconds", "machine", "meta_lr", "meta_lr_chosen", "hub_id", "revision", "results")
#: ``ctinit list`` fits a terminal this wide (``--wide`` and ``ctinit list NAME`` do not try).
WIDTH = 100


def headline(entry: dict) -> dict | None:
    """The entry's headline result: the first one recorded against scratch (the registry's order is the
    maintainers' choice), else the first of any."""
    results = entry.get("results") or []
    against_scratch = [r for r in results if r.get("against", "scratch") == "scratch"]
    return (against_scratch or results or [None])[0]


def zoo_rows() -> list[dict]:
    rows = []
    for e in zoo_entries():
        row = {k: e.get(k) for k in ZOO_FIELDS}
        row.update({"init": ZOO_PREFIX + e["name"], "tasks": e.get("tasks") or [], "results": e.get("results") or [],
                    "gain": gain_text(e), "headline": headline(e)})
        rows.append(row)
    return rows


def catalog() -> dict:
    """``{"zoo": [...], "backbones": [...], "tasks": [...], "recipes": [...]}`` (plain data, offline)."""
    from .architectures import ARCHITECTURE_NAMES  # the names only: `ctinit list` imports no torch
    from .tasks.builtin import SUITES

    tasks = []
    for suite, (train, test) in SUITES.items():
        tasks += [{"spec": f"builtin:{n}", "suite": suite, "role": "meta-train"} for n in train]
        tasks += [{"spec": f"builtin:{n}", "suite": suite, "role": "meta-test"} for n in test]
    folder = recipes_dir()
    recipes = sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.yaml")) if folder else []
    backbones = [{"name": name, "library": "transformers" if name.startswith("hf-") else "ctinit"}
                 for name in ARCHITECTURE_NAMES]
    return {"zoo": zoo_rows(), "backbones": backbones, "tasks": tasks, "recipes": [{"name": r} for r in recipes]}


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header] + rows)


def _size(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


def _params(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def _input(r: dict) -> str:
    return f"{r['channels']}x{r['image_size']}x{r['image_size']}"


def _headline_text(r: dict | None) -> str:
    """``0.749 vs 0.414: +33.6 [+30.0, +37.1] on NAME``: absolute accuracies beside the gain."""
    if r is None:
        return "not measured"
    opponent = r.get("against", "scratch")
    theirs = r.get("against_accuracy", r.get("scratch_accuracy"))
    vs = "" if opponent == "scratch" else f" zoo:{opponent}"
    return (f"{r['init_accuracy']:.3f} vs {theirs:.3f}{vs}: {format_difference(r['difference'], unit='')} "
            f"on {r['name']}")


def _clip(line: str, width: int = WIDTH) -> str:
    return line if len(line) <= width else line[:width - 3].rstrip() + "..."


def _wrap(text: str, indent: str = "  ") -> list[str]:
    import textwrap

    return textwrap.wrap(text, WIDTH, subsequent_indent=indent, break_on_hyphens=False)


def zoo_table(rows: list[dict], wide: bool = False) -> str:
    """One line per entry that fits ``WIDTH`` columns (its headline: accuracy vs scratch, gain [95% interval], on
    which evaluation, at 200 fine-tuning steps unless it says); ``wide``: every column and every result."""
    if not rows:
        return "(none in this version)"
    if wide:
        return _table(["init", "algorithm", "backbone", "input", "params", "GFLOPs", "size", "license",
                       "meta-trained on", "counterpart", "results (paired, 95% interval)"],
                      [[r["init"], str(r.get("algorithm")), str(r["backbone"]), _input(r), _params(r.get("params")),
                        str(r.get("gflops", "-")), _size(r["size"]), str(r.get("license")), _tasks_text(r["tasks"]),
                        r.get("counterpart") or r.get("counterpart_of") or "-",
                        "; ".join(_headline_text(x) + f" ({x.get('budget', '')})" for x in r["results"])
                        or "not measured"] for r in rows])
    table = _table(["init", "rule", "input", "params", "headline: accuracy vs scratch: gain [95% CI] on ..."],
                   [[r["init"], str(r.get("algorithm") or "-"), _input(r), _params(r.get("params")),
                     _headline_text(r["headline"])] for r in rows])
    return "\n".join(_clip(line) for line in table.splitlines())


def entry_text(row: dict) -> str:
    """Everything about one entry (``ctinit list NAME``)."""
    fields = [("algorithm", row.get("algorithm")), ("multi-task counterpart", row.get("counterpart")),
              ("counterpart of", row.get("counterpart_of")), ("backbone", row["backbone"]), ("input", _input(row)),
              ("parameters", f"{row['params']:,}" if row.get("params") is not None else None),
              ("GFLOPs per image", row.get("gflops")), ("FLOPs counted by", row.get("flops_counted")),
              ("file size", f"{row['size']:,} bytes" if row.get("size") else None), ("licence", row.get("license")),
              ("training data", row.get("training_data")), ("tasks", ", ".join(row["tasks"])),
              ("recipe", row.get("recipe")), ("command", row.get("command")),
              ("training time", f"{row['seconds'] / 60:.0f} minutes" if row.get("seconds") else None),
              ("machine", row.get("machine")),
              ("meta rate", f"{row.get('meta_lr')}: {row['meta_lr_chosen']}" if row.get("meta_lr_chosen") else None),
              ("Hub id", f"{row.get('hub_id')} (revision {row.get('revision') or 'not pushed yet'})")]
    lines = [f"{row['init']}"] + [w for k, v in fields if v not in (None, "") for w in _wrap(f"  {k}: {v}", "    ")]
    lines.append("  results (this entry minus its opponent, paired per (task, seed), 95% t-interval):"
                 if row["results"] else "  results: not measured yet")
    for r in row["results"]:
        lines += _wrap(f"  - {r['name']} ({r.get('budget') or str(r.get('steps')) + ' steps'}, {r.get('seeds')} seeds, "
                     f"{r.get('max_train_per_class') or 'all'} per class): {_headline_text(r).rsplit(' on ', 1)[0]}"
                     f" pts, {r['verdict']}", "    ")
    return "\n".join(lines)


def catalog_text(data: dict, wide: bool = False) -> str:
    suites: dict[tuple, list[str]] = {}
    for t in data["tasks"]:
        suites.setdefault((t["suite"], t["role"]), []).append(t["spec"].split(":", 1)[1])
    lines = [
        "Initializations (ctinit finetune --init zoo:NAME; scratch:zoo:NAME for the same architecture, fresh;",
        "ctinit list NAME or --wide for everything; gains in accuracy points after 200 fine-tuning steps):",
        zoo_table(data["zoo"], wide), "",
        *_wrap("Backbones (scratch:NAME, backbone: NAME in a recipe): "
               + ", ".join(b["name"] for b in data["backbones"])),
        "",
        "Bundled tasks (builtin:NAME):",
        *(line for (suite, role), names in suites.items()
          for line in _wrap(f"  {suite} {role}: {', '.join(names)}", "    ")),
        "",
        *_wrap("Recipes (ctinit-train --config NAME): " + (", ".join(r["name"] for r in data["recipes"]) or "-")),
        "",
        "Initializations published on the Hub: ctinit list --hub [--author ORG]",
    ]
    return "\n".join(lines)


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


__all__ = ["WIDTH", "ZOO_FIELDS", "catalog", "catalog_text", "entry_text", "gain_text", "headline", "inits_table",
           "list_inits", "print_inits", "recipes_dir", "zoo_rows", "zoo_table"]
