"""Meta-training config: a typed schema (:class:`TrainConfig`), read from a YAML recipe plus dotted ``key=value``
overrides, validated once before any work starts, and handed to the trainer as plain data (a dict).

Adding a key is one line in :class:`TrainConfig` (name, type from ``ctinit.schema``, default, comment); keys that may
change between a checkpoint and ``--resume`` also go into ``RESUME_SAFE_KEYS``. Values are parsed as YAML 1.2
(``1e-3`` is a float). Every invalid value is one line naming the key, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

import yaml

from ctinit.atomic import write_text
from ctinit.meta.defaults import INNER_OPTIMIZER, META_OPTIMIZER, RESET_PERIOD
from ctinit.meta.optim import OptimizerSpec
from ctinit.schema import (
    Bool,
    Float,
    NonNegInt,
    PositiveFloat,
    PositiveInt,
    Precision,
    Seed,
    Str,
    schema,
    schema_defaults,
    to_dict,
    validate_schema,
    yaml_load,
)
from ctinit.errors import ConfigError
from ctinit.meta import RULES
from ctinit.meta.engine import COMPILE_MODES, EXECUTIONS
from ctinit.models import ARCHITECTURES

from pydantic import Field, StrictInt

#: Meta learning-rate schedules (``meta_lr_schedule``): the meta rate at each meta-step.
META_LR_SCHEDULES = ("constant", "cosine")

#: Accelerate's experiment trackers (``log_with``).
TRACKERS = Literal["all", "tensorboard", "trackio", "wandb", "comet_ml", "aim", "mlflow", "clearml", "dvclive", "swanlab"]


@schema(prefix="validation.")
class ValidationConfig:
    """Meta-validation: every ``every`` steps (0: never) the main process fine-tunes a copy of phi on each task for
    ``steps`` steps and logs the mean test accuracy; the best phi so far is exported to OUT/best/."""

    every: NonNegInt = 0
    tasks: list[Str] = dataclasses.field(default_factory=list)
    steps: PositiveInt = 100
    batch_size: PositiveInt = 64
    lr: PositiveFloat = 1e-3
    seed: Seed = 0


@schema
class TrainConfig:
    """Every key a recipe may set, with its type and default. The defaults are the paper's where it has one."""

    algorithm: Literal[tuple(RULES)] = "cts"  # cts | reptile | fomaml-cts | fomaml | fomaml-k | leap | mtl | scratch
    backbone: Literal[tuple(ARCHITECTURES)] = "resnet20"  # a built-in backbone (ctinit.models.ARCHITECTURES)
    image_size: Annotated[StrictInt, Field(ge=8, le=1024)] = 28
    tasks: list[Str] = dataclasses.field(default_factory=list)  # builtin:NAME, npz:PATH, folder:DIR, hf:NAME[:CONFIG]
    active_tasks: Optional[PositiveInt] = None  # a task pool: train this many of `tasks` at a time, redrawn every reset
    steps: PositiveInt = 1000  # global steps; every task takes one inner step per global step
    batch_size: PositiveInt = 128
    reset_period: PositiveInt = RESET_PERIOD  # K: trajectory length between resets to phi
    meta_interval: Optional[PositiveInt] = None  # steps between meta-updates; None: the algorithm's (1 CTS, K Reptile)
    shift: Optional[Bool] = None  # shift trajectories by each meta-update; None: the algorithm's
    reset: Literal["soft", "hard"] = "soft"  # soft: keep heads, BN statistics, optimizer state; hard: fresh state
    reset_heads: Bool = False  # with reset=hard, also re-initialize the task heads
    inner_optimizer: OptimizerSpec = dataclasses.field(default_factory=lambda: OptimizerSpec(**INNER_OPTIMIZER))
    meta_optimizer: OptimizerSpec = dataclasses.field(default_factory=lambda: OptimizerSpec(**META_OPTIMIZER))
    meta_lr_schedule: Literal[META_LR_SCHEDULES] = "constant"  # constant | cosine: meta lr decays to 0 over `steps`
    # FOMAML only: share of each task's train split kept aside (per class, seeded) for its held-out gradient
    heldout_fraction: Annotated[Float, Field(ge=0, lt=1)] = 0.0
    meta_exclude: list[Str] = dataclasses.field(default_factory=list)  # regexes of backbone parameters kept per task
    augment: Bool = True  # random crop with padding 4 (and flip where the task allows it)
    max_train_per_class: Optional[PositiveInt] = None  # limit each meta-train task to this many examples per class
    seed: Seed = 0
    device: Literal["auto", "cpu"] = "auto"  # auto (what Accelerate picks) | cpu; GPUs are chosen by the launcher
    mixed_precision: Precision = "no"  # autocast for the inner steps; phi and meta-updates stay fp32
    execution: Literal[EXECUTIONS] = "auto"  # auto | sequential | batched
    compile: Literal[COMPILE_MODES] = "auto"  # auto (CPU: backbone where this run measures it faster) | off | graphs | inductor | backbone
    # auto (CPU, sequential, >= 100 steps: measured in the run's first steps, kept where >= 1.05x faster) | true | false
    channels_last: Union[Bool, Literal["auto"]] = "auto"
    max_nonfinite_steps: PositiveInt = 10  # stop when a task's inner loss is non-finite this many steps in a row
    log_every: PositiveInt = 50
    log_with: Optional[Union[TRACKERS, list[TRACKERS]]] = None  # Accelerate trackers (a name or a list)
    project_name: Str = "ctinit"  # the trackers' project
    checkpoint_every: NonNegInt = 0  # steps between checkpoints in OUT/checkpoints/ (0: only on SIGTERM/SIGINT)
    keep_checkpoints: PositiveInt = 3  # how many of the newest checkpoints to keep
    validation: ValidationConfig = dataclasses.field(default_factory=ValidationConfig)
    # zoo:NAME | ORG/NAME[@REV] | DIR: phi starts from this initialization (same backbone and image_size, checked)
    init_from: Optional[Str] = None


