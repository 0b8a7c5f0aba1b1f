"""The long-trajectory protocol (issue 29): the same total inner steps S per task at every trajectory length K of
``reset_periods`` (spanning 25x), CTS and Reptile at every K, MTL and scratch once, two fine-tuning budgets.

Rates are chosen ONCE per (algorithm, K) on a dedicated tuning meta-seed (``tuning_meta_seed``, its own seeded
split; no claim uses it): every rate of the grid meta-trains on its meta-train tasks and is scored by fine-tuning
on its validation tasks (never a meta-test task); a rate winning at an end of the grid adds the next half-decade
beyond it (``max_extensions`` times at most). The choices are written to ``tuning-FINGERPRINT.json`` in the
records folder before any claim meta-seed runs, and every claim run reads them from there.

Recording is per meta-training run: each finished run's small results (its meta-validation curve, its validation
scores or its fine-tuning accuracies under every budget) go to ``RECORDS/run-LABEL-FINGERPRINT.json``, so a run
restarted on a fresh machine from the repository loses at most the run in progress.

Several processes can run the same command on one output folder (one per free core: each run is one thread): a
process claims a run before it makes it (a lock under OUT/claims, released by the OS if the process dies), skips
the runs another process holds, and comes back for them; each waits only where nothing else is left to do (the
tuning's last candidates before the choice, and the last claim runs)."""
from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Callable

from .clock import Clock
from .config import StudyConfig
from .ratio import made_by, split_tasks
from .runs import Workspace, finetune_config, finetune_seeds, say

RECORD_VERSION = 1
#: How long a process waits, when every run left is held by another process, before it looks again.
WAIT_SECONDS = 30
#: Preset keys that do not change what one run computes (which runs there are, how claims are judged).
NOT_PER_RUN = ("meta_seeds", "equivalence_margin", "flat_margin", "reach_fraction", "rate_grid", "max_extensions",
               "algorithms", "k_algorithms", "reset_periods", "tuning_meta_seed")


def fingerprint(config: StudyConfig) -> str:
    """What one run's record depends on: the preset's per-run settings, the trainer's full config (execution
    choices left out), the suite and changed fine-tuning defaults; a record under another fingerprint is not used."""
    from ctinit_training.config import DEFAULTS

    from .runs import changed_settings, training_config

    changed = changed_settings()
    what = {"version": RECORD_VERSION, "protocol": "long", "suite": config.suite,
            "preset": {k: v for k, v in config.preset.items() if k not in NOT_PER_RUN},
            "trainer": training_config({**DEFAULTS, **config.base}), **({"settings": changed} if changed else {})}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def pairs(config: StudyConfig) -> list[tuple[str, int]]:
    """Every (algorithm, K) meta-trained: the K algorithms at every K, the others (MTL: K has no meaning) at the
    first K only."""
    ks = config.preset["reset_periods"]
    return [(a, k) for a in config.algorithms for k in (ks if a in config.preset["k_algorithms"] else ks[:1])]


def next_rate(lr: float, direction: int) -> float:
    """Half a decade below (-1) or above (+1) ``lr`` on the grid of 10^(n/2), 3 significant digits."""
    return float(f"{10 ** ((round(2 * math.log10(lr)) + direction) / 2):.3g}")


def run_label(role: str, algorithm: str, K: int, lr: float | None, m: int) -> str:
    return f"{role}-{algorithm}" + (f"-K{K}-lr{lr:g}" if lr is not None else "") + f"-m{m}"


class Records:
    """The records folder: one small JSON per finished run, and the tuning choices."""

    def __init__(self, config: StudyConfig):
        self.dir, self.fp = config.records_dir, fingerprint(config)

    def path(self, label: str) -> Path:
        return self.dir / f"run-{label}-{self.fp}.json"

    def tuning_path(self) -> Path:
        return self.dir / f"tuning-{self.fp}.json"

    def load(self, path: Path, split: dict) -> dict | None:
        if not path.is_file():
            return None
        record = json.loads(path.read_text())
        if record.get("fingerprint") != self.fp or record.get("split") != split:
            say(f"  {path.name}: does not match this run's config or split; redone")
            return None
        return record

    def save(self, path: Path, record: dict) -> None:
        from ctinit.atomic import write_text

        self.dir.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps({**record, "fingerprint": self.fp}, indent=1) + "\n")


def applies(budget: dict, algorithm: str) -> bool:
    """Whether a fine-tuning budget is run for ``algorithm``'s inits (``algorithms``: which; absent: every one)."""
    return algorithm in budget.get("algorithms", [algorithm])


