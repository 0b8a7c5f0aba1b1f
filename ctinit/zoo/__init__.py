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
    sha256, size,                           # of weights/NAME/model.safetensors (checked on every load)
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
              "sha256", "size", "hub_id", "revision", "results", "algorithm", "params", "flops", "gflops",
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


def entries() -> list[dict]:
    """Every entry of the registry, in its order (a damaged registry file is one line)."""
    path = registry_file()
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: the zoo's registry is not valid JSON ({e}); reinstall ctinit") from None
    if not isinstance(data, list) or not all(isinstance(e, dict) and isinstance(e.get("name"), str) for e in data):
        raise CheckpointError(f"{path}: the zoo's registry must be a list of entries with a 'name'; reinstall ctinit")
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


def verify(entry: dict) -> Path:
    """The entry's folder once its ``model.safetensors`` has the registry's size and sha256 (else one line)."""
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
    return where


def path(name: str) -> Path:
    """The verified weights folder of ``name``: ``transformers.AutoModel.from_pretrained(ctinit.zoo.path(NAME))``
    loads it (after ``import ctinit``), as do ``ctinit.from_pretrained`` and every ``--init``."""
    return verify(get(name))


def write_entries(items: list[dict]) -> Path:
    """Replace the registry with ``items`` (the maintainers' script and ``ctinit-hub push-zoo --record``)."""
    path = registry_file()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(items, indent=1) + "\n")
    tmp.replace(path)
    return path


__all__ = ["ENTRY_KEYS", "PREFIX", "ROOT", "entries", "file_sha256", "folder", "get", "is_zoo", "names", "path",
           "registry_file", "strip", "verify", "write_entries"]