#: Every key with its default, as plain data (read from the schema: defaults live in one place).
DEFAULTS: dict = schema_defaults(TrainConfig)

#: Keys that may differ when a run is resumed: they do not change the trained phi. (Not ``execution``: batched and
#: sequential differ by floating-point rounding only, but a resumed run should end with the same phi.)
RESUME_SAFE_KEYS = {"steps", "log_every", "log_with", "project_name", "checkpoint_every", "keep_checkpoints",
                    "max_nonfinite_steps", "device", "validation"}


def _parse_value(text: str):
    try:
        return yaml_load(text)
    except yaml.YAMLError:
        return text


def apply_override(config: dict, item: str) -> None:
    """``a.b=value`` sets ``config['a']['b']``; the value is parsed as YAML 1.2 (numbers, lists, null...)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not key=value (e.g. steps=200 or meta_optimizer.lr=0.1)")
    key, _, raw = item.partition("=")
    parts = key.strip().split(".")
    node = config
    for i, part in enumerate(parts[:-1]):
        if part not in node or not isinstance(node[part], dict):
            sections = [k for k, v in node.items() if isinstance(v, dict)]
            close = difflib.get_close_matches(part, sections, n=1, cutoff=0.6)
            raise ConfigError(f"override '{item}': '{'.'.join(parts[:i + 1])}' is not a section of the config"
                              + (f" (did you mean {'.'.join(parts[:i] + close)}?)" if close else ""))
        node = node[part]
    node[parts[-1]] = _parse_value(raw)


RECIPES = Path(__file__).resolve().parent / "recipes"


def recipe_path(path: str | Path) -> Path:
    """A recipe file, or the name of a bundled recipe (``quickstart``, ``tiny``, ``paper``, or a zoo entry's
    ``zoo/glyph-convnet4-32``), which works from an installed wheel too."""
    path = Path(path)
    if path.is_file():
        return path
    named = path.suffix == "" and (len(path.parts) == 1 or (len(path.parts) == 2 and path.parts[0] == "zoo"))
    bundled = RECIPES.joinpath(*path.parts[:-1], f"{path.name}.yaml") if named else None
    if bundled is not None and bundled.is_file():
        return bundled
    names = sorted(p.stem for p in RECIPES.glob("*.yaml")) + sorted(f"zoo/{p.stem}" for p in RECIPES.glob("zoo/*.yaml"))
    raise ConfigError(f"{path}: no such recipe file; pass a YAML file or a bundled recipe name ({', '.join(names)})")


def load_config(path: str | Path | None, overrides: list[str] = ()) -> dict:
    """Defaults <- recipe file <- overrides, then validated (:func:`validate`). Unknown keys are an error."""
    config = to_dict(TrainConfig())
    if path is not None:
        path = recipe_path(path)
        try:
            recipe = yaml_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
        except ConfigError as e:  # an alias bomb, a duplicate key
            raise ConfigError(f"{path}: {e}") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the recipe ({e.strerror or e})") from e
        recipe = recipe if recipe is not None else {}
        if not isinstance(recipe, dict):
            raise ConfigError(f"{path}: a recipe is a YAML mapping of config keys")
        check_known_keys(recipe, f"{path}: ")
        # A recipe's optimizer mapping replaces the default whole: switching sgd -> adam keeps no stale momentum.
        validation = recipe.pop("validation", None)
        config.update(recipe)
        if validation is not None:
            if not isinstance(validation, dict):
                raise ConfigError(f"{path}: 'validation' must be a mapping like {{every: 500, tasks: [builtin:thai]}}")
            config["validation"].update(validation)
    for item in overrides:
        apply_override(config, item)
    if isinstance(config["validation"], dict):  # a partial mapping (validation={every: 10, ...}) keeps the defaults
        config["validation"] = {**DEFAULTS["validation"], **config["validation"]}
    check_known_keys(config)
    return validate(config)


def check_known_keys(config: dict, where: str = "") -> None:
    """Refuse keys that are not config keys, suggesting the closest (``step`` -> did you mean ``steps``?)."""
    unknown = sorted(str(k) for k in set(config) - set(DEFAULTS))
    if unknown:
        close = [m for k in unknown for m in difflib.get_close_matches(k, list(DEFAULTS), n=1, cutoff=0.6)]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"{where}unknown config keys {unknown}{hint}; known keys: {sorted(DEFAULTS)}")


def validate(config: dict) -> dict:
    """Check every key (types, ranges, choices) and the rules between keys; returns the config as plain data with
    every default filled in. Raises a one-line ConfigError."""
    for key in ("inner_optimizer", "meta_optimizer"):  # optimizer names are case-insensitive
        if isinstance(config.get(key), dict) and isinstance(config[key].get("name"), str):
            config[key] = {**config[key], "name": config[key]["name"].lower()}
    typed = validate_schema(TrainConfig, config, "")
    if not typed.tasks:
        raise ConfigError("tasks: must be a non-empty list of task specs (e.g. [builtin:latin])")
    interval = typed.meta_interval
    if interval is not None and interval > typed.reset_period and typed.algorithm != "mtl":
        raise ConfigError(f"meta_interval ({interval}) is larger than reset_period K ({typed.reset_period}): use meta_interval <= reset_period")
    check_meta_updates(typed.algorithm, typed.meta_interval, typed.reset_period, typed.steps)
    for pattern in typed.meta_exclude:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ConfigError(f"meta_exclude = {pattern!r}: not a regular expression ({e})") from None
    if typed.validation.every and not typed.validation.tasks:
        raise ConfigError("validation.every is set but validation.tasks is empty: list the meta-validation task specs")
    from ctinit.tasks import parse_spec

    for key, specs in (("tasks", typed.tasks), ("validation.tasks", typed.validation.tasks)):
        for spec in specs:
            try:
                parse_spec(spec)
            except ConfigError:
                raise
            except Exception as e:  # noqa: BLE001 - a spec that does not parse is bad input
                raise ConfigError(f"{key}: {' '.join(str(e).split())}") from None
    plain = to_dict(typed)
    validate_pool(plain)
    return plain


def check_meta_updates(algorithm: str, meta_interval: int | None, reset_period: int, steps: int) -> None:
    """A run that would never meta-update (its first meta-update at step K, or ``meta_interval``, after the last
    step) is refused: it would export its random start labelled as meta-learned."""
    rule = RULES[algorithm]
    if rule.direction == "none":
        return
    interval = meta_interval or rule.meta_interval or rule.reset_period or reset_period
    if interval > steps:
        what = "meta_interval" if meta_interval else "reset_period K"
        raise ConfigError(f"{algorithm} meta-updates every {interval} steps ({what}) but the run has steps = {steps}: "
                          f"phi would never be updated; use {what.split()[0]} <= steps")


def _normalized(config: dict) -> dict:
    """A (possibly older) saved config with every default filled in, optimizers as full mappings."""
    out = {**DEFAULTS, **config}
    for key in ("inner_optimizer", "meta_optimizer"):
        try:
            out[key] = OptimizerSpec.from_dict(out[key]).to_dict()
        except Exception:  # noqa: BLE001 - an unreadable entry just compares as it is
            pass
    return out


def validate_pool(config: dict) -> None:
    """``active_tasks``: null (every task trains all the time) or a pool of ``tasks`` drawn from at every reset.
    (Its type is checked by the schema; these are the rules between keys.)"""
    active = config["active_tasks"]
    if active is None:
        return
    if active > len(config["tasks"]):
        raise ConfigError(f"active_tasks ({active}) is larger than the pool: 'tasks' lists {len(config['tasks'])} "
                          f"tasks; list at least {active} tasks or lower active_tasks")
    if config["algorithm"] == "scratch":
        raise ConfigError("active_tasks needs an algorithm that resets trajectories (scratch never does): "
                          "remove active_tasks or choose another algorithm")
    if config["heldout_fraction"] > 0:
        raise ConfigError("heldout_fraction (FOMAML's validation split) does not work with active_tasks yet: "
                          "set heldout_fraction=0 (fresh training batches) or remove active_tasks")
    interval = config["meta_interval"] or RULES[config["algorithm"]].meta_interval or config["reset_period"]
    if config["reset_period"] % interval:
        raise ConfigError(f"with active_tasks, reset_period ({config['reset_period']}) must be a multiple of "
                          f"meta_interval ({interval}), so that tasks change slots right after a meta-update")


def changed_keys(saved: dict, current: dict) -> list[str]:
    """Keys whose values differ between a checkpoint's config and the current one and would change phi.
    A key missing from the checkpoint's config (written before the key existed) counts as its default."""
    saved, current = _normalized(saved), _normalized(current)
    keys = (set(saved) | set(current)) - RESUME_SAFE_KEYS
    if current.get("meta_lr_schedule", "constant") != "constant":
        keys.add("steps")  # a decaying meta rate is a function of the total number of steps
    if saved.get("channels_last") is False and current.get("channels_last") == "auto":
        # a run from before 'auto' became the default: its checkpoint holds no layout choice, and a resumed
        # engine with 'auto' continues contiguous, as it ran (meta/measured.py)
        keys.discard("channels_last")
    return sorted(k for k in keys if to_dict(saved.get(k)) != to_dict(current.get(k)))


