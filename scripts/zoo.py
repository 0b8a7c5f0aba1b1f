"""Maintain the zoo (ctinit/zoo/registry.json and ctinit/zoo/weights/NAME/): add a trained initialization, record
its measured results. Every change re-renders the entry's card from the registry.

    python scripts/zoo.py add runs/zoo/glyph-convnet4-32 glyph-convnet4-32 \\
        --recipe training/recipes/zoo/glyph-convnet4-32.yaml \\
        --command "OMP_NUM_THREADS=1 ctinit-train --config zoo/glyph-convnet4-32 --out runs/zoo/glyph-convnet4-32" \\
        --seconds 5400 --machine "2-core CPU (x86_64), torch 2.13.0+cpu"
    python scripts/zoo.py results glyph-convnet4-32 eval/new-scripts/results.json --name "new scripts, 20 per class"
    python scripts/zoo.py results glyph-convnet4-32 pick.json --name "a new task (ctinit pick, validation)"
    python scripts/zoo.py add runs/zoo/glyph-convnet4-32-mtl glyph-convnet4-32-mtl --counterpart-of glyph-convnet4-32 \
        --meta-lr-chosen "the ratio study's choice for MTL on glyph validation tasks (8 of 10 meta-seeds)" ...
    python scripts/zoo.py results glyph-convnet4-32 eval/results.json --against glyph-convnet4-32-mtl --name ...
    python scripts/zoo.py refresh                         # re-measure every entry's metadata, re-render every card
    python scripts/zoo.py card glyph-convnet4-32          # re-render the card (and preprocessor_config.json) only

``add`` copies RUN_DIR/init (config.json without local paths, model.safetensors with ctinit's metadata) into the
weights folder, computes its sha256 and size and writes the entry (replacing an entry of that name, whose results
then no longer apply, only with --replace). ``results`` takes a ``ctinit evaluate`` results.json (or its folder) or
the JSON of ``ctinit pick --json``, pairs the entry's accuracy with scratch of the same architecture per (task,
seed) (or with ``--against`` another zoo entry: a CTS entry's multi-task counterpart), and records the mean
difference with its 95% t-interval and verdict under --name (replacing a result of that name, opponent and budget).
``add`` and ``refresh`` measure each entry's parameters, FLOPs and file size from its shipped files and state its
licence and training data (hub/zoo_metadata.py); a counterpart is linked both ways (``counterpart`` on the CTS entry,
``counterpart_of`` on the multi-task one).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

#: The issue's limit on everything the wheel carries for the zoo.
MAX_TOTAL_BYTES = 10 * 1024 * 1024
#: A fine-tuning run that ran its maximum still counts as converged if its validation accuracy gained at most this
#: much over the last quarter of its steps (per run, where the long study tests the mean change over runs within
#: +-1 point; one-sided here: a fall is past the peak, and the best step is kept).
FLAT_GAIN = 0.01


def _hub():
    try:
        import ctinit_hub as hub  # installed
    except ImportError:  # a bare checkout
        import hub
    return hub


def add(args) -> int:
    from ctinit import zoo
    from ctinit.errors import ConfigError
    from ctinit.hubio.names import CONFIG_NAME, WEIGHTS_NAME
    from ctinit.loading import load_init, read_config

    hub = _hub()
    from importlib import import_module

    export = import_module(hub.__name__ + ".export")
    if "/" in args.name or args.name.startswith(zoo.PREFIX) or not args.name.strip():
        raise ConfigError(f"NAME '{args.name}': a plain name such as glyph-convnet4-32 (no zoo: prefix, no slash)")
    items = zoo.entries()
    if any(e["name"] == args.name for e in items) and not args.replace:
        raise ConfigError(f"zoo:{args.name} exists; pass --replace to replace it (its recorded results are dropped)")
    if not (REPO / args.recipe).is_file():
        raise ConfigError(f"--recipe {args.recipe}: no such file in the repository (training/recipes/zoo/NAME.yaml)")
    init, _ = export.find_init(Path(args.run_dir))
    export.check_finite_weights(init)
    backbone = load_init(init)
    config = read_config(init)
    info = dict(getattr(config, "ctinit", None) or {})
    if not info:
        raise ConfigError(f"{init}: no 'ctinit' entry in its config; add initializations written by ctinit-train")
    target = zoo.folder(args.name)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    raw = export._public(json.loads((init / CONFIG_NAME).read_text()))  # no local paths in what ships
    (tmp / CONFIG_NAME).write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
    export._write_weights(init / WEIGHTS_NAME, tmp / WEIGHTS_NAME, str(info.get("algorithm", "unknown")))
    others = sum(e.get("size") or 0 for e in items if e["name"] != args.name)
    size = (tmp / WEIGHTS_NAME).stat().st_size
    if others + size > MAX_TOTAL_BYTES:
        shutil.rmtree(tmp)
        raise ConfigError(f"the zoo's weights would total {(others + size) / 2**20:.1f} MiB, over the "
                          f"{MAX_TOTAL_BYTES / 2**20:.0f} MiB the wheel may carry")
    shutil.rmtree(target, ignore_errors=True)
    tmp.replace(target)
    recipe = info.get("config") or {}
    entry = {
        "name": args.name, "backbone": recipe.get("backbone", config.model_type),
        "image_size": int(getattr(backbone.config, "image_size", 0) or recipe.get("image_size") or 0),
        "channels": int(getattr(backbone.config, "num_channels", 3) or 3),
        "tasks": [t.get("spec") for t in info.get("tasks") or []],
        "recipe": args.recipe, "command": args.command, "seconds": args.seconds, "machine": args.machine,
        "sha256": zoo.file_sha256(target / WEIGHTS_NAME), "size": size,
        "hub_id": args.hub_id or f"ctinit/{args.name}", "revision": None, "results": [],
    }
    if args.counterpart_of:
        entry["counterpart_of"] = zoo.get(args.counterpart_of)["name"]
    if args.meta_lr_chosen:
        entry["meta_lr"] = (recipe.get("meta_optimizer") or {}).get("lr")
        entry["meta_lr_chosen"] = args.meta_lr_chosen
    items = [e for e in items if e["name"] != args.name] + [entry]
    zoo.write_entries(items)
    entry = refresh_entries([args.name])[0]  # its metadata measured, its card written, then the registry again
    print(json.dumps(entry))
    return 0


def refresh_entries(only: list[str] | None = None) -> list[dict]:
    """Re-measure the metadata of the entries ``only`` (default all), keep counterpart links both ways, re-render their
    cards and rewrite the registry; returns the refreshed entries."""
    from ctinit import zoo

    metadata = _zoo_metadata()
    items = zoo.entries()
    pairs = {e["counterpart_of"]: e["name"] for e in items if e.get("counterpart_of")}
    chosen = set(only or [e["name"] for e in items]) | {n for n in pairs if pairs[n] in (only or pairs.values())}
    out = []
    for entry in items:
        if entry["name"] in chosen:
            entry = metadata.with_metadata(entry)
            if entry["name"] in pairs:
                entry["counterpart"] = pairs[entry["name"]]
        out.append(entry)
    for entry in out:
        if entry["name"] in chosen:
            write_card(entry)  # before the registry: its sha256 of every file covers the card
    zoo.write_entries(out)
    return [e for e in out if e["name"] in chosen]


def _zoo_metadata():
    from importlib import import_module

    return import_module(_hub().__name__ + ".zoo_metadata")


def refresh(args) -> int:
    for entry in refresh_entries(args.names or None):
        print(json.dumps({k: entry.get(k) for k in ("name", "algorithm", "params", "gflops", "size", "license")}))
    return 0


def write_card(entry: dict) -> Path:
    """Render the entry's card and write its ``preprocessor_config.json`` (so that transformers'
    ``AutoImageProcessor.from_pretrained(ctinit.zoo.path(NAME))`` works, as the card says)."""
    from importlib import import_module

    from ctinit import zoo
    from ctinit.loading import read_config
    from ctinit.models.finetuned_folder import image_processor

    render = import_module(_hub().__name__ + ".zoo").render_zoo_card
    folder = zoo.folder(entry["name"])
    image_processor(read_config(folder)).save_pretrained(str(folder))
    readme = folder / "README.md"
    readme.write_text(render(entry))
    return readme


def paired_values(data: dict, entry: dict, scratch: str | None) -> tuple[dict, dict, dict]:
    """``(entry's values, scratch's values, facts)`` keyed by (task, seed), from an evaluate results.json or a pick
    JSON."""
    from ctinit import zoo
    from ctinit.errors import ConfigError

    label = zoo.PREFIX + entry["name"]
    if "ranking" in data:  # ctinit pick --json: one task, validation accuracy per seed
        rows = {r["init"]: r for r in data["ranking"]}
        if label not in rows:
            raise ConfigError(f"{label} is not in this pick's ranking")
        base = scratch or rows[label]["baseline"]
        pairs = lambda row: {(data["spec"], int(s)): v for s, v in row["values"].items()}
        facts = {"tasks": [data["spec"]], "seeds": len(data["seeds"]), "steps": data["steps"], "split": "validation",
                 "max_train_per_class": data.get("max_train_per_class"), "source": "ctinit pick"}
        return pairs(rows[label]), pairs(rows[base]), facts
    if not {"inits", "tasks", "runs"} <= set(data):
        raise ConfigError("not a `ctinit evaluate` results.json nor `ctinit pick --json` output")
    labels = {e["label"]: e for e in data["inits"]}
    mine = next((e["label"] for e in data["inits"] if e["label"] == label or (not e["scratch"] and e.get(
        "weights_sha256") == entry["sha256"])), None)
    if mine is None:
        raise ConfigError(f"none of the evaluated inits is {label} (by name or weights)")
    if scratch is None:
        own = "scratch:" + label
        candidates = [own] if own in labels else [e["label"] for e in data["inits"] if e["scratch"]]
        if len(candidates) != 1:
            raise ConfigError(f"say which evaluated init is scratch of {label}'s architecture: --scratch LABEL")
        scratch = candidates[0]
    if scratch not in labels:
        raise ConfigError(f"--scratch {scratch}: not among the evaluated inits")
    pairs = lambda who: {(r["task"], r["seed"]): r["test_accuracy"] for r in data["runs"] if r["init"] == who}
    facts = {"tasks": [t["spec"] for t in data["tasks"]], "seeds": len(data["seeds"]),
             "steps": data["finetune"]["steps"], "split": data.get("score", "test"),
             "max_train_per_class": data.get("max_train_per_class"), "source": "ctinit evaluate"}
    if data["finetune"].get("early_stop"):
        facts.update(converged_facts(data, {"init": mine, "against": scratch}))
    return pairs(mine), pairs(scratch), facts


def converged_facts(data: dict, labels: dict[str, str]) -> dict:
    """For an evaluation fine-tuned to convergence (early stopping on the validation split): its budget, and for the
    entry and its opponent the steps run, how many runs stopped because validation accuracy stopped improving, and
    how many are shown converged: stopped early, or ran their maximum with a validation curve that gained at most
    FLAT_GAIN over its last quarter (:func:`last_quarter_gain`)."""
    ft = data["finetune"]
    budget = (f"converged: early stopping on validation (patience {ft['early_stop']} evaluations, at most "
              f"{ft['epochs']:g} epochs), best step kept")
    out = {"budget": budget, "steps": None, "steps_run": {}, "stopped_early": {}, "shown_converged": {}}
    for role, label in labels.items():
        runs = [r for r in data["runs"] if r["init"] == label]
        early = [r.get("stop_reason") == "early_stop" for r in runs]
        gains = [last_quarter_gain(r.get("curve") or []) for r in runs]
        flat = [e or (g is not None and g <= FLAT_GAIN) for e, g in zip(early, gains)]
        out["steps_run"][role] = [min(r["steps"] for r in runs), max(r["steps"] for r in runs)]
        out["stopped_early"][role] = f"{sum(early)} of {len(runs)}"
        out["shown_converged"][role] = f"{sum(flat)} of {len(runs)}"
    return out


def last_quarter_gain(curve: list) -> float | None:
    """Validation accuracy at a run's last evaluation minus at 3/4 of its steps (the last evaluation at or before
    that step; ``curve``: [[step, accuracy], ...]); None without an evaluation that early."""
    if len(curve) < 2:
        return None
    at = [point for point in curve[:-1] if point[0] <= 0.75 * curve[-1][0]]
    return curve[-1][1] - at[-1][1] if at else None


def results(args) -> int:
    from ctinit import zoo
    from ctinit.errors import ConfigError
    from ctinit.stats import paired_difference

    hub = _hub()
    from importlib import import_module

    public_spec = import_module(hub.__name__ + ".card").public_spec
    entry = zoo.get(args.name)
    path = Path(args.results_json)
    path = path / "results.json" if path.is_dir() else path
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read it as JSON ({e})") from None
    metadata = _zoo_metadata()
    against = zoo.get(args.against)["name"] if args.against else metadata.SCRATCH
    opponent = (zoo.PREFIX + against) if args.against else args.scratch
    if args.against and args.scratch:
        raise ConfigError("--against and --scratch: pass one (the opponent is another zoo entry or scratch)")
    mine, theirs, facts = paired_values(data, entry, opponent)
    diff = paired_difference(mine, theirs)
    if not diff["n"]:
        raise ConfigError(f"{path}: no (task, seed) ran both zoo:{entry['name']} and {opponent or 'its scratch'}")
    keys = [k for k in mine if k in theirs]
    record = metadata.normalise_result({
        "name": args.eval_name or ", ".join(public_spec(t) for t in facts["tasks"]),
        **{**facts, "tasks": [public_spec(t) for t in facts["tasks"]]}, "against": against,
        "init_accuracy": sum(mine[k] for k in keys) / len(keys),
        "against_accuracy": sum(theirs[k] for k in keys) / len(keys),
        "difference": {k: diff[k] for k in ("mean", "ci95", "n")}, "verdict": diff["verdict"]})
    same = lambda r: (r["name"], r.get("against", metadata.SCRATCH), r.get("budget")) == (
        record["name"], record["against"], record["budget"])
    earlier = entry.get("results") or []
    at = next((i for i, r in enumerate(earlier) if same(r)), len(earlier))  # a replaced result keeps its place
    entry["results"] = [r for r in earlier[:at] if not same(r)] + [record] + [r for r in earlier[at:] if not same(r)]
    write_card(entry)  # before the registry: its sha256 of every file covers the card
    zoo.write_entries([entry if e["name"] == entry["name"] else e for e in zoo.entries()])
    print(json.dumps(record))
    return 0


def card(args) -> int:
    from ctinit import zoo

    print(write_card(zoo.get(args.name)))
    return 0


def main(argv: list[str] | None = None) -> int:
    from ctinit.entrypoint import ArgumentParser, run_command

    parser = ArgumentParser(prog="scripts/zoo.py", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("add", help="add a meta-training run's initialization to the zoo")
    a.add_argument("run_dir")
    a.add_argument("name")
    a.add_argument("--recipe", required=True, help="the recipe file, relative to the repository (training/recipes/zoo/NAME.yaml)")
    a.add_argument("--command", required=True, help="the exact command that trained it")
    a.add_argument("--seconds", type=float, required=True, help="its training time in seconds")
    a.add_argument("--machine", required=True, help="the machine it trained on (CPU/GPU, cores, torch version)")
    a.add_argument("--hub-id", default=None, help="the Hub id it will be published under (default ctinit/NAME)")
    a.add_argument("--replace", action="store_true", help="replace an entry of that name (drops its results)")
    a.add_argument("--counterpart-of", default=None, metavar="NAME",
                   help="this entry is the multi-task counterpart of zoo entry NAME (linked both ways)")
    a.add_argument("--meta-lr-chosen", default=None, metavar="TEXT",
                   help="how its rate (meta_optimizer.lr) was chosen, with the evidence, for the registry and card")
    a.set_defaults(func=add)
    r = sub.add_parser("results", help="record measured results (ctinit evaluate results.json or ctinit pick --json)")
    r.add_argument("name")
    r.add_argument("results_json")
    r.add_argument("--name", dest="eval_name", default=None, help="what the evaluation measured (default: its tasks)")
    r.add_argument("--scratch", default=None, help="the evaluated label of scratch of the same architecture "
                                                     "(default: scratch:zoo:NAME, or the only scratch init)")
    r.add_argument("--against", default=None, metavar="NAME",
                   help="pair against this zoo entry (a CTS entry's multi-task counterpart) instead of scratch")
    r.set_defaults(func=results)
    f = sub.add_parser("refresh", help="re-measure entries' metadata (parameters, FLOPs, size, licence) from the "
                                       "shipped files, bring results to the current schema, re-render cards")
    f.add_argument("names", nargs="*", help="entries to refresh (default: all)")
    f.set_defaults(func=refresh)
    c = sub.add_parser("card", help="re-render an entry's card (and its preprocessor_config.json) from the registry")
    c.add_argument("name")
    c.set_defaults(func=card)
    for p in (a, r, c, f):
        p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    return run_command("zoo", lambda: args.func(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
