"""Save and load initializations: ``config.json`` + ``model.safetensors`` (phi only, never pickle).

An initialization directory holds the backbone's transformers config (with a ``ctinit`` entry saying how it
was made) and the backbone's state dict at phi in safetensors. Task heads are never saved: a new task gets a
fresh head sized to its classes.

An initialization is named by

* a local directory (``runs/cts/init``, an export, a Hub snapshot folder; the run ``runs/cts`` itself names its
  ``init/``, with a note on stderr);
* a Hub model repo id ``ORG/NAME``, optionally pinned as ``ORG/NAME@REVISION`` (a branch, tag or commit hash) or
  with ``revision=``; ``hf-hub:ORG/NAME`` forces the Hub reading. Hub ids resolve through the normal Hugging Face
  cache (``HF_HUB_CACHE``), so ``HF_HUB_OFFLINE=1`` works once a copy is cached. The repo's file list is checked
  before any weights are downloaded, and only ``config.json`` and ``model.safetensors`` are fetched;
* ``zoo:NAME``: an initialization shipped in the package (:mod:`ctinit.zoo`, checked against its registered sha256);
* ``scratch:ARCH`` (a built-in backbone, fresh weights), ``scratch:DIR``, ``scratch:ORG/NAME`` or ``scratch:zoo:NAME``
  (the same architecture, fresh weights).

A local path that exists always wins over a Hub id of the same spelling.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, PretrainedConfig

from .atomic import write_file
from .errors import CheckpointError, ConfigError
from .hubio import hub_snapshot
from .hubio.names import CONFIG_NAME, HUB_PREFIX, WEIGHTS_NAME, is_pickle_name, one_line, parse_hub_id
from .version import __version__
from .zoo import PREFIX as ZOO_PREFIX, folder as zoo_folder, get as zoo_entry, meant as zoo_meant, verify as zoo_verify
from .models import ARCHITECTURES, HFBackbone, ImageClassifier, backbone_config, build_backbone
from .models.configuration import unknown_model_type_advice

# ------------------------------------------------------------------------------------------------ saving


def save_init(backbone: nn.Module, out_dir: str | Path, made_with: dict | None = None,
              state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``out_dir/config.json`` and ``out_dir/model.safetensors``; ``made_with`` is stored as ``config.ctinit``.

    A wrapped transformers model (:class:`~ctinit.models.HFBackbone`) is written as its base model: the folder is a
    plain transformers checkpoint of that architecture (keys without the wrapper's ``model.`` prefix).
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    inner = backbone.model if isinstance(backbone, HFBackbone) else backbone
    if isinstance(backbone, ImageClassifier):
        raise ConfigError("save_init takes the backbone (model.backbone), not the classifier: heads are never saved")
    config = inner.config
    info = {"library_version": __version__, **(made_with or {})}
    config.ctinit = info
    config.architectures = [type(inner).__name__]
    state = state_dict if state_dict is not None else inner.state_dict()
    if inner is not backbone and state_dict is not None:
        state = {(k[len("model."):] if k.startswith("model.") else k): v for k, v in state.items()}
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    metadata = {"format": "pt", "library": "ctinit", "ctinit_version": __version__,
                "algorithm": str(info.get("algorithm", "unknown"))}
    # never a half-written weights file under the real name
    write_file(out / WEIGHTS_NAME, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    config.save_pretrained(str(out))
    return out


# ------------------------------------------------------------------------------------------------ local files


def _read_config(path: Path) -> PretrainedConfig:
    config_file = path / CONFIG_NAME
    if not config_file.is_file():
        raise CheckpointError(f"{path}: no {CONFIG_NAME}; an initialization directory holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        raw = json.loads(config_file.read_text())
        model_type = raw.get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise CheckpointError(f"{config_file}: not valid JSON ({one_line(e)}); re-export the initialization") from e
    if not model_type:
        raise CheckpointError(f"{config_file}: no 'model_type' key; re-export the initialization")
    _check_labels(raw, config_file)
    try:
        return AutoConfig.from_pretrained(str(path))
    except (ValueError, KeyError, OSError, TypeError) as e:
        advice = unknown_model_type_advice(model_type)
        if advice:
            raise CheckpointError(f"{config_file}: cannot read its config: {advice}") from e
        raise CheckpointError(f"{config_file}: cannot read config of model_type '{model_type}' ({one_line(str(e).splitlines()[0] if str(e) else e)})") from e


def _check_labels(raw: dict, config_file: Path) -> None:
    """One line for label fields transformers would choke on or build at any size (``num_labels: 1e9`` makes a
    billion-entry ``id2label``): checked on the JSON, before transformers reads it."""
    from .tasks.raw import MAX_CLASSES

    def bad(key: str, what: str) -> CheckpointError:
        return CheckpointError(f"{config_file}: {key} = {one_line(repr(raw[key]))[:80]}: {what}; the config.json is "
                               f"damaged: fine-tune or export the model again")

    num = raw.get("num_labels")
    if num is not None and (isinstance(num, bool) or not isinstance(num, int) or not 0 <= num <= MAX_CLASSES):
        raise bad("num_labels", f"must be an integer from 0 to {MAX_CLASSES}")
    id2label = raw.get("id2label")
    if id2label is not None:
        if not isinstance(id2label, dict):
            raise bad("id2label", 'must be a mapping {"0": "name", "1": ...}')
        if len(id2label) > MAX_CLASSES:
            raise bad("id2label", f"has {len(id2label)} classes, more than {MAX_CLASSES}")
        wanted = {str(i) for i in range(len(id2label))}
        if set(id2label) != wanted:
            missing = sorted(wanted - set(id2label), key=lambda k: int(k))[:3]
            raise bad("id2label", f"keys must be 0..{len(id2label) - 1}"
                                  + (f" (missing {', '.join(missing)})" if missing else ""))
        if not all(isinstance(v, str) for v in id2label.values()):
            raise bad("id2label", "class names must be strings")
        from collections import Counter

        twice = sorted(name for name, n in Counter(id2label.values()).items() if n > 1)
        if twice:
            raise bad("id2label", f"the class name {one_line(repr(twice[0]))[:40]} is given to more than one class "
                                  "(predictions could not tell them apart)")
        if num is not None and num != len(id2label):
            raise bad("num_labels", f"does not match id2label ({len(id2label)} classes)")
    label2id = raw.get("label2id")
    if label2id is not None and (not isinstance(label2id, dict) or len(label2id) > MAX_CLASSES
                                 or not all(isinstance(v, int) and not isinstance(v, bool) for v in label2id.values())):
        raise bad("label2id", f'must be a mapping {{"name": 0, ...}} of at most {MAX_CLASSES} classes')


def read_config(path: str | Path) -> PretrainedConfig:
    """The transformers config in ``path/config.json`` (one-line errors for a missing or unreadable file)."""
    return _read_config(Path(path))


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``path/model.safetensors``; refuses pickle-only directories and corrupt files."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        pickles = sorted(p.name for p in path.iterdir() if is_pickle_name(p.name)) if path.is_dir() else []
        if pickles:
            raise CheckpointError(
                f"{path}: only pickle weights ({', '.join(pickles)}); ctinit loads safetensors only, because unpickling "
                f"can run arbitrary code: convert them to {WEIGHTS_NAME} with safetensors where you trust the source"
            )
        raise CheckpointError(f"{path}: no {WEIGHTS_NAME}; an initialization directory holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{weights}: unreadable safetensors file ({one_line(str(e).splitlines()[0] if str(e) else e)}); it may be truncated: download or export it again") from e


def _quoted(keys: list[str], shown: int = 3) -> str:
    names = ", ".join(f"'{k}'" for k in keys[:shown])
    return names + (f" and {len(keys) - shown} more" if len(keys) > shown else "")


def check_tensors(source: str, missing, unexpected, mismatched, integer=(),
                  architecture: str = "the config's architecture") -> None:
    """One line naming the missing and unexpected tensors of a weights file, or else its first mis-shaped tensor, or
    else its first integer tensor where the model needs floating-point weights (lists in the order to report;
    ``mismatched`` holds ``(name, shape in the file, shape needed)``, ``integer`` ``(name, dtype in the file)``). Every
    loader of weights goes through this check: initializations (:func:`load_state_strict`) and fine-tuned classifiers
    (:func:`ctinit.finetuned_loading.load_classifier`, from transformers' loading report)."""
    if missing or unexpected:
        what = "; ".join(([f"missing tensor {_quoted(missing)}"] if missing else [])
                         + ([f"unexpected tensor {_quoted(unexpected)}"] if unexpected else []))
        raise CheckpointError(f"{source}: {what} ({len(missing)} missing, {len(unexpected)} unexpected): the weights "
                              f"do not match {architecture}")
    if mismatched:
        name, have, need = mismatched[0]
        more = f" ({len(mismatched) - 1} more mis-shaped)" if len(mismatched) > 1 else ""
        raise CheckpointError(f"{source}: tensor '{name}' has shape {tuple(have)} but {architecture} needs "
                              f"{tuple(need)}{more}")
    if integer:
        name, dtype = integer[0]
        raise CheckpointError(f"{source}: tensor '{name}' holds {str(dtype).replace('torch.', '')} values but "
                              f"{architecture} needs floating-point weights; save the weights as floats")


def load_state_strict(model: nn.Module, tensors: dict[str, torch.Tensor], source: str,
                      architecture: str = "the config's architecture") -> None:
    """Copy ``tensors`` into ``model`` after :func:`check_tensors`."""
    own = model.state_dict()
    mismatched = [(k, tuple(tensors[k].shape), tuple(v.shape)) for k, v in own.items()
                  if k in tensors and tuple(tensors[k].shape) != tuple(v.shape)]
    integer = [(k, tensors[k].dtype) for k, v in own.items()
               if k in tensors and v.is_floating_point() and not tensors[k].is_floating_point()]
    check_tensors(source, [k for k in own if k not in tensors], [k for k in tensors if k not in own], mismatched,
                  integer, architecture)
    model.load_state_dict(tensors, strict=True)


#: The largest input size (pixels per side) of a model: its config's image_size, its preprocessor's size.
MAX_IMAGE_SIZE = 1 << 13
#: Size fields of backbone configs (ctinit's and transformers'): positive integers below these bounds.
_SIZE_FIELDS = {"hidden_size": 1 << 16, "num_layers": 1000, "depth": 1000, "num_channels": 64,
                "image_size": MAX_IMAGE_SIZE,
                "num_hidden_layers": 1000, "intermediate_size": 1 << 18, "num_attention_heads": 1024,
                "patch_size": 1 << 13, "widths": 1 << 16, "hidden_sizes": 1 << 16, "depths": 1000}


def check_config_sizes(config: PretrainedConfig) -> None:
    """One line for a config whose sizes are not numbers or absurd (before anything is allocated)."""
    for key, limit in _SIZE_FIELDS.items():
        value = getattr(config, key, None)
        if value is None:
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= limit:
                raise CheckpointError(f"config {key} = {one_line(repr(value))[:80]}: must be a positive integer "
                                      f"(at most {limit}); the config.json is damaged or not a ctinit backbone")


def _model_from(config: PretrainedConfig) -> nn.Module:
    check_config_sizes(config)
    try:
        return build_backbone(config)
    except CheckpointError:
        raise
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"cannot build a backbone of model_type '{config.model_type}' ({one_line(e)})") from e


