"""The study's settings: algorithms, rate grids, task suites, presets, and the one config object every stage reads
(no stage reads a module global that a run could change)."""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

ALGORITHMS = ("cts", "reptile", "fomaml-cts", "fomaml", "leap", "mtl")
BASELINES = ("reptile", "fomaml-cts", "fomaml", "leap", "mtl", "scratch")
BETA_ALGORITHMS = ("cts", "reptile", "mtl")
K_SWEEP_ALGORITHMS = ("cts", "reptile")
#: Centre of each algorithm's meta learning-rate grid (SGD). CTS moves phi towards the trajectories every step
#: (0.1 is the quickstart's value); Reptile updates once per K steps (its outer step size is 1 in Nichol et al.);
#: FOMAML (a held-out gradient after every inner step), FOMAML-CTS and MTL step along a mean gradient every step.
#: Leap: centred at 10 because the first study's grid, centred at 1, selected its top end (31.6); this engine
#: averages Leap's per-segment terms over the K segments of a trajectory where the official code sums them, so a
#: rate r there is r * K here.
LR_CENTRE = {"cts": 0.1, "reptile": 1.0, "fomaml-cts": 0.1, "fomaml": 0.1, "leap": 10.0, "mtl": 0.1}
LR_FACTORS = (10 ** -0.5, 1.0, 10 ** 0.5)
SCHEDULES = ("constant", "cosine")
#: The official code's meta rate, the same for every algorithm.
PAPER_META_LR = 1e-2
#: FOMAML's held-out gradient comes from a validation split of each meta-train task (as in the official code):
#: this share of every class of the task's training split, seeded (the trainer's ``heldout_fraction``).
FOMAML_HELDOUT_FRACTION = 0.1


def paper_meta_lr(algorithm: str, K: int) -> float:
    """The official rate in this engine's scale: Leap's direction here is the official (summed over the K segments
    of a trajectory) one divided by K, so the official 1e-2 is 1e-2 * K here; every other rule has the same scale."""
    return PAPER_META_LR * K if algorithm == "leap" else PAPER_META_LR


#: The shared setup of every meta-training run (the quickstart recipe's backbone, batch and inner optimizer).
BASE = {
    "backbone": "convnet4-32", "image_size": 28, "batch_size": 32,
    "inner_optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
    "meta_optimizer": {"name": "sgd", "lr": 0.1}, "reset": "soft", "augment": True, "log_every": 50,
    # exact fp32 whatever the trainer's default (bf16 on bf16 CPUs since issue 32): the records were made so
    "mixed_precision": "no",
}

#: Task suites: meta-train tasks, meta-test tasks, and which meta-train tasks the staged presets' search holds out
#: for scoring. ``ratio_split``: how many tasks each meta-seed of the ratio protocol draws as meta-test and as
#: validation tasks (the rest, with ``pinned_meta_train``, are its meta-train tasks); ``meta_test_pool`` (default:
#: every task not pinned) the tasks it may draw as meta-test tasks. Adding a suite is one entry.
SUITES = {
    "glyph": {
        "meta_train": ["builtin:fashion-mnist", "builtin:latin", "builtin:greek", "builtin:cyrillic",
                       "builtin:armenian", "builtin:hebrew", "builtin:devanagari", "builtin:arabic"],
        "meta_test": ["builtin:georgian", "builtin:thai", "builtin:ethiopic", "builtin:bengali"],
        "search_validation": ["builtin:devanagari", "builtin:arabic"],
        # 11 scripts drawn from; Fashion-MNIST (not a script) always meta-trains: 3 meta-test, 2 validation, 7 train.
        "pinned_meta_train": ["builtin:fashion-mnist"],
        "ratio_split": {"meta_test": 3, "validation": 2},
    },
    # The heterogeneous colour suite (32x32 RGB; its meta-test domains have no task in meta-train).
    "colour": {
        "meta_train": ["builtin:colour-emoji-faces", "builtin:colour-emoji-objects", "builtin:colour-icons-actions",
                       "builtin:colour-icons-places", "builtin:colour-fashion", "builtin:colour-latin"],
        "meta_test": ["builtin:colour-cards", "builtin:colour-mahjong", "builtin:colour-textures"],
        "search_validation": ["builtin:colour-emoji-objects", "builtin:colour-icons-places"],
        "image_size": 32,
        "pinned_meta_train": [],
        # The ratio protocol's meta-test tasks are many-shot (>= 100 training images per class): only these three
        # are; the other six (16-80 per class) are drawn as validation and meta-train tasks only.
        "meta_test_pool": ["builtin:colour-cards", "builtin:colour-mahjong", "builtin:colour-textures"],
        "ratio_split": {"meta_test": 2, "validation": 1},
    },
}

