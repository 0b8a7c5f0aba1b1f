"""A fine-tuned classifier read back: a folder written by :mod:`ctinit.models.finetuned_folder` (or a Hub id of
one) as a transformers model, every tensor checked, and its image processor's settings checked (``ctinit predict``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .errors import CheckpointError
from .hubio import hub_snapshot, parse_hub_id
from .hubio.names import CONFIG_NAME, PREPROCESSOR_NAME, WEIGHTS_NAME, is_pickle_name
from .loading import MAX_IMAGE_SIZE, check_config_sizes, check_tensors, read_config, read_weights
from .models.finetuned_folder import check_finite


def resolve_model(model: str | Path, revision: str | None = None) -> tuple[Path, str | None, str | None]:
    """A fine-tuned model folder or Hub id -> ``(local folder, repo id, commit)``."""
    path = Path(str(model)).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"--model {path}: a model is a folder with {CONFIG_NAME} and {WEIGHTS_NAME}, not a file")
        return path, None, None
    hub = parse_hub_id(str(model))
    if hub is None:
        raise CheckpointError(f"--model {model}: no such folder, and not a Hub id ORG/NAME[@REVISION]")
    folder, commit = hub_snapshot(hub[0], hub[1] or revision,
                                  allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, PREPROCESSOR_NAME])
    return folder, hub[0], commit


def load_classifier(model: str | Path, revision: str | None = None):
    """A fine-tuned classifier (a transformers model in eval mode, float32) from a folder or Hub id; safetensors only.

    Every tensor the model needs must be in ``model.safetensors`` with its shape, and nothing else: a file that
    lacks the head or a backbone tensor, holds others, or belongs to another architecture (another ``model_type``)
    is one line naming the tensors (:func:`ctinit.loading.check_tensors`, the check initializations go through),
    never a model with random weights. Weights stored in another floating-point dtype are read as float32."""
    from transformers import AutoModelForImageClassification

    folder, _, _ = resolve_model(model, revision)
    config = read_config(folder)
    if not (folder / WEIGHTS_NAME).is_file():
        pickles = sorted(p.name for p in folder.iterdir() if is_pickle_name(p.name))
        if pickles:
            raise CheckpointError(f"{folder}: only pickle weights ({', '.join(pickles)}); ctinit loads safetensors "
                                  f"only, because unpickling can run arbitrary code")
        raise CheckpointError(f"{folder}: no {WEIGHTS_NAME}; a model folder holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    architectures = getattr(config, "architectures", None) or []
    if not any(str(a).endswith("ForImageClassification") for a in architectures):
        raise CheckpointError(f"{folder}: no classes in {CONFIG_NAME} (id2label); is it an initialization? "
                              f"fine-tune it first (ctinit finetune --out DIR)")
    tensors = read_weights(folder)  # a truncated or corrupt file is one clear line, not a transformers traceback
    check_config_sizes(config)
    try:
        # transformers maps the file's tensor names to the model's and reports what does not fit; a mis-shaped
        # tensor is reported (ignore_mismatched_sizes) instead of raised as "see the above report"
        loaded, report = AutoModelForImageClassification.from_pretrained(
            str(folder), use_safetensors=True, output_loading_info=True, ignore_mismatched_sizes=True)
    except (ValueError, KeyError, OSError, RuntimeError, TypeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{folder}: cannot load as an image classifier ({first[:200]})") from e
    # transformers casts integer tensors to the model's float dtype without a word; only the model's own integer
    # buffers (batch norm's num_batches_tracked) may be integers in the file
    own_integer = {k for k, v in loaded.state_dict().items() if not v.is_floating_point()}
    integer = [(k, v.dtype) for k, v in sorted(tensors.items()) if not v.is_floating_point() and k not in own_integer]
    check_tensors(str(folder / WEIGHTS_NAME), sorted(report["missing_keys"]), sorted(report["unexpected_keys"]),
                  sorted(report["mismatched_keys"]), integer,
                  f"{type(loaded).__name__} with {config.num_labels} classes (the config's model_type "
                  f"'{config.model_type}' and id2label)")
    loaded = loaded.float()
    check_finite(loaded, "load", where=f"{folder / WEIGHTS_NAME}: ")
    return loaded.eval()


def read_processor_settings(folder: Path, config) -> dict:
    """Input size (the config's ``image_size``), rescale factor, mean and std from ``preprocessor_config.json`` (else
    ctinit's defaults), each checked: one line for a size that is not a positive integer up to the bound on
    ``image_size`` or not the model's, a rescale factor that is not a positive number, a mean or std that is not one
    number or one per channel, a zero std."""
    from .tasks.sampler import MEAN, STD

    size = getattr(config, "image_size", 28)
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    settings = {"size": (size, size), "rescale_factor": 1 / 255, "image_mean": [MEAN] * 3, "image_std": [STD] * 3}
    file = Path(folder) / PREPROCESSOR_NAME
    if not file.is_file():
        return settings
    try:
        raw = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file}: not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise CheckpointError(f"{file}: not an image processor config (a JSON object); fine-tune the model again")

    def bad(key: str, what: str) -> CheckpointError:
        return CheckpointError(f"{file}: {key} = {' '.join(repr(raw[key]).split())[:80]}: {what}; fix it or "
                               f"fine-tune the model again")

    def is_number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if raw.get("size") is not None:
        sizes = raw["size"] if isinstance(raw["size"], dict) else {"height": raw["size"], "width": raw["size"]}
        if not sizes or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_IMAGE_SIZE
                                for v in sizes.values()):
            raise bad("size", f"sizes must be positive integers (at most {MAX_IMAGE_SIZE})")
        if "height" in sizes and "width" in sizes and (sizes["height"], sizes["width"]) != settings["size"]:
            raise bad("size", f"the model takes {size} x {size} images (its config's image_size)")
    if "rescale_factor" in raw and not (is_number(raw["rescale_factor"]) and raw["rescale_factor"] > 0):
        raise bad("rescale_factor", "must be a positive number (1/255 for 8-bit images)")
    if raw.get("do_rescale", True) is not False:
        settings["rescale_factor"] = raw.get("rescale_factor", settings["rescale_factor"])
    else:
        settings["rescale_factor"] = 1.0
    for key in ("image_mean", "image_std"):
        if key not in raw:
            continue
        values = raw[key] if isinstance(raw[key], list) else [raw[key]]
        if len(values) not in (1, 3) or not all(is_number(v) for v in values):
            raise bad(key, "must be one number or one per colour channel (3)")
        if key == "image_std" and any(v == 0 for v in values):
            raise bad(key, "a standard deviation of 0 divides by zero")
        settings[key] = [float(v) for v in values]
    if raw.get("do_normalize", True) is False:
        settings["image_mean"], settings["image_std"] = [0.0], [1.0]
    return settings


__all__ = ["load_classifier", "read_processor_settings", "resolve_model"]
