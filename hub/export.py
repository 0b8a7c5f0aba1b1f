"""Export a meta-training run as a Hub model repo folder.

    OUT_DIR/config.json               the backbone's transformers config + the ``ctinit`` entry (how it was made)
    OUT_DIR/model.safetensors         phi only, with safetensors metadata (format, library, algorithm)
    OUT_DIR/preprocessor_config.json  transformers' ViTImageProcessor: input size and normalization (AutoImageProcessor)
    OUT_DIR/recipe.yaml               the resolved meta-training recipe (RUN_DIR/config.yaml)
    OUT_DIR/README.md                 the model card (ctinit/hubio/templates/initialization.md)
    OUT_DIR/results.json, curves.png  with --results: the evaluation the card reports
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ctinit.atomic import check_replaceable, folder_content, give_new_file_mode, recover_swap, staged_dir
from ctinit.errors import CheckpointError, ConfigError
from ctinit.hubio import CONFIG_NAME, WEIGHTS_NAME, check_license, parse_hub_id
from ctinit.loading import load_init, read_config
from ctinit.models import is_ctinit_config
from ctinit.models.finetuned_folder import image_processor

from ctinit.hubio.cards import PLACEHOLDER_ORG

from .card import public_spec, render_init_card, update_card

RECIPE_NAME = "recipe.yaml"
PREPROCESSOR_NAME = "preprocessor_config.json"
EXPORT_FILES = (CONFIG_NAME, WEIGHTS_NAME, PREPROCESSOR_NAME, RECIPE_NAME, "README.md", "results.json", "curves.png")


def find_init(run_dir: Path) -> tuple[Path, Path | None]:
    """``(init folder, recipe file or None)`` of a run directory (or of an initialization directory itself)."""
    if not run_dir.exists():
        raise ConfigError(f"{run_dir}: no such run directory; pass the --out folder of `ctinit-train`")
    if (run_dir / "init" / CONFIG_NAME).is_file():
        recipe = run_dir / "config.yaml"
        return run_dir / "init", recipe if recipe.is_file() else None
    if (run_dir / CONFIG_NAME).is_file():
        return run_dir, None
    raise ConfigError(f"{run_dir}: no init/{CONFIG_NAME}; pass a meta-training run directory (its --out) or an "
                      f"initialization directory ({CONFIG_NAME} + {WEIGHTS_NAME})")


def _write_weights(src: Path, dst: Path, algorithm: str) -> None:
    """Copy the weights byte for byte when they carry ctinit's metadata, else re-save them with it."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from ctinit.version import __version__

    with safe_open(str(src), "pt") as f:
        metadata = dict(f.metadata() or {})
    if metadata.get("format") == "pt" and metadata.get("library") == "ctinit":
        shutil.copyfile(src, dst)
        return
    from ctinit.loading import read_weights

    tensors = read_weights(src.parent)
    metadata = {**metadata, "format": "pt", "library": "ctinit", "algorithm": algorithm,
                "ctinit_version": metadata.get("ctinit_version", __version__)}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(dst), metadata=metadata)
    give_new_file_mode(dst)  # safetensors writes it 0600; an export is for others to load


def check_finite_weights(init: Path) -> None:
    """Refuse an initialization with a NaN or infinite weight (one line naming the tensor)."""
    import torch

    from ctinit.errors import NonFiniteError
    from ctinit.loading import read_weights

    for name, tensor in read_weights(init).items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise NonFiniteError(f"{init}: weight '{name}' holds non-finite values (NaN or inf); nothing was exported: "
                                 "retrain (lower learning rates) or export another run")


def check_meta_updated(init: Path, run: Path, info: dict) -> None:
    """Refuse an initialization that never moved from its random start (``phi_distance`` 0: a run whose rule never
    meta-updated) labelled as meta-learned. The distance is the init's own record, else the run's last metrics line."""
    algorithm = info.get("algorithm")
    if algorithm in (None, "scratch"):
        return
    distance = info.get("phi_distance")
    if distance is None and (run / "metrics.jsonl").is_file():
        from ctinit.jsonl import read_jsonl

        records = [r for _, r in read_jsonl(run / "metrics.jsonl")[0] if isinstance(r, dict) and "phi_distance" in r]
        distance = records[-1]["phi_distance"] if records else None
    if distance == 0:
        raise ConfigError(f"{init}: phi_distance is 0: the {algorithm} run never meta-updated (its reset_period K or "
                          "meta_interval is above its steps), so this is its random start; nothing was exported: "
                          "retrain with K <= steps")


