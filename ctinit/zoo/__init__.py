"""The zoo: named initializations shipped inside the package, usable offline as ``zoo:NAME`` wherever an
initialization is taken (``ctinit finetune --init zoo:NAME``, ``ctinit.from_pretrained("zoo:NAME")``,
``scratch:zoo:NAME``, ``init_from: zoo:NAME`` in a meta-training recipe).

Like timm's pretrained configs, the registry is data: ``registry.json`` beside this file, a list of entries, and one
folder per entry under ``weights/NAME/`` (``config.json``, ``model.safetensors``, ``README.md``: the card). This
module sits at the bottom of the package: it imports no model, no torch, only the standard library, so that
``ctinit list`` can show the zoo without building anything. An entry holds::

    name, backbone, image_size, channels,   # what it is
    algorithm, counterpart | counterpart_of,  # cts or mtl; a CTS entry's multi-task counterpart, and back
    tasks, training_data, license,          # the meta-training task specs, in words, and the weights' licence
    recipe, command, seconds, machine,      # how it was made (training/recipes/zoo/NAME.yaml and the exact command)
    params, flops, gflops, flops_counted,   # measured from the shipped files (hub/zoo_metadata.py; tests check them)
    sha256, size,                           # of weights/NAME/model.safetensors
    files,                                  # {path: sha256} of every file of weights/NAME/ (checked on every load;
                                            # written by write_entries from the folder, see shipped_files)
    hub_id, revision,                       # where it is published (revision: null until pushed)
    results                                 # measured evaluations (empty: "not measured yet"), each
        {"name", "against", "budget", "tasks", "seeds", "steps", "max_train_per_class", "init_accuracy",
         "against_accuracy", "difference": {"mean", "ci95", "n"}, "ci95", "verdict"}
        # paired per (task, seed) against "scratch" (same architecture, fresh weights) or another entry's name
        # (the counterpart), 95% t-interval; budget "short: 200 steps" is fine-tuning for a fixed 200 steps

Entries are added by the maintainers' script ``scripts/zoo.py`` (``add``, ``results``), never by hand.
"""
from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path

from ..errors import CheckpointError, ConfigError

PREFIX = "zoo:"
#: The folder holding ``registry.json`` and ``weights/`` (tests point it elsewhere).
ROOT = Path(__file__).resolve().parent
REGISTRY_NAME = "registry.json"
WEIGHTS_DIR = "weights"
WEIGHTS_NAME = "model.safetensors"  # as ctinit.loading names it (not imported: this module imports no torch)
ENTRY_KEYS = ("name", "backbone", "image_size", "channels", "tasks", "recipe", "command", "seconds", "machine",
              "sha256", "size", "files", "hub_id", "revision", "results", "algorithm", "params", "flops", "gflops",
              "license", "training_data")


def registry_file() -> Path:
    return ROOT / REGISTRY_NAME


def folder(name: str) -> Path:
    """The weights folder of entry ``name`` (``NAME`` or ``zoo:NAME``), not checked."""
    return ROOT / WEIGHTS_DIR / strip(name)


def strip(name: str) -> str:
    return name[len(PREFIX):] if name.startswith(PREFIX) else name


def is_zoo(spec: object) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIX)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _result_ok(r) -> bool:
    d = r.get("difference") if isinstance(r, dict) else None
    return isinstance(r, dict) and isinstance(r.get("name"), str) and isinstance(d, dict) and _number(d.get("mean")) \
        and isinstance(d.get("ci95"), list) and len(d["ci95"]) == 2 and all(_number(v) for v in d["ci95"]) \
        and isinstance(d.get("n"), int)


#: What each key of an entry must be (a key that is absent is not checked; ``name`` is required).
_ENTRY_TYPES = {
    "name": lambda v: isinstance(v, str) and bool(v), "backbone": lambda v: isinstance(v, str),
    "image_size": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "channels": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "tasks": lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v),
    "sha256": lambda v: isinstance(v, str), "size": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
    "hub_id": lambda v: v is None or isinstance(v, str), "revision": lambda v: v is None or isinstance(v, str),
    "seconds": lambda v: v is None or _number(v),
    "files": lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(h, str) for k, h in v.items()),
    "results": lambda v: isinstance(v, list) and all(_result_ok(r) for r in v),
}


