"""Pushes: pickles found by content and by suffix in any case, a staging folder that cannot be written (TMPDIR full
or missing) is one line with its path, and a token that is not printable ASCII is refused before any request."""
import errno
import pickle
import shutil
import tempfile

import pytest
import torch
from safetensors.torch import save_file

from ctinit.errors import ConfigError, CtinitError
from ctinit.hubio.names import is_pickle_file
from ctinit.hubio.upload import push_folder

from test_push_fuzz import TOKEN, hub  # noqa: F401 - the local Hub (tests/local_hub.py), TOKEN its user's token


def _pickled(path, protocol):
    path.write_bytes(pickle.dumps({"w": [1, 2, 3]}, protocol=protocol))


PICKLES = [
    ("weights.PT", lambda p: p.write_bytes(b"x")),
    ("model.joblib", lambda p: p.write_bytes(b"x")),
    ("state.Pickle", lambda p: p.write_bytes(b"x")),
    ("weights.dat", lambda p: _pickled(p, 2)),
    ("weights.dat", lambda p: _pickled(p, 4)),
    ("weights.dat", lambda p: _pickled(p, 5)),
    ("weights.data", lambda p: torch.save({"w": torch.zeros(2)}, p)),  # a zip holding data.pkl
]


@pytest.mark.parametrize("name,make", PICKLES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(PICKLES)])
def test_a_pickle_is_refused_whatever_its_name(name, make, tmp_path, hub):
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    make(folder / "sub" / name)
    with pytest.raises(CtinitError, match="holds pickle files") as refused:
        push_folder(folder, "me/x")
    assert f"sub/{name}" in str(refused.value) and not hub.requests  # refused before anything reached the Hub


@pytest.mark.parametrize("length", [0x280, 0x380, 0x480, 0x580])  # first bytes 80 02..05: not a pickle
def test_safetensors_and_text_are_not_pickles(length, tmp_path):
    weights = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(2)}, str(weights))
    assert not is_pickle_file(weights)
    odd = tmp_path / "odd.bin.txt"
    odd.write_bytes(length.to_bytes(8, "little") + b"{}")
    assert not is_pickle_file(odd)


def test_a_staging_folder_that_cannot_be_written_is_one_line_with_its_path(tmp_path, hub, monkeypatch):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "config.json").write_text("{}")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    copytree = shutil.copytree
    monkeypatch.setattr(shutil, "copytree", full)
    with pytest.raises(ConfigError) as refused:
        push_folder(folder, "me/x")
    line = str(refused.value)
    assert "cannot stage the push in " in line and "no space left" in line and "TMPDIR" in line and "\n" not in line
    monkeypatch.setattr(shutil, "copytree", copytree)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=f"cannot stage the push in {tmp_path / 'missing'}"):
        push_folder(folder, "me/x")


@pytest.mark.parametrize("token", ["hf_tøkenWithANonAsciiLetter123456789", "hf_abc def", "“hf_quoted”", "hf_\x00x"])
def test_a_token_that_is_not_printable_ascii_is_refused(token, tmp_path, hub, monkeypatch):
    monkeypatch.setattr("ctinit.hubio.upload.get_token", lambda: token)
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(ConfigError, match="not printable ASCII") as refused:
        push_folder(folder, "me/x")
    assert token not in str(refused.value) and not hub.requests  # refused before anything reached the Hub
