"""ctinit.tasks.subsets: one seeded stratified routine behind the hold-out, the validation split and the limited-data
subsets; and the one output-folder check behind the model folder and the results folder."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ctinit.errors import ConfigError, TaskSpecError, exception_line, one_line
from ctinit.tasks import TaskData
from ctinit.tasks.subsets import (balanced_total, fraction_per_class, holdout_indices, limit_train_samples,
                                  stratified_indices)


def _task(labels) -> TaskData:
    y = torch.tensor(labels, dtype=torch.int64)
    x = torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    classes = [str(c) for c in range(int(y.max()) + 1)]
    return TaskData("t", "npz:t.npz", x, y, x[:1], y[:1], len(classes), classes)


def test_balanced_total_gives_every_class_the_same_share_and_a_small_class_all_it_has():
    rng = np.random.default_rng(0)
    assert balanced_total(7)(np.array([1, 5, 5]), rng).tolist() == [1, 3, 3]
    eight = balanced_total(8)(np.array([1, 5, 5]), rng)
    assert eight.sum() == 8 and sorted(eight.tolist()) == [1, 3, 4]
    assert balanced_total(100)(np.array([1, 5, 5]), rng).tolist() == [1, 5, 5]
    task = _task([0] * 2 + [1] * 10 + [2] * 10)
    small = limit_train_samples(task, 8, seed=3)
    assert np.bincount(small.y_train.numpy()).tolist() == [2, 3, 3]
    assert torch.equal(small.y_train, limit_train_samples(task, 8, seed=3).y_train)


def test_one_shuffle_per_class_so_smaller_subsets_nest_in_larger_ones():
    labels = np.repeat(np.arange(4), 9)
    task = _task(labels.tolist())
    two, three = task.subset_train(2, seed=5), task.subset_train(3, seed=5)
    ids = lambda t: set(t.x_train[:, 0, 0, 0].tolist())  # noqa: E731 - the first pixel is the example's index
    assert ids(two) < ids(three) and np.bincount(three.y_train.numpy()).tolist() == [3] * 4
    # the validation split is the same draw: its held part of 3 per class is exactly subset_train(3)
    train, held = task.split_train(3 / 9, seed=5)
    assert ids(held) == ids(three) and not ids(held) & ids(train) and len(ids(train)) == 24
    assert stratified_indices(labels, fraction_per_class(3 / 9), 5).tolist() == sorted(ids(three))


def test_holdout_is_per_class_and_falls_back_to_all_examples_when_every_class_has_one():
    train, test = holdout_indices(np.array([0, 0, 0, 0, 1, 1, 2]), 0.5, seed=1)
    assert sorted(np.array([0, 0, 0, 0, 1, 1, 2])[test].tolist()) == [0, 0, 1]  # class 2 has one: it stays in train
    assert sorted(train.tolist() + test.tolist()) == list(range(7))
    train, test = holdout_indices(np.arange(5), 0.4, seed=1)
    assert len(test) == 2 and len(train) == 3 and not set(test) & set(train)


def test_exactly_per_class_names_the_short_class():
    task = _task([0] * 5 + [1] * 2)
    task.classes = ["cat", "dog"]
    with pytest.raises(TaskSpecError, match=r"'dog' has 2; use per_class <= 2"):
        task.subset_train(3, seed=0)


def test_one_output_folder_check_for_a_model_and_for_results(tmp_path):
    from ctinit.models.finetuned_folder import check_model_out_dir
    from ctinit.report import check_results_dir

    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for check in (check_model_out_dir, check_results_dir):
        with pytest.raises(ConfigError, match="is a file, not a folder"):
            check(a_file)
        with pytest.raises(ConfigError, match="is not writable"):
            check(a_file / "sub")
        assert check(tmp_path / "new") == tmp_path / "new"
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "results.json").write_text("{}")
    (theirs / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="holds results.json that ctinit evaluate did not write"):
        check_results_dir(theirs)
    with pytest.raises(ConfigError, match="holds config.json that ctinit did not save"):
        check_model_out_dir(theirs, overwrite=True)


def test_one_line_keeps_spaces_and_joins_lines():
    assert one_line("a \n\n b\tc  d\u2028e ") == "a b c  d e"
    assert one_line("x" * 10, limit=5) == "xx..."
    assert exception_line(OSError("disk\nfull")) == "OSError: disk full"
    assert exception_line(KeyError()) == "KeyError"
