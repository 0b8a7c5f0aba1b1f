"""Save and load initializations: ``config.json`` + ``model.safetensors`` (phi only, never pickle).

An initialization directory holds the backbone's transformers config (with a ``ctinit`` entry saying how it
was made) and the backbone's state dict at phi in safetensors. Task heads are never saved: a new task gets a
fresh head sized to its classes.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

from . import __version__
from .errors import CheckpointError
from .models import ARCHITECTURES, backbone_config

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def save_init(backbone: PreTrainedModel, out_dir: str | Path, made_with: dict | None = None,
              state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``out_dir/config.json`` and ``out_dir/model.safetensors``; ``made_with`` is stored as ``config.ctinit``."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = backbone.config
    info = {"library_version": __version__, **(made_with or {})}
    config.ctinit = info
    config.architectures = [type(backbone).__name__]
    state = state_dict if state_dict is not None else backbone.state_dict()
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    metadata = {"format": "pt", "library": "ctinit", "ctinit_version": __version__,
                "algorithm": str(info.get("algorithm", "unknown"))}
    tmp = out / (WEIGHTS_NAME + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(out / WEIGHTS_NAME)  # never leave a half-written weights file under the real name
    config.save_pretrained(str(out))
    return out


def _read_config(path: Path) -> PretrainedConfig:
    config_file = path / CONFIG_NAME
    if not config_file.is_file():
        raise CheckpointError(f"{path}: no {CONFIG_NAME}; an initialization directory holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{config_file}: not valid JSON ({e}); re-export the initialization") from e
    if not model_type:
        raise CheckpointError(f"{config_file}: no 'model_type' key; re-export the initialization")
    try:
        return AutoConfig.from_pretrained(str(path))
    except (ValueError, KeyError, OSError) as e:
        raise CheckpointError(f"{config_file}: cannot read config of model_type '{model_type}' ({str(e).splitlines()[0]})") from e


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``path/model.safetensors``; refuses pickle-only directories and corrupt files."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES) if path.is_dir() else []
        if pickles:
            raise CheckpointError(
                f"{path}: only pickle weights ({', '.join(pickles)}); ctinit loads safetensors only, because unpickling "
                f"can run arbitrary code: convert them to {WEIGHTS_NAME} with safetensors where you trust the source"
            )
        raise CheckpointError(f"{path}: no {WEIGHTS_NAME}; an initialization directory holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{weights}: unreadable safetensors file ({str(e).splitlines()[0]}); it may be truncated: download or export it again") from e


def load_state_strict(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``tensors`` into ``model``, naming the first missing/unexpected key or shape mismatch."""
    own = model.state_dict()
    missing = [k for k in own if k not in tensors]
    unexpected = [k for k in tensors if k not in own]
    if missing or unexpected:
        what = f"missing tensor '{missing[0]}'" if missing else f"unexpected tensor '{unexpected[0]}'"
        raise CheckpointError(f"{source}: {what} ({len(missing)} missing, {len(unexpected)} unexpected): the weights do not match the config's architecture")
    for k, v in own.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{source}: tensor '{k}' has shape {tuple(tensors[k].shape)} but the config's architecture needs {tuple(v.shape)}")
    model.load_state_dict(tensors, strict=True)


def load_init(init: str | Path, seed: int | None = None) -> PreTrainedModel:
    """A backbone from an initialization directory, ``scratch:DIR`` (same architecture, fresh weights) or
    ``scratch:ARCH`` (a built-in backbone name such as ``resnet20``). ``seed`` seeds fresh weights."""
    init = str(init)
    if init.startswith("scratch:"):
        target = init[len("scratch:"):]
        if target in ARCHITECTURES:
            config = backbone_config(target)
        elif Path(target).is_dir():
            config = _read_config(Path(target))
        else:
            raise CheckpointError(
                f"'{init}': not a built-in backbone ({', '.join(ARCHITECTURES)}) nor an initialization directory"
            )
        if seed is not None:
            torch.manual_seed(seed)
        return AutoModel.from_config(config)
    path = Path(init)
    if not path.exists():
        raise CheckpointError(f"{path}: no such initialization directory; pass a directory with {CONFIG_NAME} and {WEIGHTS_NAME}, or scratch:ARCH")
    if not path.is_dir():
        raise CheckpointError(f"{path}: an initialization is a directory with {CONFIG_NAME} and {WEIGHTS_NAME}, not a file")
    config = _read_config(path)
    tensors = read_weights(path)
    model = AutoModel.from_config(config)
    load_state_strict(model, tensors, str(path / WEIGHTS_NAME))
    return model


def init_info(init: str | Path) -> dict:
    """How an initialization was made (the ``ctinit`` entry of its config), or {} for scratch."""
    if str(init).startswith("scratch:"):
        return {}
    return dict(getattr(_read_config(Path(init)), "ctinit", {}) or {})