def finetune(init: str, tasks: list[str], seeds: list[int], budget: dict, batch_size: int) -> list[list]:
    """Test accuracy of ``init`` fine-tuned on every task and seed under ``budget`` (steps, per_class, curve):
    ``[[task, seed, accuracy], ...]``, with ``budget["curve"]`` each row also carries the validation-split curve
    ([[step, accuracy], ...], 20 points)."""
    from ctinit.evaluate import run_evaluation

    steps, curve = budget["steps"], bool(budget.get("curve"))
    config = finetune_config(steps=steps, batch_size=batch_size, optimizer={"name": "adam", "lr": 1e-3},
                             eval_every=max(1, steps // 20) if curve else steps, progress=False)
    results = run_evaluation([init], tasks, seeds=seeds, config=config, max_train_per_class=budget.get("per_class"),
                             progress=False)
    return [[r["task"], r["seed"], r["test_accuracy"], *([r["curve"]] if curve else [])] for r in results["runs"]]


class LongStudy:
    """One long-preset run: the tuning meta-seed's choices, then every claim meta-seed, run by run."""

    def __init__(self, config: StudyConfig, ws: Workspace, clock: Clock):
        self.config, self.ws, self.clock, self.preset = config, ws, clock, config.preset
        self.records = Records(config)
        self.splits = {m: split_tasks(config.suite, m) for m in [self.preset["tuning_meta_seed"], *self.preset["meta_seeds"]]}
        self.runs: dict[str, dict] = {}  # label -> record, for every finished run
        self.trained_init: str | None = None
        self.announced: set[tuple] = set()  # grid extensions already logged (choose() repeats while it waits)

    def meta_train(self, label: str, algorithm: str, K: int, lr: float, m: int, curve: bool) -> dict:
        """One run on meta-seed m's meta-train tasks; with ``curve``, its meta-validation curve on m's validation
        tasks (what claim (d) reads; it costs a short fine-tuning every ``validation_every`` steps)."""
        split = self.splits[m]
        validation = {"every": self.preset["validation_every"], "tasks": split["validation"],
                      "steps": self.preset["validation_steps"]} if curve else None
        saved = self.ws.meta_train(label, algorithm, lr, split["meta_train"], self.preset["steps"], K, m,
                                   validation=validation)
        self.trained_init = saved["init"]
        return saved

    def run(self, label: str, m: int, work: Callable[[], dict]) -> dict | None:
        """A run's record: reused from the records folder, else made by ``work`` and recorded at once; None while
        another process holds the run's claim (it is making it)."""
        from ctinit.atomic import FolderLock
        from ctinit.errors import ConfigError

        if label in self.runs:
            return self.runs[label]
        path = self.records.path(label)
        record = self.records.load(path, self.splits[m])
        if record is None:
            claim = FolderLock(self.ws.out / "claims" / label)
            try:
                claim.acquire()
            except ConfigError:
                return None
            try:
                record = self.records.load(path, self.splits[m])  # finished by another process since the look above
                if record is None:
                    started = (time.perf_counter(), time.process_time())
                    record = {"label": label, "meta_seed": m, "split": self.splits[m], **work()}
                    record["made"] = {**made_by(started),
                                      "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                    self.records.save(path, record)
                    self.ws.counts["runs_recorded"] = self.ws.counts.get("runs_recorded", 0) + 1
            finally:
                claim.release()
        else:
            self.ws.counts["runs_reused"] = self.ws.counts.get("runs_reused", 0) + 1
        self.runs[label] = record
        return record

    def wait(self, held: int) -> None:
        say(f"  waiting for {held} run(s) that another process is making")
        time.sleep(WAIT_SECONDS)

    # -------------------------------------------------------------------------------------------- tuning
    def tuning_run(self, algorithm: str, K: int, lr: float) -> dict | None:
        """One candidate on the tuning meta-seed: meta-trained on its meta-train tasks, scored by fine-tuning on
        its validation tasks (the meta-seed's first fine-tuning seed); no meta-test task is read."""
        m = self.preset["tuning_meta_seed"]
        split = self.splits[m]

        def work():
            saved = self.meta_train(run_label("tuning", algorithm, K, lr, m), algorithm, K, lr, m, curve=False)
            rows = finetune(saved["init"], split["validation"], finetune_seeds(m, 1),
                            {"steps": self.preset["selection_finetune_steps"]}, self.preset["finetune_batch_size"])
            return {"role": "tuning", "algorithm": algorithm, "K": K, "lr": lr,
                    "validation_curve": saved["validation_curve"], "selection": rows,
                    "score": sum(r[2] for r in rows) / len(rows)}

        return self.run(run_label("tuning", algorithm, K, lr, m), m, work)

    def choose(self, algorithm: str, K: int) -> tuple[dict | None, int]:
        """The rate for (algorithm, K): the grid's best on the validation tasks (ties: the smaller rate), the grid
        grown by half a decade beyond a winning end, ``max_extensions`` times at most. With the number of
        candidates held by other processes: while there are any, the choice is None (the others are made first)."""
        grid = sorted(self.preset["rate_grid"][algorithm])
        scores: dict[float, float] = {}
        extensions = 0
        while True:
            held = 0
            for lr in grid:
                if lr not in scores:
                    record = self.tuning_run(algorithm, K, lr)
                    if record is None:
                        held += 1
                    else:
                        scores[lr] = record["score"]
            if held:
                return None, held
            best = max(grid, key=lambda lr: (scores[lr], -lr))
            if best not in (grid[0], grid[-1]) or extensions >= self.preset["max_extensions"]:
                break
            added = next_rate(best, -1 if best == grid[0] else +1)
            grid = sorted([*grid, added])
            extensions += 1
            if (algorithm, K, added) not in self.announced:
                self.announced.add((algorithm, K, added))
                say(f"  {algorithm} K {K}: {best:g} won at the grid's end; adding {added:g}")
        return {"scores": [[lr, scores[lr]] for lr in grid], "grid": grid, "chosen_lr": best,
                "extensions": extensions, "at_edge": best in (grid[0], grid[-1])}, 0

    def tuning(self) -> dict:
        """Every (algorithm, K)'s choice: read from the tuning record, or made and written there first."""
        m = self.preset["tuning_meta_seed"]
        grids = {a: self.preset["rate_grid"][a] for a in self.config.algorithms}
        record = self.records.load(self.records.tuning_path(), self.splits[m])
        if record is not None and (record["rate_grid"], record["max_extensions"]) != (grids, self.preset["max_extensions"]):
            say(f"  {self.records.tuning_path().name}: made with other rate grids; the choice is made again")
            record = None
        if record is None:
            record = self.choose_all(grids)
        else:
            say(f"[tuning] reusing {self.records.tuning_path().name}")
            self.reload_candidates(record)
        return record

    def reload_candidates(self, record: dict) -> None:
        """The tuning candidates' records, for the curves in results.json."""
        m = self.preset["tuning_meta_seed"]
        for a, k in pairs(self.config):
            for lr, _ in record["choices"][a][str(k)]["scores"]:
                path = self.records.path(run_label("tuning", a, k, lr, m))
                if path.is_file():
                    self.runs[run_label("tuning", a, k, lr, m)] = json.loads(path.read_text())

    def choose_all(self, grids: dict) -> dict:
        """Every (algorithm, K)'s choice made and written to the tuning record (or read from it, where another
        process wrote it first)."""
        m = self.preset["tuning_meta_seed"]
        split = self.splits[m]
        say(f"[tuning] meta-seed {m}: validation {', '.join(split['validation'])}; {len(split['meta_train'])} "
            f"meta-train tasks x {self.preset['steps']} steps; (algorithm, K): {pairs(self.config)}")
        self.clock.start("tuning")
        choices: dict = {}
        while True:
            held = 0
            for a, k in pairs(self.config):
                if str(k) in choices.get(a, {}):
                    continue
                c, waiting = self.choose(a, k)
                held += waiting
                if c is not None:
                    choices.setdefault(a, {})[str(k)] = c
                    say(f"  {a} K {k}: chose {c['chosen_lr']:g} from {c['grid']}"
                        + (" (AT THE GRID'S EDGE)" if c["at_edge"] else ""))
            if not held:
                break
            if not self.scratch_while_waiting():
                self.wait(held)
        self.clock.stop()
        written = self.records.load(self.records.tuning_path(), split)
        if written is not None:  # another process finished the same choice first: its record stands
            return written
        record = {"meta_seed": m, "split": split, "rate_grid": grids, "max_extensions": self.preset["max_extensions"],
                  "choices": choices,
                  "basis": "each rate meta-trained on the tuning meta-seed's meta-train tasks and scored after "
                           f"{self.preset['selection_finetune_steps']} fine-tuning steps on its validation tasks",
                  "written_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.records.save(self.records.tuning_path(), record)
        say(f"[tuning] wrote {self.records.tuning_path()}")
        return record

    def scratch_while_waiting(self) -> bool:
        """Instead of waiting for another process's tuning candidates: one of scratch's claim runs (scratch takes
        no rate, so it need not wait for the choice). False when none is left that no other process holds."""
        for m in self.preset["meta_seeds"]:
            label = run_label("claim", "scratch", 0, None, m)
            if label not in self.runs and not self.records.path(label).is_file() and self.scratch_run(m) is not None:
                return True
        return False

    # -------------------------------------------------------------------------------------------- claims
    def claim_run(self, algorithm: str, K: int, lr: float, m: int) -> dict | None:
        split, budgets = self.splits[m], self.preset["finetune_budgets"]
        seeds = finetune_seeds(m, self.preset["finetune_seeds_per_meta_seed"])
        label = run_label("claim", algorithm, K, lr, m)

        def work():
            saved = self.meta_train(label, algorithm, K, lr, m, curve=algorithm in self.preset["k_algorithms"])
            return {"role": "claim", "algorithm": algorithm, "K": K, "lr": lr,
                    "validation_curve": saved["validation_curve"],
                    "finetune": {name: finetune(saved["init"], split["meta_test"], seeds, b,
                                                self.preset["finetune_batch_size"])
                                 for name, b in budgets.items() if applies(b, algorithm)}}

        return self.run(label, m, work)

    def scratch_run(self, m: int) -> dict | None:
        split, budgets = self.splits[m], self.preset["finetune_budgets"]
        seeds = finetune_seeds(m, self.preset["finetune_seeds_per_meta_seed"])

        def work():
            init = f"scratch:{self.architecture_init()}"
            return {"role": "claim", "algorithm": "scratch", "K": None, "lr": None,
                    "finetune": {name: finetune(init, split["meta_test"], seeds, b, self.preset["finetune_batch_size"])
                                 for name, b in budgets.items() if applies(b, "scratch")}}

        return self.run(run_label("claim", "scratch", 0, None, m), m, work)

    def architecture_init(self) -> str:
        """An init folder of this study's architecture (scratch takes only its architecture, not its weights)."""
        if self.trained_init:
            return self.trained_init
        found = sorted(self.ws.out.glob("runs/*/init/model.safetensors"))
        if found:
            return str(found[0].parent)
        return self.config.base["backbone"]  # scratch:ARCH (built-in backbone at its own default size)

    def from_records(self) -> dict:
        """The result of what is recorded (``--from-records``): the tuning and every claim meta-seed whose runs are
        all recorded; no run is made."""
        from .config import StudyError
        from .long_report import claim_label, long_result

        path = self.records.tuning_path()
        record = self.records.load(path, self.splits[self.preset["tuning_meta_seed"]])
        if record is None:
            raise StudyError(f"--from-records: no tuning record {path.name} in {self.records.dir} for this config; "
                             "run the study (without --from-records) first")
        self.reload_candidates(record)
        choices, done = record["choices"], []
        for m in self.preset["meta_seeds"]:
            labels = [claim_label(choices, a, k, m) for a, k in [*pairs(self.config), ("scratch", None)]]
            found = [self.records.load(self.records.path(label), self.splits[m]) for label in labels]
            if None not in found:
                self.runs.update(zip(labels, found))
                done.append(m)
        result = long_result(self.config, choices, self.runs, done)
        result["progress"] = {"meta_seeds_done": len(done), "meta_seeds_planned": len(self.preset["meta_seeds"]),
                              "runs_reused": len(self.runs)}
        return result

    def claim_meta_seed(self, m: int, choices: dict) -> int:
        """Meta-seed m's claim runs, each reused, made here, or left to the process that holds it: how many are
        held elsewhere (0: the meta-seed is done)."""
        made = [self.claim_run(a, k, choices[a][str(k)]["chosen_lr"], m) for a, k in pairs(self.config)]
        made.append(self.scratch_run(m))
        return made.count(None)

    def run_all(self, publish: Callable[[dict], None]) -> dict:
        from .long_report import long_result

        choices = self.tuning()["choices"]
        seeds = self.preset["meta_seeds"]
        done: list[int] = []

        def finished(m: int) -> dict:
            done.append(m)
            result = long_result(self.config, choices, self.runs, sorted(done))
            result["progress"] = {"meta_seeds_done": len(done), "meta_seeds_planned": len(seeds), **self.ws.counts}
            publish(result)
            return result

        result = long_result(self.config, choices, self.runs, [])
        result["progress"] = {"meta_seeds_done": 0, "meta_seeds_planned": len(seeds), **self.ws.counts}
        publish(result)
        self.clock.start("claims")
        while True:
            held = 0
            for i, m in enumerate(seeds):
                # an earlier meta-seed left to another process may be done by now: published before going on
                for earlier in [e for e in seeds[:i] if e not in done]:
                    if not self.claim_meta_seed(earlier, choices):
                        result = finished(earlier)
                if m in done:
                    continue
                split = self.splits[m]
                say(f"[meta-seed {m}: {i + 1}/{len(seeds)}] meta-test {', '.join(split['meta_test'])}; validation "
                    f"{', '.join(split['validation'])}")
                waiting = self.claim_meta_seed(m, choices)
                if waiting:  # another process is making these; this one goes on to the next meta-seed
                    held += waiting
                    continue
                result = finished(m)
            if len(done) == len(seeds):
                break
            self.wait(held)
        self.clock.stop()
        return result


def run_long(config: StudyConfig, ws: Workspace, clock: Clock, publish: Callable[[dict], None]) -> dict:
    study = LongStudy(config, ws, clock)
    return study.from_records() if config.from_records else study.run_all(publish)
