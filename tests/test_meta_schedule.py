"""The trainer's meta-rate schedule and FOMAML's held-out split, against hand-computed values."""
import dataclasses
import math

import pytest
import torch

from ctinit.errors import ConfigError
from ctinit.meta import TrajectoryEngine, schedule
from ctinit.tasks import TaskData
from ctinit_training.config import DEFAULTS, changed_keys, validate
from ctinit_training.engine_setup import meta_lr_at, set_meta_lr
from ctinit_training.task_setup import heldout_split

from test_meta import CENTERS, Point, Scalar, backbone_only_loss, quadratic_engine, w_of_thetas


def test_cosine_schedule_values_by_hand():
    # steps = 4: (1 + cos(pi * (s - 1) / 4)) / 2 for s = 1..4 is 1, (1 + 1/sqrt 2)/2, 1/2, (1 - 1/sqrt 2)/2.
    r = 1 / math.sqrt(2)
    assert [meta_lr_at(0.2, "cosine", s, 4) for s in (1, 2, 3, 4)] == pytest.approx(
        [0.2, 0.1 * (1 + r), 0.1, 0.1 * (1 - r)])
    assert [meta_lr_at(0.2, "constant", s, 4) for s in (1, 2, 3, 4)] == [0.2] * 4
    with pytest.raises(ConfigError):
        meta_lr_at(0.2, "linear", 1, 4)


def test_one_cts_step_uses_the_scheduled_rate():
    # Base rate .4, cosine over 2 steps: step 1 at .4, step 2 at .4 (1 + cos(pi/2)) / 2 = .2.
    # step 1: theta = (.5, 1.5, 2.5); g = 1 - 1.5 = -.5; phi = 1 + .4 * .5 = 1.2; shift +.2 -> (.7, 1.7, 2.7)
    # step 2: theta = (.35, 1.85, 3.35); g = 1.2 - 1.85 = -.65; phi = 1.2 + .2 * .65 = 1.33; shift +.13
    config = validate({**DEFAULTS, "tasks": ["builtin:latin"], "meta_lr_schedule": "cosine",
                       "meta_optimizer": {"name": "sgd", "lr": 0.4}, "steps": 2})
    e = quadratic_engine("cts", reset_period=10, meta_lr=0.4)
    set_meta_lr(e, config, 1)
    e.step()
    assert e.phi[0].item() == pytest.approx(1.2)
    assert w_of_thetas(e) == pytest.approx([0.7, 1.7, 2.7])
    set_meta_lr(e, config, 2)
    assert e.meta_optimizer.param_groups[0]["lr"] == pytest.approx(0.2)
    e.step()
    assert e.phi[0].item() == pytest.approx(1.33)
    assert w_of_thetas(e) == pytest.approx([0.48, 1.98, 3.48])
    # constant leaves the optimizer's rate alone
    e2 = quadratic_engine("cts", reset_period=10, meta_lr=0.4)
    set_meta_lr(e2, dataclasses.replace(config, meta_lr_schedule="constant"), 2)
    assert e2.meta_optimizer.param_groups[0]["lr"] == 0.4


def test_config_keys_are_validated_and_a_cosine_run_cannot_change_steps_on_resume():
    config = {**DEFAULTS, "tasks": ["builtin:latin"]}
    assert validate(config).meta_lr_schedule == "constant"
    for key, bad in (("meta_lr_schedule", "linear"), ("heldout_fraction", 1.0), ("heldout_fraction", -0.1)):
        with pytest.raises(ConfigError, match=key):
            validate({**config, key: bad})
    cosine = {**config, "meta_lr_schedule": "cosine"}
    assert changed_keys(config, {**config, "steps": 5}) == []
    assert changed_keys(cosine, {**cosine, "steps": 5}) == ["steps"]