def _load_dir(path: Path) -> nn.Module:
    config = _read_config(path)
    tensors = read_weights(path)
    model = _model_from(config)
    target = model.model if isinstance(model, HFBackbone) else model
    if isinstance(model, HFBackbone):
        # A checkpoint of the same architecture made by transformers may carry a pooler ctinit does not use.
        own = target.state_dict()
        tensors = {k: v for k, v in tensors.items() if k in own or not k.startswith("pooler.")}
    load_state_strict(target, tensors, str(path / WEIGHTS_NAME))
    return model


@dataclass(frozen=True)
class InitSource:
    """Where an initialization comes from, once resolved to a local folder (see :func:`resolve_init`)."""

    spec: str                      # as the user wrote it
    path: Path | None = None       # the local folder with config.json (+ model.safetensors)
    scratch: bool = False          # fresh weights of that architecture
    arch: str | None = None        # scratch:ARCH
    repo_id: str | None = None     # a Hub id
    revision: str | None = None
    commit: str | None = None      # the commit hash a Hub id resolved to
    zoo: str | None = None         # the zoo entry's name (zoo:NAME)

    def describe(self) -> str:
        if self.repo_id:
            pinned = f"@{self.revision}" if self.revision else ""
            return f"{self.repo_id}{pinned} (commit {self.commit[:10]})" if self.commit else f"{self.repo_id}{pinned}"
        return self.spec