def _public(value):
    """``value`` (config data) with every local task spec by file name only (see :func:`~.card.public_spec`):
    the meta-training tasks, the validation tasks, wherever they are."""
    if isinstance(value, dict):
        return {k: _public_init_from(v) if k == "init_from" else _public(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_public(v) for v in value]
    if isinstance(value, str) and value.startswith(("npz:", "folder:")):
        return public_spec(value)
    return value


def _public_init_from(value):
    """A recipe's ``init_from``: a zoo name or Hub id as written, a local folder by its name only."""
    if isinstance(value, str) and not value.startswith("zoo:") and (parse_hub_id(value) is None
                                                                    or Path(value).expanduser().exists()):
        return Path(value).name
    return _public(value)


def _public_recipe(text: str) -> str:
    """The recipe with its local task specs by file name only; unchanged text when there are none."""
    import yaml

    data = yaml.safe_load(text)
    public = _public(data)
    return text if public == data else yaml.safe_dump(public, sort_keys=False)


def export_run(run_dir: str | Path, out_dir: str | Path, *, repo_id: str | None = None, license: str | None = None,
               results: str | Path | None = None, template: str | Path | None = None, overwrite: bool = False) -> Path:
    """Turn ``run_dir`` into a Hub model repo folder ``out_dir`` (see module doc); returns ``out_dir``."""
    from ctinit.report import load_results

    if license is not None:
        check_license(license)
    run = Path(run_dir)
    out = Path(out_dir)
    init, recipe = find_init(run)
    check_finite_weights(init)  # nothing non-finite is published
    if repo_id is not None:
        parsed = parse_hub_id(repo_id)
        if parsed is None or parsed[1] is not None:
            raise ConfigError(f"--repo '{repo_id}': write the Hub id as ORG/NAME")
    if out.resolve() in (init.resolve(), run.resolve()):
        raise ConfigError(f"{out}: export into a new folder, not into the run itself")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is a file; choose a folder for the export")
    recover_swap(out)  # a swap of OUT that a kill interrupted: finished or rolled back, never deleted
    content = folder_content(out)
    if content:
        if not overwrite:
            raise ConfigError(f"{out}: exists and is not empty; choose a new folder or pass --overwrite")
        check_replaceable(out, "export folder")
    results_data = load_results(results) if results is not None else None  # bad results fail before writing

    backbone = load_init(init)  # refuses pickle-only, truncated and mismatched initializations
    config = read_config(init)
    info = dict(getattr(config, "ctinit", None) or {})
    if not info:
        raise CheckpointError(f"{init / CONFIG_NAME}: no 'ctinit' entry (how it was made); export initializations "
                              f"written by ctinit (ctinit-train or ctinit.loading.save_init)")
    check_meta_updated(init, run, info)

    # Written beside OUT and swapped in once complete (an earlier export stays as it was until then); other files
    # of the user's in OUT stay.
    kept = f"the export in {out} is unchanged" if set(content) & set(EXPORT_FILES) else f"nothing was written to {out}"
    with staged_dir(out, kept=kept, carry_over=[name for name in content if name not in EXPORT_FILES]) as tmp:
        # Published files name local data by file name only (npz:/home/me/x.npz -> npz:x.npz), never by path.
        raw = _public(json.loads((init / CONFIG_NAME).read_text()))
        (tmp / CONFIG_NAME).write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
        _write_weights(init / WEIGHTS_NAME, tmp / WEIGHTS_NAME, str(info.get("algorithm", "unknown")))
        image_processor(config).save_pretrained(str(tmp))  # transformers' own ViTImageProcessor config
        recipe_text = None
        if recipe is not None:
            recipe_text = _public_recipe(recipe.read_text())
            (tmp / RECIPE_NAME).write_text(recipe_text)
        card = render_init_card(
            config, info, repo_id=repo_id or f"{PLACEHOLDER_ORG}/{out.resolve().name}",
            num_parameters=sum(p.numel() for p in backbone.parameters()), license=license, recipe_yaml=recipe_text,
            plain_transformers=not is_ctinit_config(config), template=template,
        )
        (tmp / "README.md").write_text(str(card).rstrip("\n") + "\n")
        if results_data is not None:
            update_card(tmp, results_data)  # the one way results enter a card (also `ctinit-hub update-card`)
    return out


__all__ = ["EXPORT_FILES", "PREPROCESSOR_NAME", "RECIPE_NAME", "export_run", "find_init"]