def test_k_and_the_meta_interval_are_resolved_and_checked_in_one_place():
    assert schedule("cts", 5) == (5, 1) and schedule("reptile", 5) == (5, 5) and schedule("mtl", 5) == (1, 1)
    assert schedule("reptile", 6, 2) == (6, 2)
    data = {**DEFAULTS, "tasks": ["builtin:latin"], "algorithm": "reptile", "reset_period": 2, "meta_interval": 3}
    with pytest.raises(ConfigError) as config_error:
        validate(data)
    with pytest.raises(ConfigError) as engine_error:
        quadratic_engine("reptile", reset_period=2, meta_interval=3)
    assert str(config_error.value) == str(engine_error.value)
    assert "meta_interval (3) is larger than reset_period K (2)" in str(config_error.value)
    assert validate({**data, "algorithm": "mtl", "meta_interval": None}).schedule == (1, 1)


def test_fomaml_k_takes_its_heldout_gradient_from_the_heldout_sources():
    # K = 2: theta = (.25, 1.75, 3.25) after two inner steps towards c = (0, 2, 4); the held-out batches are
    # centred at 1 for every task: grads theta - 1 = (-.75, .75, 2.25), mean .75 -> phi = 1 - .1 * .75 = .925.
    e = TrajectoryEngine(Point(), [Scalar() for _ in CENTERS], [(lambda c=c: torch.tensor(c)) for c in CENTERS],
                         rule="fomaml-k", reset_period=2, loss_fn=backbone_only_loss,
                         inner_optimizer={"name": "sgd", "lr": 0.5}, meta_optimizer={"name": "sgd", "lr": 0.1},
                         heldout_batches=[lambda: torch.tensor(1.0)] * 3)
    e.step()
    e.step()
    assert e.phi[0].item() == pytest.approx(0.925)
    assert w_of_thetas(e) == pytest.approx([0.925] * 3)


def test_fomaml_takes_its_heldout_gradient_after_every_inner_step_from_the_heldout_sources():
    # The held-out batches are centred at 1 for every task. step 1: theta = (.5, 1.5, 2.5), grads theta - 1 =
    # (-.5, .5, 1.5), mean .5 -> phi = .95; step 2: theta = (.25, 1.75, 3.25), grads (-.75, .75, 2.25), mean .75
    # -> phi = .95 - .075 = .875, then the reset (K = 2).
    e = TrajectoryEngine(Point(), [Scalar() for _ in CENTERS], [(lambda c=c: torch.tensor(c)) for c in CENTERS],
                         rule="fomaml", reset_period=2, loss_fn=backbone_only_loss,
                         inner_optimizer={"name": "sgd", "lr": 0.5}, meta_optimizer={"name": "sgd", "lr": 0.1},
                         heldout_batches=[lambda: torch.tensor(1.0)] * 3)
    e.step()
    assert e.phi[0].item() == pytest.approx(0.95)
    e.step()
    assert e.phi[0].item() == pytest.approx(0.875)
    assert w_of_thetas(e) == pytest.approx([0.875] * 3)
    with pytest.raises(ConfigError, match="held-out"):
        TrajectoryEngine(Point(), [Scalar()], [lambda: torch.tensor(0.0)], rule="fomaml",
                         loss_fn=backbone_only_loss, heldout_batches=[])


def test_heldout_split_is_per_class_seeded_and_disjoint():
    y = torch.tensor([0] * 10 + [1] * 5 + [2] * 3)  # (a class of 1 is refused: tests/test_validation_split.py)
    x = torch.arange(18, dtype=torch.uint8).view(18, 1, 1, 1)
    task = TaskData(name="t", spec="npz:t", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2], num_classes=3,
                    classes=["a", "b", "c"])
    train, held = heldout_split(task, 0.2, seed=3)
    # class 0: 2 of 10, class 1: round(1.0) = 1 of 5, class 2: at least 1 of 3
    held_counts = torch.bincount(held.y_train, minlength=3).tolist()
    assert held_counts[:2] == [2, 1] and held_counts[2] >= 1
    assert torch.bincount(train.y_train, minlength=3).tolist() == [8, 4, 3 - held_counts[2]]
    assert sorted(train.x_train.flatten().tolist() + held.x_train.flatten().tolist()) == list(range(18))
    again, _ = heldout_split(task, 0.2, seed=3)
    assert torch.equal(again.x_train, train.x_train)
    assert torch.equal(train.x_test, task.x_test)
