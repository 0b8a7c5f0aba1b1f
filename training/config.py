"""Meta-training config: a typed schema (:class:`TrainConfig`), read from a YAML recipe plus dotted ``key=value``
overrides, validated once before any work starts (:func:`validate`: every key, then the rules between keys), and
handed to the trainer's steps as that one typed object (``config.steps``, ``config.meta_optimizer.lr``). It becomes
plain data only where it is written: ``config.yaml``, a checkpoint's ``meta.json``, an export's ``ctinit`` entry.

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
from ctinit.execution import DEFAULT_PRECISION
from ctinit.execution.choices import COMPILE_MODES, EXECUTIONS
from ctinit.meta import RULES, schedule
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
    # autocast for the inner steps (phi and meta-updates stay fp32): no | bf16 | fp16 | auto (bf16 where the CPU has
    # it and the run measures it faster; ctinit/execution/precision.py, whose DEFAULT_PRECISION is the default)
    mixed_precision: Precision = DEFAULT_PRECISION
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

    @property
    def schedule(self) -> tuple[int, int]:
        """``(K, meta_interval)`` of this run, as the engine runs it (``ctinit.meta.schedule``: the algorithm's own
        where it fixes one, e.g. MTL's K of 1)."""
        return schedule(self.algorithm, self.reset_period, self.meta_interval)


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


def apply_override(data: dict, item: str) -> None:
    """``a.b=value`` sets ``data['a']['b']`` (a config's keys, as plain data); the value is parsed as YAML 1.2
    (numbers, lists, null...)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not key=value (e.g. steps=200 or meta_optimizer.lr=0.1)")
    key, _, raw = item.partition("=")
    parts = key.strip().split(".")
    node = data
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


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """Defaults <- recipe file <- overrides, then validated (:func:`validate`). Unknown keys are an error."""
    data = to_dict(TrainConfig())  # the keys as plain data until they are validated
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
        data.update(recipe)
        if validation is not None:
            if not isinstance(validation, dict):
                raise ConfigError(f"{path}: 'validation' must be a mapping like {{every: 500, tasks: [builtin:thai]}}")
            data["validation"].update(validation)
    for item in overrides:
        apply_override(data, item)
    if isinstance(data["validation"], dict):  # a partial mapping (validation={every: 10, ...}) keeps the defaults
        data["validation"] = {**DEFAULTS["validation"], **data["validation"]}
    check_known_keys(data)
    return validate(data)


def check_known_keys(data: dict, where: str = "") -> None:
    """Refuse keys that are not config keys, suggesting the closest (``step`` -> did you mean ``steps``?)."""
    unknown = sorted(str(k) for k in set(data) - set(DEFAULTS))
    if unknown:
        close = [m for k in unknown for m in difflib.get_close_matches(k, list(DEFAULTS), n=1, cutoff=0.6)]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"{where}unknown config keys {unknown}{hint}; known keys: {sorted(DEFAULTS)}")


def validate(data: dict) -> TrainConfig:
    """Check every key of ``data`` (types, ranges, choices) and the rules between keys; returns the typed config
    with every default filled in. Raises a one-line ConfigError."""
    data = dict(data)
    for key in ("inner_optimizer", "meta_optimizer"):  # optimizer names are case-insensitive
        if isinstance(data.get(key), dict) and isinstance(data[key].get("name"), str):
            data[key] = {**data[key], "name": data[key]["name"].lower()}
    typed = validate_schema(TrainConfig, data, "")
    if not typed.tasks:
        raise ConfigError("tasks: must be a non-empty list of task specs (e.g. [builtin:latin])")
    # K and the meta interval: the engine's own check (ctinit.meta.schedule), made here before any data is loaded;
    # then a run whose first meta-update would come after its last step is refused
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
    validate_pool(typed)
    return typed


def check_meta_updates(algorithm: str, meta_interval: int | None, reset_period: int, steps: int) -> None:
    """A run that would never meta-update (its first meta-update at step K, or ``meta_interval``, after the last
    step) is refused: it would export its random start labelled as meta-learned."""
    _, interval = schedule(algorithm, reset_period, meta_interval)
    if RULES[algorithm].direction == "none":
        return
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


def validate_pool(config: TrainConfig) -> None:
    """``active_tasks``: null (every task trains all the time) or a pool of ``tasks`` drawn from at every reset of
    the engine (every K of :attr:`TrainConfig.schedule`). (Its type is checked by the schema; these are the rules
    between keys.)"""
    active = config.active_tasks
    if active is None:
        return
    if active > len(config.tasks):
        raise ConfigError(f"active_tasks ({active}) is larger than the pool: 'tasks' lists {len(config.tasks)} "
                          f"tasks; list at least {active} tasks or lower active_tasks")
    if config.algorithm == "scratch":
        raise ConfigError("active_tasks needs an algorithm that resets trajectories (scratch never does): "
                          "remove active_tasks or choose another algorithm")
    if config.heldout_fraction > 0:
        raise ConfigError("heldout_fraction (FOMAML's validation split) does not work with active_tasks yet: "
                          "set heldout_fraction=0 (fresh training batches) or remove active_tasks")
    period, interval = config.schedule
    if period % interval:
        raise ConfigError(f"with active_tasks, reset_period ({period}) must be a multiple of "
                          f"meta_interval ({interval}), so that tasks change slots right after a meta-update")


def changed_keys(saved: dict, current: TrainConfig | dict) -> list[str]:
    """Keys whose values differ between a checkpoint's config (plain data, as saved) and the current one and would
    change phi. A key missing from the checkpoint's config (written before the key existed) counts as its default."""
    saved, current = _normalized(saved), _normalized(to_dict(current))
    keys = (set(saved) | set(current)) - RESUME_SAFE_KEYS
    if current.get("meta_lr_schedule", "constant") != "constant":
        keys.add("steps")  # a decaying meta rate is a function of the total number of steps
    if saved.get("channels_last") is False and current.get("channels_last") == "auto":
        # a run from before 'auto' became the default: its checkpoint holds no memory format choice, and a resumed
        # engine with 'auto' continues contiguous, as it ran (meta/measured.py)
        keys.discard("channels_last")
    return sorted(k for k in keys if to_dict(saved.get(k)) != to_dict(current.get(k)))


def initial_backbone(config: TrainConfig):
    """The backbone phi starts from: fresh weights of ``backbone`` at ``image_size`` (seeded by the caller), or the
    weights of ``init_from`` once they are checked to be that architecture at that size (one line when not)."""
    from ctinit.loading import load_init, resolve_init
    from ctinit.models import build_backbone

    backbone = build_backbone(config.backbone, config.image_size)
    spec = config.init_from
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
                          f"{config.backbone} at image_size {config.image_size}: set backbone and image_size to "
                          "the initialization's (`ctinit list` shows the zoo's) or choose another init_from")
    backbone.load_state_dict(theirs)
    return backbone


def record_init_from(made_with: dict, config: TrainConfig) -> None:
    """Name ``init_from`` in an initialization's ``ctinit`` entry the way a published card may: a zoo name or Hub id
    with its Hub repo (the card's ``base_model``), a local folder by its name only (never a path)."""
    spec = config.init_from
    if not spec:
        return
    from ctinit import zoo
    from ctinit.hubio.names import WEIGHTS_NAME
    from ctinit.loading import resolve_init

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


def dump_config(config: TrainConfig, path: str | Path) -> None:
    write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))  # never half a config.yaml to resume against