#: The staged presets (stages: search, tuned protocol, paper protocol, beta robustness, K sweep, convergence).
#: ``full`` is the CPU study that fits about two hours on 2 idle cores per suite (200 meta-steps: the search's
#: 50-odd candidates and ~100 meta-training runs are what cost). ``large`` is the first study's scale (1000
#: meta-steps, K 100; about 10 CPU-hours). The official fine-tuning recipe's shape (Adam 1e-3, weight decay 5e-4,
#: batch 128, lr x0.3 at 40/70/90%) is kept everywhere; ``full`` runs it for 200 steps instead of 1000.
PRESETS = {
    "full": {
        "steps": 200, "reset_period": 20, "search_steps": 200, "search_finetune_steps": 100,
        "max_extensions": 2, "meta_seeds": [0, 1, 2], "finetune_seeds_per_meta_seed": 1,
        "finetune_steps": 200, "finetune_batch_size": 64, "limited_per_class": 20, "limited_finetune_steps": 100,
        "snapshot_every": 50, "snapshot_finetune_steps": 100, "k_sweep_ks": [5, 20, 200],
        "beta_grid": [0.01, 0.0316, 0.1, 0.316, 1.0], "paper_finetune_steps": 200,
        "paper_finetune_seeds_per_meta_seed": 1,
    },
    "large": {
        "steps": 1000, "reset_period": 100, "search_steps": 1000, "search_finetune_steps": 150,
        "max_extensions": 2, "meta_seeds": [0, 1, 2], "finetune_seeds_per_meta_seed": 2,
        "finetune_steps": 200, "finetune_batch_size": 64, "limited_per_class": 20, "limited_finetune_steps": 100,
        "snapshot_every": 100, "snapshot_finetune_steps": 100, "k_sweep_ks": [10, 100, 1000],
        "beta_grid": [0.01, 0.0316, 0.1, 0.316, 1.0], "paper_finetune_steps": 1000,
        "paper_finetune_seeds_per_meta_seed": 1,
    },
    "quick": {
        "steps": 32, "reset_period": 8, "search_steps": 32, "search_finetune_steps": 20,
        "max_extensions": 1, "meta_seeds": [0, 1], "finetune_seeds_per_meta_seed": 1,
        "finetune_steps": 40, "finetune_batch_size": 64, "limited_per_class": 20, "limited_finetune_steps": 20,
        "snapshot_every": 8, "snapshot_finetune_steps": 20, "k_sweep_ks": [8, 32],
        "beta_grid": [0.01, 0.1, 1.0], "paper_finetune_steps": 40,
        "paper_finetune_seeds_per_meta_seed": 1,
    },
}

#: The ratio protocol (issue 20): the paper's steps / K >= 100 (2000 steps, K 20: 100 trajectories per task);
#: every meta-seed draws its own meta-train / validation / meta-test split of the suite and chooses each
#: algorithm's rate from ``rate_grid`` on its validation tasks, so the choice's noise is inside the interval.
#: ``optional_algorithms`` join with ``--optional-algorithms``. The grid is fixed here, before any run.
RATIO_PRESETS = {
    "ratio": {
        "steps": 2000, "reset_period": 20, "meta_seeds": list(range(10)), "finetune_seeds_per_meta_seed": 2,
        "algorithms": ["cts", "reptile", "mtl"], "optional_algorithms": ["fomaml", "fomaml-cts", "leap"],
        "rate_grid": {"cts": [0.0316, 0.1, 0.316], "reptile": [0.1, 0.316, 1.0], "mtl": [0.0316, 0.1, 0.316],
                      "fomaml": [0.01, 0.0316, 0.1], "fomaml-cts": [0.0316, 0.1, 0.316], "leap": [3.16, 10.0, 31.6]},
        "selection_finetune_steps": 100, "finetune_steps": 200, "finetune_batch_size": 64,
        "limited_per_class": 20, "limited_finetune_steps": 100, "equivalence_margin": 0.02,
    },
}