def resolve_init(init: "str | Path | InitSource", revision: str | None = None) -> InitSource:
    """Turn an initialization name into a local folder, downloading Hub ids into the cache (see module doc)."""
    if isinstance(init, InitSource):
        return init
    spec = str(init)
    scratch = spec.startswith("scratch:")
    target = spec[len("scratch:"):] if scratch else spec
    if not target:
        raise CheckpointError(f"'{spec}': name an initialization directory, a Hub id ORG/NAME or (scratch:) a built-in backbone")
    if scratch and target in ARCHITECTURES:
        return InitSource(spec, scratch=True, arch=target)
    if target.startswith(ZOO_PREFIX):
        return _zoo_source(spec, target, scratch, revision)
    path = Path(target).expanduser()
    if not target.startswith(HUB_PREFIX) and path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path}: an initialization is a directory with {CONFIG_NAME} and {WEIGHTS_NAME}, not a file")
        if revision:
            raise ConfigError(f"--revision {revision}: '{target}' is a local directory; a revision only applies to Hub ids")
        if not (path / CONFIG_NAME).is_file() and (path / "init" / CONFIG_NAME).is_file():
            path = path / "init"  # a meta-training run directory names its initialization
            logging.getLogger(__name__).warning("note: %s is a meta-training run folder; using its initialization %s",
                                                target, path)
        return InitSource(spec, path=path, scratch=scratch)
    meant = None if target.startswith(HUB_PREFIX) else zoo_meant(target, close=False)
    if meant is not None:  # `glyph-resnet20` or `zoo/glyph-resnet20`: never a Hub download that cannot exist
        raise CheckpointError(f"'{spec}': no such directory; did you mean {'scratch:' if scratch else ''}"
                              f"{ZOO_PREFIX}{meant}? (initializations shipped with ctinit are named {ZOO_PREFIX}NAME; "
                              "`ctinit list` shows them)")
    hub = parse_hub_id(target)
    if hub is None:
        near = zoo_meant(target)
        hint = f" (did you mean {'scratch:' if scratch else ''}{ZOO_PREFIX}{near}?)" if near else ""
        if scratch:
            raise CheckpointError(
                f"'{spec}': not a built-in backbone ({', '.join(ARCHITECTURES)}) nor an initialization directory or "
                f"Hub id{hint}"
            )
        raise CheckpointError(f"{path}: no such initialization directory; pass a directory with {CONFIG_NAME} and "
                              f"{WEIGHTS_NAME}, a Hub id ORG/NAME[@REVISION], zoo:NAME (`ctinit list`) or "
                              f"scratch:ARCH{hint}")
    repo_id, pinned = hub
    if pinned and revision and pinned != revision:
        raise ConfigError(f"'{target}' pins revision '{pinned}' but --revision says '{revision}': give one of them")
    revision = pinned or revision
    try:
        folder, commit = hub_snapshot(repo_id, revision, need_weights=not scratch)
    except CheckpointError as e:
        if target.startswith(HUB_PREFIX) or "no such local directory" in str(e):
            raise
        raise CheckpointError(f"no local directory '{target}', and as a Hub id: {e}") from e
    return InitSource(spec, path=folder, scratch=scratch, repo_id=repo_id, revision=revision, commit=commit)