def initial_backbone(config: dict):
    """The backbone phi starts from: fresh weights of ``backbone`` at ``image_size`` (seeded by the caller), or the
    weights of ``init_from`` once they are checked to be that architecture at that size (one line when not)."""
    from ctinit.loading import load_init, resolve_init
    from ctinit.models import build_backbone

    backbone = build_backbone(config["backbone"], config["image_size"])
    spec = config.get("init_from")
    if not spec:
        return backbone
    source = resolve_init(spec)
    if source.scratch:
        raise ConfigError(f"init_from {spec}: fresh weights are what training starts from without init_from; remove it")
    loaded = load_init(source)
    ours, theirs = backbone.state_dict(), loaded.state_dict()
    differences = [f"{key} {getattr(loaded.config, key, None)} (the config says {getattr(backbone.config, key, None)})"
                   for key in ("model_type", "image_size", "num_channels")
                   if getattr(loaded.config, key, None) != getattr(backbone.config, key, None)]
    if not differences and set(ours) != set(theirs):
        differences = [f"other tensors ({len(set(ours) ^ set(theirs))} differ)"]
    if not differences:
        differences = [f"tensor '{k}' {tuple(theirs[k].shape)} (the config's is {tuple(v.shape)})"
                       for k, v in ours.items() if tuple(theirs[k].shape) != tuple(v.shape)][:1]
    if differences:
        made = dict(getattr(loaded.config, "ctinit", None) or {}).get("config", {}).get("backbone", loaded.config.model_type)
        raise ConfigError(f"init_from {spec}: a {made} backbone whose {differences[0]} does not fit backbone "
                          f"{config['backbone']} at image_size {config['image_size']}: set backbone and image_size to "
                          "the initialization's (`ctinit list` shows the zoo's) or choose another init_from")
    backbone.load_state_dict(theirs)
    return backbone


def record_init_from(made_with: dict, config: dict) -> None:
    """Name ``init_from`` in an initialization's ``ctinit`` entry the way a published card may: a zoo name or Hub id
    with its Hub repo (the card's ``base_model``), a local folder by its name only (never a path)."""
    spec = config.get("init_from")
    if not spec:
        return
    from ctinit import zoo
    from ctinit.loading import WEIGHTS_NAME, resolve_init

    source = resolve_init(spec)
    if source.zoo:
        entry = zoo.get(source.zoo)
        record = {"spec": zoo.PREFIX + source.zoo, "repo_id": entry.get("hub_id"), "revision": entry.get("revision"),
                  "sha256": entry.get("sha256")}
    elif source.repo_id:
        record = {"spec": spec, "repo_id": source.repo_id, "commit": source.commit}
    else:
        record = {"spec": source.path.resolve().name, "sha256": zoo.file_sha256(source.path / WEIGHTS_NAME)}
    made_with["init_from"] = record
    made_with.setdefault("config", {})["init_from"] = record["spec"]


def dump_config(config: dict, path: str | Path) -> None:
    write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))  # never half a config.yaml to resume against
