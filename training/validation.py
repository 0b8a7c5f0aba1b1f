"""Meta-validation: every ``validation.every`` steps, a copy of phi briefly fine-tuned on each validation task; the
best phi so far is exported to ``OUT/best`` (main process)."""
from __future__ import annotations

import copy
import logging

from ctinit.loading import save_init
from ctinit.schema import to_dict

from .checkpoint import check_finite_phi
from .config import TrainConfig, ValidationConfig
from .rundir import RunDir

log = logging.getLogger("ctinit.meta_train")


def meta_validate(phi_module, tasks, validation: ValidationConfig, channels_last="auto") -> float:
    """Mean test accuracy of a copy of phi briefly fine-tuned on each meta-validation task; ``channels_last``: the
    run's own setting (a run fixed to one memory format for reproducibility validates in it too)."""
    from ctinit.finetune import FinetuneConfig, finetune

    # exact fp32 whatever the default precision: the validations of a run are compared with each other, so each one
    # measures phi alike (a measured precision choice could differ between them)
    config = FinetuneConfig(steps=validation.steps, batch_size=validation.batch_size,
                            optimizer={"name": "adam", "lr": validation.lr}, seed=validation.seed, progress=False,
                            channels_last=channels_last, mixed_precision="no")
    device = next(phi_module.parameters()).device
    accuracies = [finetune(copy.deepcopy(phi_module), task, config, device=device).test_accuracy for task in tasks]
    return sum(accuracies) / len(accuracies)


class Validator:
    """When due, validates phi (main process), keeps the best accuracy and its step, and exports the best phi."""

    def __init__(self, config: TrainConfig, tasks: list, run: RunDir, best: dict, is_main: bool, comm, accelerator):
        self.config, self.validation, self.tasks, self.run = config, config.validation, tasks, run
        self.best, self.is_main, self.comm, self.accelerator = best, is_main, comm, accelerator

    def due(self, step: int) -> bool:
        return bool(self.validation.every) and step % self.validation.every == 0

    def __call__(self, engine, step: int) -> None:
        if self.is_main:
            accuracy = meta_validate(engine.phi_module, self.tasks, self.validation,
                                     self.config.channels_last)
            improved = accuracy > self.best["accuracy"]
            if improved:
                self.best = {"accuracy": accuracy, "step": step}
                check_finite_phi(engine, self.run, step)
                with self.run.staged("best") as tmp:  # never a half-written best/
                    save_init(engine.phi_module, tmp, {"algorithm": self.config.algorithm, "steps": step,
                                                       "validation": {**to_dict(self.validation), **self.best}})
            self.run.append_metrics({"step": step, "validation_accuracy": accuracy, "best": self.best})
            log.info("step %d meta-validation accuracy %.4f%s", step, accuracy, " (best so far: wrote OUT/best)"
                     if improved else f" (best {self.best['accuracy']:.4f} at step {self.best['step']})")
            if self.config.log_with:
                self.accelerator.log({"validation_accuracy": accuracy}, step=step)
        self.comm.barrier()