def _zoo_source(spec: str, target: str, scratch: bool, revision: str | None) -> InitSource:
    """``zoo:NAME``: the shipped folder, its weights checked against the registry (fresh weights need no check)."""
    if revision:
        raise ConfigError(f"--revision {revision}: '{target}' is shipped in the package; a revision only applies to Hub ids")
    entry = zoo_entry(target)
    path = zoo_folder(entry["name"]) if scratch else zoo_verify(entry)
    return InitSource(spec, path=path, scratch=scratch, zoo=entry["name"])


def load_init(init: "str | Path | InitSource", seed: int | None = None, revision: str | None = None) -> nn.Module:
    """A backbone from an initialization directory, a Hub id (``ORG/NAME[@REV]``, or ``revision=``),
    ``scratch:DIR``/``scratch:ORG/NAME`` (same architecture, fresh weights) or ``scratch:ARCH`` (a built-in backbone
    name such as ``resnet20``). ``seed`` seeds fresh weights."""
    source = resolve_init(init, revision)
    if source.scratch:
        config = backbone_config(source.arch) if source.arch else _read_config(source.path)
        if seed is not None:
            torch.manual_seed(seed)
        return _model_from(config)
    return _load_dir(source.path)


def init_config(init: "str | Path | InitSource", revision: str | None = None) -> PretrainedConfig:
    """The backbone config of an initialization (no weights are read)."""
    source = resolve_init(init, revision)
    return backbone_config(source.arch) if source.arch else _read_config(source.path)


def init_info(init: "str | Path | InitSource", revision: str | None = None) -> dict:
    """How an initialization was made (the ``ctinit`` entry of its config), or {} for scratch."""
    source = resolve_init(init, revision)
    if source.scratch:
        return {}
    return dict(getattr(_read_config(source.path), "ctinit", {}) or {})


def from_pretrained(init: "str | Path | InitSource", num_classes: int | None = None, revision: str | None = None,
                    seed: int | None = None) -> ImageClassifier:
    """An :class:`~ctinit.models.ImageClassifier` ready to fine-tune: the backbone at the initialization (a local
    directory, a Hub id ``ORG/NAME[@REV]`` or ``scratch:...``) plus a fresh linear head for ``num_classes`` classes
    (None or 0: no head, ``forward`` returns pooled features and fine-tuning adds a head sized to the task)."""
    from .tasks.raw import MAX_CLASSES

    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or not 0 <= num_classes <= MAX_CLASSES):
        raise ConfigError(f"num_classes must be an integer from 0 to {MAX_CLASSES}, got {num_classes!r}")
    backbone = load_init(init, seed=seed, revision=revision)
    if seed is not None:
        torch.manual_seed(seed)
    return ImageClassifier(backbone, num_classes)


__all__ = [
    "InitSource", "MAX_IMAGE_SIZE", "check_config_sizes", "check_tensors", "from_pretrained", "init_config", "init_info",
    "read_config", "load_init", "load_state_strict", "read_weights", "resolve_init", "save_init",
]
