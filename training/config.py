"""Meta-training config: plain data (a dict), from a YAML recipe plus dotted ``key=value`` overrides."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from ctinit.errors import ConfigError
from ctinit.meta import RULES
from ctinit.meta.engine import EXECUTIONS
from ctinit.meta.optim import OptimizerSpec

#: Every key a recipe may set, with its default. The defaults are the paper's where it has one.
DEFAULTS: dict = {
    "algorithm": "cts",            # cts | reptile | fomaml-cts | fomaml | leap | mtl | scratch
    "backbone": "resnet20",        # a built-in backbone name (see ctinit.models.ARCHITECTURES)
    "image_size": 28,
    "tasks": [],                   # task specs: builtin:NAME, npz:PATH, folder:DIR, hf:NAME[:CONFIG]
    "steps": 1000,                 # global steps; every task takes one inner step per global step
    "batch_size": 128,
    "reset_period": 1000,          # K: trajectory length between resets to phi
    "meta_interval": None,         # steps between meta-updates; None: the algorithm's (1 for CTS, K for Reptile)
    "shift": None,                 # shift trajectories by each meta-update; None: the algorithm's
    "reset": "soft",               # soft: keep heads, BN statistics, optimizer state; hard: fresh optimizer state
    "reset_heads": False,          # with reset=hard, also re-initialize the task heads
    "inner_optimizer": {"name": "sgd", "lr": 1e-2, "momentum": 0.9, "weight_decay": 5e-4},
    "meta_optimizer": {"name": "sgd", "lr": 1e-2},
    "meta_lr_schedule": "constant",  # constant | cosine: meta_optimizer.lr decays to 0 over `steps` (per meta-step)
    "heldout_fraction": 0.0,       # FOMAML only: share of each task's train split kept aside for its held-out
                                   # gradient (0: a fresh training batch); per class, seeded
    "meta_exclude": [],            # regexes of backbone parameter names kept per task (not meta-learned)
    "augment": True,               # random crop with padding 4 (and flip where the task allows it)
    "max_train_per_class": None,   # limit each meta-train task to this many examples per class
    "seed": 0,
    "device": "auto",              # auto (what Accelerate picks) | cpu
    "mixed_precision": "no",       # no | bf16 | fp16: autocast for the inner steps; phi and meta-updates stay fp32
    "execution": "auto",           # auto | sequential | batched: tasks one after another or as one grouped program
    "max_nonfinite_steps": 10,     # stop when a task's inner loss is non-finite this many steps in a row
    "log_every": 50,
    "log_with": None,              # Accelerate trackers: tensorboard, trackio, wandb, all (a name or a list)
    "project_name": "ctinit",      # the trackers' project
    "checkpoint_every": 0,         # steps between checkpoints in OUT/checkpoints/ (0: only on SIGTERM/SIGINT)
    "keep_checkpoints": 3,         # how many of the newest checkpoints to keep
    # Meta-validation: every `every` steps (0: never) the main process fine-tunes a copy of phi on each task for
    # `steps` steps and logs the mean test accuracy; the best phi so far is exported to OUT/best/.
    "validation": {"every": 0, "tasks": [], "steps": 100, "batch_size": 64, "lr": 1e-3, "seed": 0},
}

META_LR_SCHEDULES = ("constant", "cosine")

#: Keys that may differ when a run is resumed: they do not change the trained phi. (Not ``execution``: batched and
#: sequential differ by floating-point rounding only, but a resumed run should end with the same phi.)
RESUME_SAFE_KEYS = {"steps", "log_every", "log_with", "project_name", "checkpoint_every", "keep_checkpoints",
                    "max_nonfinite_steps", "device", "validation"}


def _parse_value(text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(config: dict, item: str) -> None:
    """``a.b=value`` sets ``config['a']['b']``; the value is parsed as YAML (numbers, lists, null...)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not key=value (e.g. steps=200 or meta_optimizer.lr=0.1)")
    key, _, raw = item.partition("=")
    parts = key.strip().split(".")
    node = config
    for i, part in enumerate(parts[:-1]):
        if part not in node or not isinstance(node[part], dict):
            raise ConfigError(f"override '{item}': '{'.'.join(parts[:i + 1])}' is not a section of the config")
        node = node[part]
    node[parts[-1]] = _parse_value(raw)


RECIPES = Path(__file__).resolve().parent / "recipes"


def recipe_path(path: str | Path) -> Path:
    """A recipe file, or the name of a bundled recipe (``quickstart``, ``tiny``, ``paper``), which works from an
    installed wheel too."""
    path = Path(path)
    if path.is_file():
        return path
    bundled = RECIPES / f"{path.name}.yaml" if path.suffix == "" and len(path.parts) == 1 else None
    if bundled is not None and bundled.is_file():
        return bundled
    names = sorted(p.stem for p in RECIPES.glob("*.yaml"))
    raise ConfigError(f"{path}: no such recipe file; pass a YAML file or a bundled recipe name ({', '.join(names)})")


