"""The study's units of work, reused from the output folder: meta-training runs (OUT/runs/NAME, each with a
``study.json`` record written when it finishes) and fine-tuning results (one JSON line per finished result in
OUT/finetune.jsonl, keyed by the init's weights, the task, the seed and the recipe). A restarted study redoes only
what no record covers."""
from __future__ import annotations

import copy
import hashlib
import json
import sys
from pathlib import Path

from .config import FOMAML_HELDOUT_FRACTION


def say(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


#: Trainer keys that choose how a run executes, not what it trains (they change floating-point rounding only):
#: a finished run made with other values of these is reused.
EXECUTION_KEYS = ("channels_last", "compile", "execution")


def training_config(config: dict) -> dict:
    """What a meta-training run's result depends on: its config without the validation schedule and the
    execution choices (EXECUTION_KEYS)."""
    return {k: v for k, v in config.items() if k != "validation" and k not in EXECUTION_KEYS}


#: What every recorded fine-tuning result (and FOMAML's meta-training) was made with beyond the recipe: FinetuneConfig's
#: other defaults, run_evaluation's validation split and FOMAML's held-out fraction. The record fingerprints and the
#: ledger keys were made without them; ``changed_settings`` keeps that valid only while they are unchanged.
RECORDED_SETTINGS = {"finetune": {"milestones": [0.4, 0.7, 0.9], "gamma": 0.3, "augment": True, "hflip": None,
                                  "mixed_precision": "no", "optimizer_defaults": {"momentum": 0.0, "weight_decay": 0.0,
                                                                                  "betas": [0.9, 0.999], "nesterov": False},
                                  # options added later, at the values that reproduce the records (FinetuneConfig)
                                  "epochs": None, "schedule": "step", "warmup": 0.0, "label_smoothing": 0.0,
                                  "early_stop": 0},
                     "validation_fraction": 0.1, "fomaml_heldout_fraction": 0.1}


def finetune_config(**fields):
    """The study's fine-tuning config: FinetuneConfig's defaults with FIELDS, in exact fp32 whatever the library's
    default precision (bf16 on bf16 CPUs since issue 32; every recorded result was fine-tuned in fp32)."""
    from ctinit.finetune import FinetuneConfig

    return FinetuneConfig(**{"mixed_precision": "no", **fields})


def current_settings() -> dict:
    """RECORDED_SETTINGS' fields as the study's fine-tuning config sets them now."""
    import dataclasses
    import inspect

    from ctinit.evaluate import run_evaluation

    defaults = json.loads(json.dumps(dataclasses.asdict(finetune_config())))
    optimizer = {k: defaults["optimizer"][k] for k in ("momentum", "weight_decay", "betas", "nesterov")}
    kept = ("milestones", "gamma", "augment", "hflip", "mixed_precision", "epochs", "schedule", "warmup",
            "label_smoothing", "early_stop")
    return {"finetune": {**{k: defaults[k] for k in kept},
                         "optimizer_defaults": optimizer},
            "validation_fraction": inspect.signature(run_evaluation).parameters["validation_fraction"].default,
            "fomaml_heldout_fraction": FOMAML_HELDOUT_FRACTION}


def changed_settings() -> dict:
    """Empty while the settings are RECORDED_SETTINGS, else all of them: added to a record's fingerprint and a
    ledger key, so that a changed default never lets a result made under the old one be reused, while the keys
    of the results made before this check stay as they are."""
    now = current_settings()
    return {} if now == RECORDED_SETTINGS else now


def resumable(run_dir: Path, config: dict) -> bool:
    """Whether RUN_DIR holds an interrupted run of this very config with a checkpoint (a session stopped with
    SIGTERM writes one): continuing it gives the same weights as starting over, a run's worth of time sooner."""
    import yaml

    from ctinit_training.config import changed_keys

    saved_path, checkpoints = run_dir / "config.yaml", run_dir / "checkpoints"
    if not (saved_path.is_file() and checkpoints.is_dir() and any(checkpoints.glob("step-*[0-9]"))):
        return False
    try:
        saved = yaml.safe_load(saved_path.read_text())
    except Exception:  # noqa: BLE001 - an unreadable config.yaml: the run is started over
        return False
    return isinstance(saved, dict) and not changed_keys(saved, config)


def run_name(prefix: str, algorithm: str, K: int, schedule: str, lr: float, seed: int) -> str:
    return f"{prefix}{algorithm}-K{K}-{schedule}-lr{lr:.4g}-s{seed}"


def finetune_seeds(meta_seed: int, n: int) -> list[int]:
    """Each meta-seed's own fine-tuning seeds (distinct across meta-seeds)."""
    return [100 * meta_seed + j for j in range(n)]


def recipe_of(preset: dict, steps: int) -> dict:
    return {"steps": steps, "batch_size": preset["finetune_batch_size"], "optimizer": {"name": "adam", "lr": 1e-3}}


def paper_recipe(preset: dict) -> dict:
    """The official fine-tuning recipe (FinetuneConfig's milestones 40/70/90% and gamma 0.3 are the paper's)."""
    return {"steps": preset["paper_finetune_steps"], "batch_size": 128,
            "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 5e-4}}


class Workspace:
    """The output folder of one study and the shared setup (``base``) of its meta-training runs."""

    def __init__(self, out: Path, base: dict):
        self.out = Path(out)
        self.base = copy.deepcopy(base)
        self.out.mkdir(parents=True, exist_ok=True)
        self.ledger = self.out / "finetune.jsonl"
        self._finetuned: dict[str, float] | None = None
        self.counts = {"meta_train_runs": 0, "meta_train_reused": 0, "finetune_runs": 0, "finetune_reused": 0}

    # ------------------------------------------------------------------------------------------ meta-training
    def meta_train(self, name: str, algorithm: str, lr: float, tasks: list[str], steps: int, reset_period: int,
                   seed: int = 0, schedule: str = "constant", validation: dict | None = None) -> dict:
        """One meta-training run with the shared setup. Reused if OUT/runs/NAME holds a finished run of the same
        config (a run that recorded the validation curve also serves a request without one)."""
        from ctinit_training.config import DEFAULTS, validate
        from ctinit_training.meta_train import run

        config = copy.deepcopy(DEFAULTS)
        config.update(copy.deepcopy(self.base))
        config.update(algorithm=algorithm, tasks=list(tasks), steps=steps, reset_period=reset_period, seed=seed,
                      meta_lr_schedule=schedule)
        if algorithm.startswith("fomaml") and algorithm != "fomaml-cts":
            config["heldout_fraction"] = FOMAML_HELDOUT_FRACTION
        config["meta_optimizer"]["lr"] = lr
        if validation:
            config["validation"].update(validation)
        typed = validate(config)  # the trainer's typed config; the plain mapping names and records the run
        # Two configs can share a name (rates 1.0 and 1.0000000000000002 both print as lr1): the second one goes
        # to NAME-DIGEST, so that no finished run is ever overwritten by another config.
        without_validation = {k: v for k, v in config.items() if k != "validation"}
        digest = hashlib.sha256(json.dumps(without_validation, sort_keys=True).encode()).hexdigest()[:8]
        candidates = [self.out / "runs" / name, self.out / "runs" / f"{name}-{digest}"]
        for run_dir in candidates:
            record = run_dir / "study.json"
            if not record.is_file():
                continue
            saved = json.loads(record.read_text())
            same = training_config(saved["config"]) == training_config(config)
            if same and (not validation or saved["config"]["validation"] == config["validation"]) \
                    and (run_dir / "init" / "model.safetensors").is_file():
                say(f"  {name}: reusing {run_dir}")
                self.counts["meta_train_reused"] += 1
                return saved
        run_dir = candidates[0] if not (candidates[0] / "study.json").is_file() else candidates[1]
        say(f"  {name}: meta-training {algorithm}, meta lr {lr:g} {schedule}, {len(tasks)} tasks x {steps} steps, "
            f"K {reset_period}, seed {seed}")
        resume = resumable(run_dir, config)
        if resume:
            say(f"  {name}: continuing the interrupted run from its last checkpoint (the trainer resumes exactly)")
        # not resumable: a stale or partial run of another config, deleted
        result = run(typed, run_dir, progress=False, resume=resume, overwrite=not resume)
        curve = []
        metrics = run_dir / "metrics.jsonl"
        if metrics.is_file():
            for line in metrics.read_text().splitlines():
                entry = json.loads(line) if line.strip() else {}
                if "validation_accuracy" in entry:
                    curve.append([entry["step"], entry["validation_accuracy"]])
        saved = {"config": config, "init": result["init"], "seconds": result["seconds"], "validation_curve": curve}
        (run_dir / "study.json").write_text(json.dumps(saved, indent=1))
        self.counts["meta_train_runs"] += 1
        say(f"  {name}: {result['seconds']:.0f} s")
        return saved

    # ------------------------------------------------------------------------------------------ fine-tuning
    def _init_key(self, init: str) -> str:
        """What a fine-tuning result depends on of its init: the weights (scratch: only the architecture)."""
        if init.startswith("scratch:"):
            return f"scratch:{self.base['backbone']}:{self.base['image_size']}"
        return hashlib.sha256((Path(init) / "model.safetensors").read_bytes()).hexdigest()[:20]

    def _records(self) -> dict[str, float]:
        if self._finetuned is None:
            self._finetuned = {}
            if self.ledger.is_file():
                for line in self.ledger.read_text().splitlines():
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError:  # a line cut short by a kill: that result is simply redone
                        continue
                    self._finetuned[entry["key"]] = entry["accuracy"]
        return self._finetuned

    def finetune_grid(self, inits: dict[str, str], tasks: list[str], seeds: list[int], recipe: dict,
                      per_class: int | None = None) -> dict:
        """Test accuracy of every init on every task and seed: ``{label: {(task, seed): accuracy}}``. ``recipe``:
        steps, batch_size, optimizer. Each init's results are appended to OUT/finetune.jsonl as it finishes."""
        from ctinit.evaluate import run_evaluation

        records = self._records()

        changed = changed_settings()

        def key(init, task, seed):
            return json.dumps([self._init_key(init), task, seed, recipe, per_class, *([changed] if changed else [])],
                              sort_keys=True)

        config = finetune_config(steps=recipe["steps"], batch_size=recipe["batch_size"],
                                 optimizer=dict(recipe["optimizer"]), eval_every=recipe["steps"], progress=False)
        for label, init in inits.items():
            missing = sorted({t for t in tasks for s in seeds if key(init, t, s) not in records})
            if not missing:
                self.counts["finetune_reused"] += len(tasks) * len(seeds)
                continue
            results = run_evaluation([init], missing, seeds=seeds, config=config, max_train_per_class=per_class,
                                     progress=False)
            with self.ledger.open("a") as f:
                for r in results["runs"]:
                    records[key(init, r["task"], r["seed"])] = r["test_accuracy"]
                    f.write(json.dumps({"key": key(init, r["task"], r["seed"]), "accuracy": r["test_accuracy"]}) + "\n")
            self.counts["finetune_runs"] += len(results["runs"])
        return {label: {(t, s): records[key(init, t, s)] for t in tasks for s in seeds} for label, init in inits.items()}

    def evaluate_by_meta_seed(self, inits: dict[int, dict[str, str]], tasks: list[str] | dict[int, list[str]],
                              n_seeds: int, recipe: dict, per_class: int | None = None) -> dict:
        """``{meta_seed: {label: init}}`` -> ``{label: {(meta_seed, task, finetune_seed): accuracy}}``; ``tasks``
        is one list for every meta-seed or ``{meta_seed: its tasks}``."""
        acc: dict = {}
        for m, by_label in sorted(inits.items()):
            mine = tasks[m] if isinstance(tasks, dict) else tasks
            grid = self.finetune_grid(by_label, mine, finetune_seeds(m, n_seeds), recipe, per_class)
            for label, values in grid.items():
                for (t, s), v in values.items():
                    acc.setdefault(label, {})[(m, t, s)] = v
        return acc

    def initial_accuracy(self, tasks: list[str], steps: int, seed: int) -> float:
        """Held-out accuracy of a meta-training run's starting point (step 0 of its convergence curve)."""
        import torch

        from ctinit.models import build_backbone
        from ctinit.tasks import load_task
        from ctinit_training.config import ValidationConfig
        from ctinit_training.validation import meta_validate

        torch.manual_seed(seed)  # what training.meta_train.run does before it builds the backbone
        backbone = build_backbone(self.base["backbone"], self.base["image_size"])
        loaded = [load_task(spec, image_size=self.base["image_size"], seed=0) for spec in tasks]
        return meta_validate(backbone, loaded, ValidationConfig(steps=steps, batch_size=64, lr=1e-3, seed=0))


def jsonable(acc: dict) -> list:
    return [[m, t, s, v] for (m, t, s), v in sorted(acc.items())]
