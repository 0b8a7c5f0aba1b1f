"""Tests of ctinit.tasks.specs: task spec strings -> in-memory uint8 NCHW task data."""
from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from ctinit.errors import TaskSpecError
from ctinit.tasks.hf import split_hf as _split_hf
from ctinit.tasks.data import TaskData
from ctinit.tasks.specs import load_task, parse_spec


# ------------------------------------------------------------------------------------------------
# helpers


def _images(n, h=8, w=8, c=None, start=0):
    """uint8 images whose first pixel encodes the example index (so splits can be compared)."""
    shape = (n, h, w) if c is None else (n, h, w, c)
    rng = np.random.default_rng(start + 1)
    x = rng.integers(0, 256, size=shape, dtype=np.uint8)
    x.reshape(n, -1)[:, 0] = (np.arange(n) + start) % 256
    return x


def _labels(n, k=3):
    return np.arange(n, dtype=np.int64) % k


def _save(path, **arrays):
    np.savez(path, **arrays)
    return path


def _assert_spec_error(exc_info, *needles):
    err = exc_info.value
    assert isinstance(err, TaskSpecError)
    msg = str(err)
    assert "\n" not in msg and "\r" not in msg, msg
    assert msg.strip(), "empty message"
    for needle in needles:
        assert str(needle) in msg, f"{needle!r} not in {msg!r}"
    return msg


def _png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _first_pixel_ids(x):
    """The index encoded into pixel [0,0] of channel 0 (for unresized grayscale tasks)."""
    return set(x[:, 0, 0, 0].tolist())


