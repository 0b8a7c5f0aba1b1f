"""The zoo's weights metadata, as torchvision states it for every weight: parameters, compute per image, file size,
licence, recipe, training data, training time and machine; and the registry's results in one schema.

Every number here is measured from the shipped files (``ctinit/zoo/weights/NAME/``), never typed in:
``scripts/zoo.py add`` and ``scripts/zoo.py refresh`` write them into the registry, and ``tests/test_zoo_metadata.py``
measures them again and fails where the registry disagrees.

What is counted: ``params`` is the number of elements of the backbone's parameters (``nn.Module.parameters()``: the
shipped phi, no classification head, no buffers such as BatchNorm running statistics). ``flops`` is what
``torch.utils.flop_counter.FlopCounterMode`` counts on one forward pass of the backbone in eval mode, batch 1, at the
entry's input size (``channels x image_size x image_size``): convolutions and matrix products, one multiply-add as 2
FLOPs; element-wise operations (BatchNorm, ReLU, pooling, additions) are not counted, as torchvision's GFLOPS do not.
``gflops`` is ``flops / 1e9`` to 4 significant digits. ``size`` is the bytes of ``model.safetensors``.
"""
from __future__ import annotations

from ctinit import zoo
from ctinit.hubio.cards import card_license

FLOPS_COUNTED = ("torch.utils.flop_counter.FlopCounterMode, one forward pass of the backbone (no head), eval mode, "
                 "batch 1 at the entry's input size; convolutions and matrix products (multiply-add = 2 FLOPs); "
                 "element-wise operations not counted")
#: How a result's ``against`` names scratch: the same architecture with fresh weights (``scratch:zoo:NAME``).
SCRATCH = "scratch"


def gflops(flops: int) -> float:
    return float(f"{flops / 1e9:.4g}")


def measure(name: str) -> dict:
    """``{"params", "flops", "gflops", "size"}`` of entry ``name``, measured from its shipped folder."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ctinit.loading import WEIGHTS_NAME, load_init

    entry = zoo.get(name)
    where = zoo.folder(name)
    backbone = load_init(where).eval()
    x = torch.zeros(1, int(entry["channels"]), int(entry["image_size"]), int(entry["image_size"]))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        backbone(x)
    flops = int(counter.get_total_flops())
    return {"params": sum(p.numel() for p in backbone.parameters()), "flops": flops, "gflops": gflops(flops),
            "size": (where / WEIGHTS_NAME).stat().st_size}


def mismatches(entry: dict) -> list[str]:
    """Where the registry's metadata of ``entry`` differs from what its shipped files measure (empty: all true)."""
    measured = {**measure(entry["name"]), "algorithm": algorithm(entry["name"])}
    return [f"{entry['name']}: {key} is {entry.get(key)!r} in the registry, {value!r} measured from the files"
            for key, value in measured.items() if entry.get(key) != value]


def training_data(entry: dict) -> str:
    """The data it was trained on, in words (the tasks' specs are in ``tasks``)."""
    tasks = [str(t) for t in entry.get("tasks") or []]
    glyph = [t for t in tasks if t.startswith("builtin:") and not t.startswith("builtin:colour-")]
    colour = [t for t in tasks if t.startswith("builtin:colour-")]
    parts = []
    if glyph:
        parts.append(f"{len(glyph)} tasks of ctinit's bundled glyph suite (Fashion-MNIST and Noto font renders; "
                     "ctinit/data/builtin/LICENSES.md)")
    if colour:
        parts.append(f"{len(colour)} tasks of ctinit's bundled colour suite (ctinit/data/colour/LICENSES.md)")
    others = len(tasks) - len(glyph) - len(colour)
    if others:
        parts.append(f"{others} other tasks")
    return "; ".join(parts) or "unrecorded"


def normalise_result(record: dict, default_against: str = SCRATCH) -> dict:
    """A measured result in the registry's schema: ``against`` (``scratch`` or the counterpart's name),
    ``against_accuracy``, ``budget`` (``short: N steps``) and ``ci95`` beside the paired ``difference``; the numbers
    are kept as measured (a result recorded before this schema said ``scratch_accuracy``)."""
    out = dict(record)
    out.setdefault("against", default_against)
    if "against_accuracy" not in out and "scratch_accuracy" in out:
        out["against_accuracy"] = out.pop("scratch_accuracy")
    out.setdefault("budget", f"short: {out.get('steps')} steps")
    out["ci95"] = list(out["difference"]["ci95"])
    return out


def algorithm(name: str) -> str:
    """The rule that trained entry ``name``, as its shipped config.json records it."""
    from ctinit.loading import read_config

    return str((getattr(read_config(zoo.folder(name)), "ctinit", None) or {}).get("algorithm", "unknown"))


def with_metadata(entry: dict) -> dict:
    """``entry`` with its measured metadata, licence, training data and results in the current schema (its sha256
    is the registry's own business: ``scripts/zoo.py``)."""
    out = dict(entry)
    out["algorithm"] = algorithm(entry["name"])
    out.update(measure(entry["name"]))
    out["flops_counted"] = FLOPS_COUNTED
    out["license"] = card_license(None, [str(t) for t in entry.get("tasks") or []])[0]
    out["training_data"] = training_data(entry)
    out["results"] = [normalise_result(r) for r in entry.get("results") or []]
    return out


__all__ = ["FLOPS_COUNTED", "SCRATCH", "algorithm", "gflops", "measure", "mismatches", "normalise_result",
           "training_data", "with_metadata"]