#: The long-trajectory protocol (issue 29, ``benchmarks/study/long.py``): the same ``steps`` (total inner steps S
#: per task) at every K of ``reset_periods`` (spanning 25x), CTS and Reptile at every K, MTL and scratch once. The
#: rates are chosen ONCE per (algorithm, K) on ``tuning_meta_seed`` (its own seeded split, scored on its validation
#: tasks; no claim uses it), the grid grown by half a decade beyond a winning end (``max_extensions`` times at most),
#: and written down before the claim meta-seeds run. ``finetune_budgets``: name -> steps and examples per class
#: (None: all data); ``curve``: log the fine-tuning validation curve (the convergence evidence for scratch);
#: ``algorithms``: the inits it is run for (absent: all; the long one skips Reptile to fit the CPU budget).
#: ``reach_fraction``: claim (d)'s target, this share of the lower of CTS's and Reptile's best meta-validation
#: accuracy in the meta-seed (so both reach it).
LONG_PRESETS = {
    "long": {
        "steps": 5000, "reset_periods": [20, 100, 500], "tuning_meta_seed": 100, "meta_seeds": list(range(6)),
        "finetune_seeds_per_meta_seed": 2, "algorithms": ["cts", "reptile", "mtl"], "k_algorithms": ["cts", "reptile"],
        "rate_grid": {"cts": [0.0316, 0.1, 0.316], "reptile": [0.316, 1.0, 3.16], "mtl": [0.0316, 0.1, 0.316]},
        "max_extensions": 2, "selection_finetune_steps": 100, "finetune_batch_size": 64,
        "finetune_budgets": {"short": {"steps": 200, "per_class": None},
                             "short_20": {"steps": 100, "per_class": 20},
                             "long_20": {"steps": 1000, "per_class": 20, "curve": True,
                                         "algorithms": ["cts", "mtl", "scratch"]}},
        "validation_every": 250, "validation_steps": 50, "reach_fraction": 0.95,
        "equivalence_margin": 0.02, "flat_margin": 0.01,
    },
}

PRESET_NAMES = (*PRESETS, *RATIO_PRESETS, *LONG_PRESETS)


class StudyError(ValueError):
    """A bad option: the command line prints it as one line and exits 2."""


@dataclass(frozen=True)
class StudyConfig:
    """Everything a run of the study reads. ``protocol`` is ``staged`` (PRESETS) or ``ratio`` (RATIO_PRESETS)."""

    preset_name: str
    preset: dict
    suite_name: str
    suite: dict
    out: Path
    base: dict = field(default_factory=lambda: copy.deepcopy(BASE))
    algorithms: tuple = ALGORITHMS
    baselines: tuple = BASELINES
    beta_algorithms: tuple = BETA_ALGORITHMS
    schedules: tuple = SCHEDULES
    lr_factors: tuple = LR_FACTORS
    command: str = ""
    #: The ratio protocol's finished meta-seeds (one small JSON each; default OUT/meta_seeds): read to reuse them,
    #: written as each finishes. Pointed at a folder in the repository, a run resumes on a fresh machine.
    records: Path | None = None
    #: The long protocol only: write the results of the meta-seeds whose runs are all recorded, and make no run.
    from_records: bool = False

    @property
    def records_dir(self) -> Path:
        default = "records" if self.protocol == "long" else "meta_seeds"
        return Path(self.records) if self.records else self.out / default

    @property
    def protocol(self) -> str:
        return "ratio" if self.preset_name in RATIO_PRESETS else "long" if self.preset_name in LONG_PRESETS \
            else "staged"


def check_long_preset(preset: dict, suite_name: str, suite: dict, optional_algorithms: bool) -> tuple:
    """The long preset's algorithms, after checking its values (a bad one raises StudyError: one line)."""
    if optional_algorithms:
        raise StudyError("--optional-algorithms: the long preset runs CTS, Reptile and MTL only (FOMAML-CTS and "
                         "Leap do not fit its CPU budget); use --preset ratio for them")
    algorithms = tuple(preset["algorithms"])
    if algorithms[:1] != ("cts",):
        raise StudyError(f"algorithms must start with cts (every claim compares CTS with the others), got {algorithms}")
    missing = [a for a in algorithms if a not in preset["rate_grid"]]
    if missing:
        raise StudyError(f"rate_grid has no rates for {', '.join(missing)}: give them with --set rate_grid=...")
    ks = preset["reset_periods"]
    if len(ks) < 2 or sorted(set(ks)) != ks or ks[-1] > preset["steps"]:
        raise StudyError(f"reset_periods {ks}: give 2 or more increasing K values, none above steps ({preset['steps']})")
    if not set(preset["k_algorithms"]) <= set(algorithms) or "cts" not in preset["k_algorithms"]:
        raise StudyError(f"k_algorithms {preset['k_algorithms']}: must include cts and be among {list(algorithms)}")
    if preset["tuning_meta_seed"] in preset["meta_seeds"]:
        raise StudyError(f"tuning_meta_seed {preset['tuning_meta_seed']} is also a claim meta-seed: pick another")
    if len(preset["meta_seeds"]) < 2:
        raise StudyError("meta_seeds: give 2 or more (the intervals are over meta-seeds)")
    if not preset["finetune_budgets"] or any(b["steps"] < 1 for b in preset["finetune_budgets"].values()):
        raise StudyError("finetune_budgets: give one or more, each with steps >= 1")
    split = suite["ratio_split"]
    if len(suite["meta_train"]) + len(suite["meta_test"]) - split["meta_test"] - split["validation"] < 2:
        raise StudyError(f"suite {suite_name}: too few tasks left for meta-training after its ratio_split")
    return algorithms