class _PickleBomb:
    """Creates a marker file when unpickled: proves that loading never unpickles."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ------------------------------------------------------------------------------------------------
# parse_spec


def test_parse_spec_kinds():
    assert parse_spec("npz:/tmp/a.npz") == ("npz", "/tmp/a.npz")
    assert parse_spec("folder:data/x") == ("folder", "data/x")
    assert parse_spec("hf:mnist") == ("hf", "mnist")
    assert parse_spec("hf:emnist:letters") == ("hf", "emnist:letters")
    assert parse_spec("builtin:digits") == ("builtin", "digits")
    assert parse_spec("NPZ:C:/data/a.npz") == ("npz", "C:/data/a.npz")


@pytest.mark.parametrize("spec", ["foo", "foo:bar", "mnist", "", "zip:/a/b.zip"])
def test_parse_spec_unknown(spec):
    with pytest.raises(TaskSpecError) as ei:
        parse_spec(spec)
    _assert_spec_error(ei, repr(spec), "npz:PATH", "folder:DIR", "hf:NAME[:CONFIG]", "builtin:NAME")


@pytest.mark.parametrize("spec", ["npz:", "folder:  ", "hf:", "builtin:"])
def test_parse_spec_missing_target(spec):
    with pytest.raises(TaskSpecError) as ei:
        load_task(spec)
    _assert_spec_error(ei, repr(spec))


def test_split_hf(tmp_path):
    assert _split_hf("mnist") == ("mnist", None)
    assert _split_hf("emnist:letters") == ("emnist", "letters")
    assert _split_hf("user/ds:cfg") == ("user/ds", "cfg")
    odd = tmp_path / "a:b"
    odd.mkdir()
    assert _split_hf(str(odd)) == (str(odd), None)  # existing path holding ':' stays whole
    assert _split_hf(f"{odd}:cfg") == (str(odd), "cfg")


# ------------------------------------------------------------------------------------------------
# npz


def test_npz_four_arrays(tmp_path):
    p = _save(tmp_path / "mytask.npz", x_train=_images(12, 28, 28), y_train=_labels(12),
              x_test=_images(6, 28, 28), y_test=_labels(6))
    td = load_task(f"npz:{p}")
    assert isinstance(td, TaskData)
    assert td.name == "mytask" and td.spec == f"npz:{p}"
    assert td.x_train.shape == (12, 1, 28, 28) and td.x_train.dtype == torch.uint8
    assert td.x_test.shape == (6, 1, 28, 28) and td.x_test.dtype == torch.uint8
    assert td.y_train.dtype == torch.int64 and td.y_train.tolist() == _labels(12).tolist()
    assert td.y_test.tolist() == _labels(6).tolist()
    assert td.num_classes == 3 and td.classes == ["0", "1", "2"] and td.hflip is False  # untagged: not flip-safe (issue 35)
    assert torch.equal(td.x_train[:, 0], torch.from_numpy(_images(12, 28, 28)))  # untouched pixels
    assert td.x_train.is_contiguous() and td.x_train.device.type == "cpu"
    assert "mytask" in repr(td)


def test_npz_holdout_deterministic(tmp_path):
    n = 30
    p = _save(tmp_path / "xy.npz", x=_images(n, 28, 28), y=_labels(n))
    a = load_task(f"npz:{p}", seed=3)
    b = load_task(f"npz:{p}", seed=3)
    c = load_task(f"npz:{p}", seed=4)
    for td in (a, b, c):
        assert td.x_train.shape == (24, 1, 28, 28) and td.x_test.shape == (6, 1, 28, 28)
        assert td.y_train.shape == (24,) and td.y_test.shape == (6,)
        # stratified: 20% of each class of 10
        assert torch.bincount(td.y_test, minlength=3).tolist() == [2, 2, 2]
        train_ids, test_ids = _first_pixel_ids(td.x_train), _first_pixel_ids(td.x_test)
        assert train_ids.isdisjoint(test_ids) and train_ids | test_ids == set(range(n))
        # labels follow their images
        ids = td.x_test[:, 0, 0, 0].long()
        assert torch.equal(td.y_test, ids % 3)
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_train, b.y_train)
    assert _first_pixel_ids(a.x_test) != _first_pixel_ids(c.x_test)
    d = load_task(f"npz:{p}", seed=3, holdout=0.5)
    assert d.x_test.shape[0] == 15


def test_npz_holdout_plain_when_classes_are_singletons(tmp_path):
    p = _save(tmp_path / "single.npz", x=_images(10), y=np.arange(10))
    td = load_task(f"npz:{p}", image_size=8)
    assert td.x_test.shape[0] == 2 and td.x_train.shape[0] == 8 and td.num_classes == 10


def test_npz_grayscale_channel_dim(tmp_path):
    x = _images(6, 28, 28, c=1)
    p = _save(tmp_path / "g1.npz", x=x, y=_labels(6, 2))
    td = load_task(f"npz:{p}", holdout=0.5)
    assert td.x_train.shape[1:] == (1, 28, 28)


def test_npz_rgb(tmp_path):
    x = _images(4, 28, 28, c=3)
    p = _save(tmp_path / "rgb.npz", x_train=x, y_train=_labels(4, 2), x_test=x, y_test=_labels(4, 2))
    td = load_task(f"npz:{p}")
    assert td.x_train.shape == (4, 3, 28, 28)
    assert torch.equal(td.x_train, torch.from_numpy(x).permute(0, 3, 1, 2))


def test_npz_rgba_drops_alpha(tmp_path):
    x = _images(4, 28, 28, c=4)
    p = _save(tmp_path / "rgba.npz", x_train=x, y_train=_labels(4, 2), x_test=x, y_test=_labels(4, 2))
    td = load_task(f"npz:{p}")
    assert td.x_test.shape == (4, 3, 28, 28)
    assert torch.equal(td.x_test, torch.from_numpy(x[..., :3]).permute(0, 3, 1, 2))


def test_npz_resize(tmp_path):
    x = _images(5, 32, 32, c=3)
    x[0] = 100  # a constant image stays constant
    p = _save(tmp_path / "big.npz", x_train=x, y_train=_labels(5, 2), x_test=x[:2, :, :, 0], y_test=_labels(2, 2))
    with pytest.raises(TaskSpecError) as ei:  # train RGB but test grayscale: shapes differ
        load_task(f"npz:{p}")
    _assert_spec_error(ei, "big.npz")
    p = _save(tmp_path / "big.npz", x_train=x, y_train=_labels(5, 2), x_test=x[:2], y_test=_labels(2, 2))
    td = load_task(f"npz:{p}", image_size=28)
    assert td.x_train.shape == (5, 3, 28, 28) and td.x_train.dtype == torch.uint8
    assert td.x_test.shape == (2, 3, 28, 28) and td.x_test.dtype == torch.uint8
    assert (td.x_train[0] == 100).all()
    up = load_task(f"npz:{p}", image_size=40)
    assert up.x_train.shape == (5, 3, 40, 40) and (up.x_train[0] == 100).all()


def test_npz_resize_chunks(tmp_path, monkeypatch):
    import ctinit.tasks.raw as specs

    x = _images(7, 16, 16)
    p = _save(tmp_path / "chunks.npz", x=x, y=_labels(7, 2))
    whole = load_task(f"npz:{p}", image_size=10)
    monkeypatch.setattr(specs, "RESIZE_CHUNK_ELEMENTS", 1)  # one image per chunk
    chunked = load_task(f"npz:{p}", image_size=10)
    assert torch.equal(whole.x_train, chunked.x_train) and torch.equal(whole.x_test, chunked.x_test)


def test_npz_classes_and_hflip(tmp_path):
    p = _save(tmp_path / "named.npz", x=_images(8), y=_labels(8, 2), classes=np.array(["A", "B", "C"]),
              hflip=np.array(False))
    td = load_task(f"npz:{p}", image_size=8, holdout=0.25)
    assert td.classes == ["A", "B", "C"] and td.num_classes == 3 and td.hflip is False


def test_to_device_copy(tmp_path):
    p = _save(tmp_path / "dev.npz", x=_images(8), y=_labels(8, 2))
    td = load_task(f"npz:{p}", image_size=8, device=torch.device("cpu"))
    moved = td.to("meta")
    assert moved is not td and moved.x_train.device.type == "meta" and moved.y_test.device.type == "meta"
    assert td.x_train.device.type == "cpu"
    assert moved.classes == td.classes and moved.name == td.name


# ------------------------------------------------------------------------------------------------
# subset_train


def test_subset_train(tmp_path):
    n = 40
    p = _save(tmp_path / "sub.npz", x_train=_images(n), y_train=_labels(n, 4), x_test=_images(4), y_test=_labels(4, 4))
    td = load_task(f"npz:{p}", image_size=8)
    a = td.subset_train(3, seed=0)
    b = td.subset_train(3, seed=0)
    c = td.subset_train(3, seed=1)
    assert a.x_train.shape == (12, 1, 8, 8)
    assert torch.bincount(a.y_train, minlength=4).tolist() == [3, 3, 3, 3]
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.x_train, c.x_train)
    assert torch.equal(a.x_test, td.x_test) and a.num_classes == 4
    assert torch.equal(a.y_train, a.x_train[:, 0, 0, 0].long() % 4)  # labels follow their images
    assert td.x_train.shape[0] == n  # original untouched
    full = td.subset_train(10, seed=0)
    assert full.x_train.shape[0] == n
    with pytest.raises(TaskSpecError) as ei:
        td.subset_train(11, seed=0)
    _assert_spec_error(ei, "sub", "11")
    with pytest.raises(TaskSpecError) as ei:
        td.subset_train(0, seed=0)
    _assert_spec_error(ei, "sub")


# ------------------------------------------------------------------------------------------------
# npz: bad inputs


def test_npz_object_array_is_refused_not_unpickled(tmp_path):
    marker = tmp_path / "UNPICKLED"
    bomb = np.empty(1, dtype=object)
    bomb[0] = _PickleBomb(marker)
    p = _save(tmp_path / "evil.npz", x=bomb, y=np.array([0]))
    with pytest.raises(TaskSpecError) as ei:
        load_task(f"npz:{p}")
    _assert_spec_error(ei, "evil.npz")
    assert ei.value.__cause__ is not None
    assert not marker.exists()

    # a pickle file renamed to .npz is refused too
    import pickle

    pk = tmp_path / "pickled.npz"
    pk.write_bytes(pickle.dumps({"x": _PickleBomb(marker)}))
    with pytest.raises(TaskSpecError) as ei:
        load_task(f"npz:{pk}")
    _assert_spec_error(ei, "pickled.npz", "never loads")
    assert not marker.exists()


def _bad_npz_cases():
    x, y = _images(6), _labels(6, 2)
    return {
        "missing_keys": dict(a=x, b=y),
        "partial_split_keys": dict(x_train=x, y_train=y, x_test=x),
        "x_float": dict(x=x.astype(np.float32) / 255, y=y),
        "x_ndim2": dict(x=x.reshape(6, -1), y=y),
        "x_ndim5": dict(x=x[:, None, :, :, None], y=y),
        "x_channels_first": dict(x=_images(6, 8, 8, c=3).transpose(0, 3, 1, 2).copy(), y=y),
        "x_channels5": dict(x=_images(6, 8, 8, c=5), y=y),
        "y_float": dict(x=x, y=y.astype(np.float32)),
        "y_bool": dict(x=x, y=y.astype(bool)),
        "y_2d": dict(x=x, y=y[:, None]),
        "length_mismatch": dict(x=x, y=_labels(5, 2)),
        "split_length_mismatch": dict(x_train=x, y_train=y, x_test=x[:3], y_test=y[:2]),
        "negative_labels": dict(x=x, y=y - 1),
        "labels_out_of_range_of_classes": dict(x=x, y=_labels(6, 3), classes=np.array(["a", "b"])),
        "empty_split": dict(x_train=x, y_train=y, x_test=x[:0], y_test=y[:0]),
        "empty_x": dict(x=x[:0], y=y[:0]),
        "single_class": dict(x=x, y=np.zeros(6, dtype=np.int64)),
        "single_class_in_train": dict(x_train=x, y_train=np.ones(6, dtype=np.int64), x_test=x, y_test=y),
        "classes_not_strings": dict(x=x, y=y, classes=np.array([0, 1])),
        "hflip_not_scalar": dict(x=x, y=y, hflip=np.array([True, False])),
        "mixed_split_shapes": dict(x_train=x, y_train=y, x_test=_images(6, 9, 9), y_test=y),
    }


@pytest.mark.parametrize("case", sorted(_bad_npz_cases()))
def test_npz_bad_arrays(tmp_path, case):
    p = _save(tmp_path / f"{case}.npz", **_bad_npz_cases()[case])
    with pytest.raises(TaskSpecError) as ei:
        load_task(f"npz:{p}", image_size=8)
    msg = _assert_spec_error(ei, f"{case}.npz")
    extra = {
        "missing_keys": ["x_train, y_train, x_test, y_test", "x, y"],
        "partial_split_keys": ["y_test"],
        "x_float": ["uint8", "astype(np.uint8)", "0..255"],
        "length_mismatch": ["6", "5"],
        "split_length_mismatch": ["3", "2"],
        "negative_labels": ["-1"],
        "labels_out_of_range_of_classes": ["0..1", "2"],
        "y_2d": ["1-D"],
        "y_float": ["integer"],
    }.get(case, [])
    for needle in extra:
        assert needle in msg, f"{needle!r} not in {msg!r}"


def test_npz_missing_file(tmp_path):
    p = tmp_path / "nothere.npz"
    with pytest.raises(TaskSpecError) as ei:
        load_task(f"npz:{p}")
    _assert_spec_error(ei, "nothere.npz")


def test_npz_is_directory(tmp_path):
    d = tmp_path / "adir.npz"
    d.mkdir()
    with pytest.raises(TaskSpecError) as ei:
        load_task(f"npz:{d}")
    _assert_spec_error(ei, "adir.npz")


def test_npz_not_a_zip(tmp_path):
    p = tmp_path / "text.npz"
    p.write_text("hello, not an archive\nsecond line\n")
    with pytest.raises(TaskSpecError) as ei:
        load_task(f"npz:{p}")
    _assert_spec_error(ei, "text.npz", "not an npz archive")
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(TaskSpecError) as ei:
        load_task(f"npz:{empty}")
    _assert_spec_error(ei, "empty.npz")


def test_npz_truncated(tmp_path):
    good = _save(tmp_path / "good.npz", x=_images(20), y=_labels(20))
    data = good.read_bytes()
    p = tmp_path / "trunc.npz"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(TaskSpecError) as ei:
        load_task(f"npz:{p}")
    _assert_spec_error(ei, "trunc.npz")
    assert ei.value.__cause__ is not None


def test_npz_corrupt_member(tmp_path):
    good = _save(tmp_path / "good.npz", x=_images(50, 16, 16), y=_labels(50))
    data = bytearray(good.read_bytes())
    mid = 2000  # inside the stored x.npy member's pixel data
    data[mid:mid + 16] = bytes((b ^ 0xFF) for b in data[mid:mid + 16])
    p = tmp_path / "corrupt.npz"
    p.write_bytes(bytes(data))
    with pytest.raises(TaskSpecError) as ei:
        load_task(f"npz:{p}")
    _assert_spec_error(ei, "corrupt.npz")
    assert ei.value.__cause__ is not None


def test_npy_instead_of_npz(tmp_path):
    p = tmp_path / "single.npz"
    with open(p, "wb") as f:
        np.save(f, _images(3))
    with pytest.raises(TaskSpecError) as ei:
        load_task(f"npz:{p}")
    _assert_spec_error(ei, "single.npz")


@pytest.mark.parametrize("kw", [dict(image_size=0), dict(holdout=1.0), dict(holdout=0.0)])
def test_bad_arguments(tmp_path, kw):
    p = _save(tmp_path / "args.npz", x=_images(6), y=_labels(6, 2))
    with pytest.raises(TaskSpecError) as ei:
        load_task(f"npz:{p}", **kw)
    _assert_spec_error(ei, "args.npz")


# ------------------------------------------------------------------------------------------------
# folder


def _make_class_tree(root, classes, per_class, size=10, color=False, start=0):
    k = start
    for cname in classes:
        for i in range(per_class):
            shape = (size, size, 3) if color else (size, size)
            arr = np.full(shape, (k * 7) % 256, dtype=np.uint8)
            _png(root / cname / f"{i:03d}.png", arr)
            k += 1
    return root


def test_folder_holdout(tmp_path):
    root = _make_class_tree(tmp_path / "pets", ["dog", "cat", "bird"], 5)
    (root / "cat" / "notes.txt").write_text("ignored")
    (root / ".hidden").mkdir()
    td = load_task(f"folder:{root}", image_size=28, seed=1)
    assert td.name == "pets" and td.classes == ["bird", "cat", "dog"] and td.num_classes == 3
    assert td.x_train.shape == (12, 1, 28, 28) and td.x_test.shape == (3, 1, 28, 28)
    assert torch.bincount(td.y_test, minlength=3).tolist() == [1, 1, 1]
    same = load_task(f"folder:{root}", image_size=28, seed=1)
    assert torch.equal(td.x_test, same.x_test) and torch.equal(td.y_train, same.y_train)


def test_folder_train_test_and_rgb(tmp_path):
    root = tmp_path / "splitset"
    _make_class_tree(root / "train", ["b", "a"], 3, size=12, color=True)
    _make_class_tree(root / "test", ["a", "b"], 2, size=12)  # grayscale test images -> still RGB
    td = load_task(f"folder:{root}", image_size=12)
    assert td.classes == ["a", "b"]
    assert td.x_train.shape == (6, 3, 12, 12) and td.x_test.shape == (4, 3, 12, 12)
    assert td.y_train.tolist() == [0, 0, 0, 1, 1, 1] and td.y_test.tolist() == [0, 0, 1, 1]
    # gray image replicated to 3 identical channels
    assert torch.equal(td.x_test[:, 0], td.x_test[:, 1]) and torch.equal(td.x_test[:, 1], td.x_test[:, 2])


def test_folder_mixed_sizes_and_formats(tmp_path):
    from PIL import Image

    root = tmp_path / "mixed"
    _png(root / "x" / "a.png", np.full((10, 10), 50, dtype=np.uint8))
    _png(root / "x" / "b.png", np.full((20, 14), 50, dtype=np.uint8))
    (root / "y").mkdir(parents=True)
    Image.fromarray(np.full((28, 28, 4), 200, dtype=np.uint8), "RGBA").save(root / "y" / "c.png")
    Image.fromarray(np.full((16, 16, 3), 200, dtype=np.uint8)).save(root / "y" / "d.JPG")
    Image.fromarray(np.full((16, 16), 200, dtype=np.uint8)).save(root / "y" / "e.bmp")
    td = load_task(f"folder:{root}", image_size=28, holdout=0.5)
    assert td.x_train.shape[1:] == (3, 28, 28)
    assert td.x_train.shape[0] + td.x_test.shape[0] == 5


# ------------------------------------------------------------------------------------------------
# folder: bad inputs


def test_folder_missing(tmp_path):
    with pytest.raises(TaskSpecError) as ei:
        load_task(f"folder:{tmp_path / 'nowhere'}")
    _assert_spec_error(ei, "nowhere")


def test_folder_is_file(tmp_path):
    f = tmp_path / "afile.png"
    f.write_bytes(b"x")
    with pytest.raises(TaskSpecError) as ei:
        load_task(f"folder:{f}")
    _assert_spec_error(ei, "afile.png")


def test_folder_no_class_subfolders(tmp_path):
    root = tmp_path / "flat"
    _png(root / "a.png", np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(TaskSpecError) as ei:
        load_task(f"folder:{root}")
    _assert_spec_error(ei, "flat", "sub-folder")


def test_folder_empty_class(tmp_path):
    root = _make_class_tree(tmp_path / "withempty", ["full"], 3)
    (root / "emptyclass").mkdir()
    (root / "emptyclass" / "readme.txt").write_text("no images")
    with pytest.raises(TaskSpecError) as ei:
        load_task(f"folder:{root}")
    _assert_spec_error(ei, "emptyclass", "empty class folder")


def test_folder_empty_class_in_test_split(tmp_path):
    root = tmp_path / "splits"
    _make_class_tree(root / "train", ["a", "b"], 2)
    _make_class_tree(root / "test", ["a"], 1)
    (root / "test" / "b").mkdir()
    with pytest.raises(TaskSpecError) as ei:
        load_task(f"folder:{root}")
    _assert_spec_error(ei, str(Path("test") / "b"))


def test_folder_unreadable_image(tmp_path):
    root = _make_class_tree(tmp_path / "broken", ["a", "b"], 2)
    (root / "b" / "zz_bad.jpg").write_bytes(b"this is not a jpeg\n")
    with pytest.raises(TaskSpecError) as ei:
        load_task(f"folder:{root}")
    _assert_spec_error(ei, "zz_bad.jpg")
    assert ei.value.__cause__ is not None


def test_folder_single_class(tmp_path):
    root = _make_class_tree(tmp_path / "lonely", ["only"], 4)
    with pytest.raises(TaskSpecError) as ei:
        load_task(f"folder:{root}")
    _assert_spec_error(ei, "lonely", "2 classes")


# ------------------------------------------------------------------------------------------------
# hf


@pytest.fixture
def hf_offline(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for attr in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        if hasattr(datasets.config, attr):
            monkeypatch.setattr(datasets.config, attr, True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    datasets.disable_progress_bars()
    return datasets


def _hf_split(datasets, n, *, image_col="img", label_col="label", names=("zero", "one", "two"),
              color=True, size=8, class_label=True, start=0):
    from PIL import Image

    imgs = []
    for i in range(n):
        shape = (size, size, 3) if color else (size, size)
        imgs.append(Image.fromarray(np.full(shape, (start + i) % 256, dtype=np.uint8)))
    ds = datasets.Dataset.from_dict({image_col: imgs, label_col: [i % len(names) for i in range(n)],
                                     "extra": list(range(n))})
    ds = ds.cast_column(image_col, datasets.Image())
    if class_label:
        ds = ds.cast_column(label_col, datasets.ClassLabel(names=list(names)))
    return ds


def test_hf_local_train_test(tmp_path, hf_offline):
    root = tmp_path / "myhf"
    (root / "data").mkdir(parents=True)
    _hf_split(hf_offline, 12).to_parquet(str(root / "data" / "train-00000.parquet"))
    _hf_split(hf_offline, 6, start=100).to_parquet(str(root / "data" / "test-00000.parquet"))
    td = load_task(f"hf:{root}", image_size=8)
    assert td.name == "myhf" and td.spec == f"hf:{root}"
    assert td.classes == ["zero", "one", "two"] and td.num_classes == 3
    assert td.x_train.shape == (12, 3, 8, 8) and td.x_test.shape == (6, 3, 8, 8)
    assert td.x_train.dtype == torch.uint8 and td.y_train.dtype == torch.int64
    assert td.y_train.tolist() == [i % 3 for i in range(12)]
    assert sorted(td.x_test[:, 0, 0, 0].tolist()) == list(range(100, 106))


def test_hf_local_holdout_grayscale_resize(tmp_path, hf_offline):
    root = tmp_path / "grayhf"
    (root / "data").mkdir(parents=True)
    ds = _hf_split(hf_offline, 20, image_col="image", label_col="fine_label", color=False, size=10,
                   class_label=False, names=("a", "b"))
    ds.to_parquet(str(root / "data" / "train-00000.parquet"))
    a = load_task(f"hf:{root}", image_size=28, seed=5)
    b = load_task(f"hf:{root}", image_size=28, seed=5)
    assert a.x_train.shape == (16, 1, 28, 28) and a.x_test.shape == (4, 1, 28, 28)
    assert a.classes == ["0", "1"] and a.num_classes == 2
    assert torch.equal(a.x_test, b.x_test)


def test_hf_validation_as_test(tmp_path, hf_offline):
    root = tmp_path / "valhf"
    (root / "data").mkdir(parents=True)
    _hf_split(hf_offline, 9).to_parquet(str(root / "data" / "train-00000.parquet"))
    _hf_split(hf_offline, 3).to_parquet(str(root / "data" / "validation-00000.parquet"))
    td = load_task(f"hf:{root}", image_size=8)
    assert td.x_train.shape[0] == 9 and td.x_test.shape[0] == 3


def test_hf_string_labels(tmp_path, hf_offline):
    from PIL import Image

    root = tmp_path / "strhf"
    (root / "data").mkdir(parents=True)
    imgs = [Image.fromarray(np.full((6, 6), i, dtype=np.uint8)) for i in range(8)]
    ds = hf_offline.Dataset.from_dict({"image": imgs, "label": ["dog", "cat"] * 4})
    ds.cast_column("image", hf_offline.Image()).to_parquet(str(root / "data" / "train-00000.parquet"))
    td = load_task(f"hf:{root}", image_size=6, holdout=0.5)
    assert td.classes == ["cat", "dog"] and td.x_train.shape == (4, 1, 6, 6)
    assert torch.equal(td.y_train, 1 - td.x_train[:, 0, 0, 0].long() % 2)


def test_hf_imagefolder(tmp_path, hf_offline):
    root = tmp_path / "imgfolder"
    _make_class_tree(root / "train", ["ant", "bee"], 3, size=8, color=True)
    _make_class_tree(root / "test", ["ant", "bee"], 1, size=8, color=True)
    td = load_task(f"hf:{root}", image_size=8)
    assert td.classes == ["ant", "bee"]
    assert td.x_train.shape == (6, 3, 8, 8) and td.x_test.shape == (2, 3, 8, 8)


def test_hf_missing_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    with pytest.raises(TaskSpecError) as ei:
        load_task("hf:mnist")
    _assert_spec_error(ei, "hf:mnist", "pip install 'ctinit[datasets]'")


def test_hf_unknown_dataset(hf_offline):
    spec = "hf:no-such-user/no-such-dataset-ctinit"
    with pytest.raises(TaskSpecError) as ei:
        load_task(spec)
    _assert_spec_error(ei, spec, "no-such-dataset-ctinit")
    assert ei.value.__cause__ is not None


def test_hf_unknown_config(tmp_path, hf_offline):
    root = tmp_path / "cfghf"
    (root / "data").mkdir(parents=True)
    _hf_split(hf_offline, 6).to_parquet(str(root / "data" / "train-00000.parquet"))
    with pytest.raises(TaskSpecError) as ei:
        load_task(f"hf:{root}:nosuchconfig")
    _assert_spec_error(ei, "cfghf", "nosuchconfig")


def test_hf_no_image_column(tmp_path, hf_offline):
    root = tmp_path / "noimg"
    (root / "data").mkdir(parents=True)
    ds = hf_offline.Dataset.from_dict({"text": ["a", "b", "c", "d"], "label": [0, 1, 0, 1]})
    ds.to_parquet(str(root / "data" / "train-00000.parquet"))
    with pytest.raises(TaskSpecError) as ei:
        load_task(f"hf:{root}")
    _assert_spec_error(ei, "noimg", "image column", "text", "label")


def test_hf_no_label_column(tmp_path, hf_offline):
    root = tmp_path / "nolabel"
    (root / "data").mkdir(parents=True)
    ds = _hf_split(hf_offline, 4, label_col="target", class_label=False)
    ds.to_parquet(str(root / "data" / "train-00000.parquet"))
    with pytest.raises(TaskSpecError) as ei:
        load_task(f"hf:{root}")
    _assert_spec_error(ei, "nolabel", "label column", "img", "target", "extra")


# ------------------------------------------------------------------------------------------------
# builtin


@pytest.fixture
def fake_builtin(tmp_path, monkeypatch):
    """Point builtin_path at npz files in tmp_path (works whether or not builtin.py exists yet)."""
    store = tmp_path / "builtin"
    store.mkdir()

    def builtin_path(name):
        path = store / f"{name}.npz"
        if not path.exists():
            raise TaskSpecError(f"unknown builtin task {name!r}: use one of [glyphs]")
        return path

    try:
        module = importlib.import_module("ctinit.tasks.builtin")
    except ImportError:
        module = types.ModuleType("ctinit.tasks.builtin")
        monkeypatch.setitem(sys.modules, "ctinit.tasks.builtin", module)
    monkeypatch.setattr(module, "builtin_path", builtin_path, raising=False)
    return store


def test_builtin(fake_builtin):
    _save(fake_builtin / "glyphs.npz", x_train=_images(10), y_train=_labels(10, 2), x_test=_images(4),
          y_test=_labels(4, 2), classes=np.array(["alpha", "beta"]), hflip=np.array(False))
    td = load_task("builtin:glyphs", image_size=8)
    assert td.name == "glyphs" and td.spec == "builtin:glyphs"
    assert td.classes == ["alpha", "beta"] and td.hflip is False
    assert td.x_train.shape == (10, 1, 8, 8)


def test_builtin_unknown(fake_builtin):
    with pytest.raises(TaskSpecError) as ei:
        load_task("builtin:nope")
    _assert_spec_error(ei, "nope")


def test_builtin_real_module_unknown_name():
    with pytest.raises(TaskSpecError) as ei:
        load_task("builtin:no-such-builtin-task")
    _assert_spec_error(ei, "no-such-builtin-task")
