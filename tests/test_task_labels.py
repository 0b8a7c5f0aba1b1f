"""Labels a task or a model folder cannot be trusted with: test classes without training examples (an error naming
them), gaps in the labels (a warning naming them), and a class name given twice (in a task or a model's id2label)."""
import json
import logging

import numpy as np
import pytest

from ctinit.errors import CtinitError
from ctinit.loading import _check_labels
from ctinit.tasks import load_task


def _npz(path, y_train, y_test=None, classes=None):
    y_test = y_train if y_test is None else y_test
    arrays = {"x_train": np.zeros((len(y_train), 8, 8), np.uint8), "y_train": np.array(y_train),
              "x_test": np.zeros((len(y_test), 8, 8), np.uint8), "y_test": np.array(y_test)}
    if classes is not None:
        arrays["classes"] = np.array(classes)
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_test_classes_absent_from_training_are_named(tmp_path):
    spec = _npz(tmp_path / "t.npz", [0, 0, 1, 1], [0, 1, 2, 3], classes=["a", "b", "c", "d"])
    with pytest.raises(CtinitError, match="test classes 'c', 'd' have no training examples"):
        load_task(spec, image_size=8)


def test_gaps_in_the_labels_are_a_warning_naming_them(tmp_path, caplog):
    spec = _npz(tmp_path / "t.npz", [0, 0, 5, 5, 2, 2])
    with caplog.at_level(logging.WARNING, logger="ctinit.tasks"):
        task = load_task(spec, image_size=8)
    assert task.num_classes == 6
    assert "classes '1', '3', '4' have no examples (gaps in the labels)" in caplog.text


def test_a_class_name_given_twice_is_refused(tmp_path):
    spec = _npz(tmp_path / "t.npz", [0, 0, 1, 1], classes=["cat", "cat"])
    with pytest.raises(CtinitError, match="class name 'cat' is given to more than one class"):
        load_task(spec, image_size=8)


def test_a_model_whose_id2label_names_a_class_twice_is_refused(tmp_path):
    with pytest.raises(CtinitError, match="'cat' is given to more than one class"):
        _check_labels({"id2label": {"0": "cat", "1": "dog", "2": "cat"}}, tmp_path / "config.json")