def build_config(preset_name: str, suite_name: str, overrides: list[str], out: str | None = None,
                 backbone: str | None = None, image_size: int | None = None, optional_algorithms: bool = False,
                 command: str = "", records: str | None = None) -> StudyConfig:
    """The config of one run from the command line's choices; a bad choice raises StudyError (one line)."""
    presets = {**PRESETS, **RATIO_PRESETS, **LONG_PRESETS}
    if preset_name not in presets:
        raise StudyError(f"--preset {preset_name}: unknown preset; known: {', '.join(presets)}")
    preset = copy.deepcopy(presets[preset_name])
    for item in overrides:
        key, _, value = item.partition("=")
        if key not in preset:
            raise StudyError(f"--set {item}: unknown key; known: {', '.join(preset)}")
        try:
            preset[key] = json.loads(value)
        except json.JSONDecodeError:
            raise StudyError(f"--set {item}: the value is not JSON (e.g. 2000, [10, 100], 0.1)") from None
    if suite_name not in SUITES:
        raise StudyError(f"--suite {suite_name}: unknown suite; known: {', '.join(SUITES)}")
    suite = copy.deepcopy(SUITES[suite_name])
    if "limited_per_class" in suite and not any(i.startswith("limited_per_class=") for i in overrides):
        preset["limited_per_class"] = suite["limited_per_class"]
    base = copy.deepcopy(BASE)
    if backbone:
        base["backbone"] = backbone
    if image_size or suite.get("image_size"):
        base["image_size"] = image_size or suite["image_size"]
    algorithms = ALGORITHMS
    if preset_name in RATIO_PRESETS:
        algorithms = tuple(preset["algorithms"] + (preset["optional_algorithms"] if optional_algorithms else []))
        if algorithms[:1] != ("cts",):
            raise StudyError(f"algorithms must start with cts (every claim compares CTS with the others), got {algorithms}")
        missing = [a for a in algorithms if a not in preset["rate_grid"]]
        if missing:
            raise StudyError(f"rate_grid has no rates for {', '.join(missing)}: give them with --set rate_grid=...")
        split = suite["ratio_split"]
        if len(suite["meta_train"]) + len(suite["meta_test"]) - split["meta_test"] - split["validation"] < 2:
            raise StudyError(f"suite {suite_name}: too few tasks left for meta-training after its ratio_split")
    elif preset_name in LONG_PRESETS:
        algorithms = check_long_preset(preset, suite_name, suite, optional_algorithms)
    elif records:
        raise StudyError(f"--records applies to the ratio and long presets "
                         f"({', '.join((*RATIO_PRESETS, *LONG_PRESETS))}), not to --preset {preset_name}")
    elif optional_algorithms:
        raise StudyError(f"--optional-algorithms applies to the ratio presets ({', '.join(RATIO_PRESETS)}), "
                         f"not to --preset {preset_name}")
    elif preset["reset_period"] not in preset["k_sweep_ks"]:
        raise StudyError("k_sweep_ks must contain reset_period (the tuned protocol's K)")
    default_out = f"runs/study_{preset_name}{'' if suite_name == 'glyph' else '_' + suite_name}"
    return StudyConfig(preset_name=preset_name, preset=preset, suite_name=suite_name, suite=suite,
                       out=Path(out or default_out), base=base, algorithms=algorithms,
                       baselines=BASELINES if preset_name in PRESETS else (*algorithms[1:], "scratch"),
                       command=command, records=Path(records) if records else None)