def entries() -> list[dict]:
    """Every entry of the registry, in its order (a damaged registry file, or an entry with a value of the wrong
    type, is one line naming it)."""
    path = registry_file()
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: the zoo's registry is not valid JSON ({e}); reinstall ctinit") from None
    if not isinstance(data, list) or not all(isinstance(e, dict) and isinstance(e.get("name"), str) for e in data):
        raise CheckpointError(f"{path}: the zoo's registry must be a list of entries with a 'name'; reinstall ctinit")
    for i, entry in enumerate(data):
        bad = [key for key, ok in _ENTRY_TYPES.items() if key in entry and not ok(entry[key])]
        if bad:
            raise CheckpointError(f"{path}: entry {i + 1} ({entry['name'][:60]!r}) has {', '.join(bad)} of the wrong "
                                  "type; reinstall ctinit")
    return data


def names() -> list[str]:
    return [e["name"] for e in entries()]


def get(name: str) -> dict:
    """The entry called ``name`` (``NAME`` or ``zoo:NAME``); an unknown name is one line with the closest names."""
    bare = strip(name)
    known = entries()
    for entry in known:
        if entry["name"] == bare:
            return entry
    close = difflib.get_close_matches(bare, [e["name"] for e in known], n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(PREFIX + c for c in close)}?" if close else (
        f"known: {', '.join(PREFIX + e['name'] for e in known)}" if known else "the zoo is empty in this version")
    raise ConfigError(f"'{PREFIX}{bare}': no such initialization in the zoo; {hint} (`ctinit list` shows them)")


def meant(text: str, close: bool = True) -> str | None:
    """The entry an initialization spec that is not one most likely names: ``NAME`` or ``zoo/NAME`` exactly (the
    prefix is ``zoo:``), else (``close``) the nearest name to a bare ``text``; None when nothing is near."""
    known = names()
    bare = text[len("zoo/"):] if text.startswith("zoo/") else text
    if bare in known:
        return bare
    if not close or "/" in text:
        return None
    found = difflib.get_close_matches(bare, known, n=1, cutoff=0.75)
    return found[0] if found else None


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def shipped_files(name: str) -> dict[str, str]:
    """``{path in the folder: sha256}`` of every file of entry ``name``'s folder, in path order: what the registry
    records (:func:`write_entries`) and what every load checks (:func:`verify`)."""
    where = folder(name)
    return {p.relative_to(where).as_posix(): file_sha256(p) for p in sorted(where.rglob("*")) if p.is_file()}


def verify(entry: dict) -> Path:
    """The entry's folder once every file the registry lists has its sha256, and ``model.safetensors`` the
    registry's size and sha256 (else one line)."""
    where = folder(entry["name"])
    weights = where / WEIGHTS_NAME
    fix = "reinstall ctinit (pip install --force-reinstall ctinit) to restore the shipped file"
    if not weights.is_file():
        raise CheckpointError(f"{PREFIX}{entry['name']}: {weights} is missing; {fix}")
    size = weights.stat().st_size
    if entry.get("size") is not None and size != entry["size"]:
        raise CheckpointError(f"{PREFIX}{entry['name']}: {WEIGHTS_NAME} is damaged ({size} bytes, the registry says "
                              f"{entry['size']}); {fix}")
    digest = file_sha256(weights)
    if digest != entry.get("sha256"):
        raise CheckpointError(f"{PREFIX}{entry['name']}: {WEIGHTS_NAME} is damaged (sha256 {digest[:12]}..., the "
                              f"registry says {str(entry.get('sha256'))[:12]}...); {fix}")
    for rel, expected in (entry.get("files") or {}).items():
        shipped = where / rel
        if not shipped.is_file():
            raise CheckpointError(f"{PREFIX}{entry['name']}: {shipped} is missing; {fix}")
        if rel != WEIGHTS_NAME and file_sha256(shipped) != expected:  # the weights: checked above
            raise CheckpointError(f"{PREFIX}{entry['name']}: {rel} is damaged or edited (its sha256 is not the "
                                  f"registry's); {fix}")
    return where


def path(name: str) -> Path:
    """The verified weights folder of ``name``: ``transformers.AutoModel.from_pretrained(ctinit.zoo.path(NAME))``
    loads it (after ``import ctinit``), as do ``ctinit.from_pretrained`` and every ``--init``."""
    return verify(get(name))


def write_entries(items: list[dict]) -> Path:
    """Replace the registry with ``items`` (the maintainers' script and ``ctinit-hub push-zoo --record``); each
    entry's ``files`` is recomputed from its folder as it is now (:func:`shipped_files`), so a file added to a zoo
    folder is covered once the registry is written again."""
    for item in items:
        if folder(item["name"]).is_dir():
            item["files"] = shipped_files(item["name"])
    path = registry_file()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(items, indent=1) + "\n")
    tmp.replace(path)
    return path


__all__ = ["ENTRY_KEYS", "PREFIX", "ROOT", "entries", "file_sha256", "folder", "get", "is_zoo", "names", "path",
           "registry_file", "shipped_files", "strip", "verify", "write_entries"]