def load_config(path: str | Path | None, overrides: list[str] = ()) -> dict:
    """Defaults <- recipe file <- overrides, then validated. Unknown keys are an error."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = recipe_path(path)
        try:
            recipe = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
        if not isinstance(recipe, dict):
            raise ConfigError(f"{path}: a recipe is a YAML mapping of config keys")
        unknown = sorted(set(recipe) - set(DEFAULTS))
        if unknown:
            raise ConfigError(f"{path}: unknown config keys {unknown}; known keys: {sorted(DEFAULTS)}")
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
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown config keys {unknown}; known keys: {sorted(DEFAULTS)}")
    validate(config)
    return config


def validate(config: dict) -> None:
    if config["algorithm"] not in RULES:
        raise ConfigError(f"unknown algorithm '{config['algorithm']}': choose one of {', '.join(RULES)}")
    if not isinstance(config["tasks"], list) or not config["tasks"]:
        raise ConfigError("config 'tasks' must be a non-empty list of task specs (e.g. builtin:latin)")
    for key in ("steps", "batch_size", "reset_period", "image_size", "log_every", "keep_checkpoints",
                "max_nonfinite_steps"):
        if not isinstance(config[key], int) or isinstance(config[key], bool) or config[key] < 1:
            raise ConfigError(f"config '{key}' must be a positive integer, got {config[key]!r}")
    if not isinstance(config["checkpoint_every"], int) or config["checkpoint_every"] < 0:
        raise ConfigError(f"config 'checkpoint_every' must be an integer >= 0, got {config['checkpoint_every']!r}")
    if config["mixed_precision"] not in ("no", "bf16", "fp16"):
        raise ConfigError(f"config 'mixed_precision' must be no, bf16 or fp16, got {config['mixed_precision']!r}")
    if config["execution"] not in EXECUTIONS:
        raise ConfigError(f"config 'execution' must be {', '.join(EXECUTIONS[:-1])} or {EXECUTIONS[-1]}, got {config['execution']!r}")
    if config["device"] not in ("auto", "cpu"):
        raise ConfigError(f"config 'device' must be auto or cpu (GPUs are chosen by the launcher), got {config['device']!r}")
    interval = config["meta_interval"]
    if interval is not None and (not isinstance(interval, int) or interval < 1):
        raise ConfigError(f"config 'meta_interval' must be a positive integer or null, got {interval!r}")
    if interval is not None and interval > config["reset_period"] and config["algorithm"] != "mtl":
        raise ConfigError(f"meta_interval ({interval}) is larger than reset_period K ({config['reset_period']}): use meta_interval <= reset_period")
    if config["meta_lr_schedule"] not in META_LR_SCHEDULES:
        raise ConfigError(f"config 'meta_lr_schedule' must be {' or '.join(META_LR_SCHEDULES)}, got {config['meta_lr_schedule']!r}")
    fraction = config["heldout_fraction"]
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ConfigError(f"config 'heldout_fraction' must be a number in [0, 1), got {fraction!r}")
    if config["reset"] not in ("soft", "hard"):
        raise ConfigError(f"config 'reset' must be soft or hard, got {config['reset']!r}")
    validation = config["validation"]
    if not isinstance(validation, dict):
        raise ConfigError("config 'validation' must be a mapping like {every: 500, tasks: [builtin:thai]}")
    unknown = sorted(set(validation) - set(DEFAULTS["validation"]))
    if unknown:
        raise ConfigError(f"unknown validation keys {unknown}; known keys: {sorted(DEFAULTS['validation'])}")
    if not isinstance(validation["every"], int) or validation["every"] < 0:
        raise ConfigError(f"validation.every must be an integer >= 0, got {validation['every']!r}")
    if validation["every"] and (not isinstance(validation["tasks"], list) or not validation["tasks"]):
        raise ConfigError("validation.every is set but validation.tasks is empty: list the meta-validation task specs")
    for key in ("inner_optimizer", "meta_optimizer"):
        if not isinstance(config[key], dict):
            raise ConfigError(f"config '{key}' must be a mapping like {{name: sgd, lr: 0.01}}")
        OptimizerSpec.from_dict(config[key])


def changed_keys(saved: dict, current: dict) -> list[str]:
    """Keys whose values differ between a checkpoint's config and the current one and would change phi.
    A key missing from the checkpoint's config (written before the key existed) counts as its default."""
    keys = (set(saved) | set(current)) - RESUME_SAFE_KEYS
    if current.get("meta_lr_schedule", "constant") != "constant":
        keys.add("steps")  # a decaying meta rate is a function of the total number of steps
    return sorted(k for k in keys if saved.get(k, DEFAULTS.get(k)) != current.get(k))


def dump_config(config: dict, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config, sort_keys=False))
