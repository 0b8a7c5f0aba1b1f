"""Faults from the Hub, over HTTP (``tests/local_hub.py``): 401, 403, 404 with ``X-Error-Code``, 429 with
``Retry-After``, 500, a connection dropped mid-upload and mid-download, a truncated file, a wrong ETag. Each is one
line and exit 2 from the commands, retried where huggingface_hub retries; no half-written model stays in the cache
and a push that did not complete is never reported as published.

The commands run in this process (``ctinit-hub``'s and ``ctinit``'s ``main``) so that huggingface_hub's backoff
sleeps can be recorded instead of waited (``backoff`` fixture); the flows in subprocesses are in
``tests/test_hub_http.py``."""
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import ctinit
from ctinit.loading import load_init, save_init
from ctinit_hub.__main__ import main as hub_main

from conftest import LOCAL_HUB_TOKEN
from helpers import weights

CARD = "---\nlibrary_name: ctinit\nlicense: mit\ntags:\n- ctinit\n- cts\n---\n# a test init\n"


@pytest.fixture(scope="module")
def init_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fault-init") / "init"
    save_init(ctinit.build_backbone("convnet4-32"), folder, made_with={"algorithm": "cts"})
    (folder / "README.md").write_text(CARD)
    return folder


@pytest.fixture
def backoff(monkeypatch):
    """huggingface_hub's retry waits, recorded instead of slept (what it waits is what it would sleep)."""
    from huggingface_hub.utils import _http

    waits = []
    monkeypatch.setattr(_http, "time", SimpleNamespace(sleep=waits.append, time=time.time, monotonic=time.monotonic))
    return waits


@pytest.fixture
def published(local_hub, init_folder, capsys):
    assert hub_main(["push", str(init_folder), "--repo", "org/init"]) == 0
    capsys.readouterr()
    return "org/init"


def fails(capsys, argv, needle, main=hub_main):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err
    assert LOCAL_HUB_TOKEN not in out + err
    return lines[0]


def cache_files(repo_id: str) -> list[str]:
    from huggingface_hub import constants

    folder = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def snapshot_files(repo_id: str) -> list[str]:
    return [f for f in cache_files(repo_id) if f.startswith("snapshots/")]


# ------------------------------------------------------------------------------------------------ authorization


def test_401_403_on_push_and_pull(local_hub, init_folder, published, monkeypatch, capsys):
    local_hub.add_token("hf_ReadOnlyTokenOfSomeoneElse0123456789", "you", write=False)
    monkeypatch.setenv("HF_TOKEN", "hf_UnknownTokenNotKnownToThisHub000000000")
    fails(capsys, ["push", str(init_folder), "--repo", "org/init", "--overwrite-card"], "not allowed to write (HTTP 401)")
    fails(capsys, ["pull", "org/init"], "not authorized (HTTP 401)")
    monkeypatch.setenv("HF_TOKEN", "hf_ReadOnlyTokenOfSomeoneElse0123456789")
    before = local_hub.head("org/init")
    fails(capsys, ["push", str(init_folder), "--repo", "org/init", "--overwrite-card"], "not allowed to write (HTTP 403)")
    fails(capsys, ["push", str(init_folder), "--repo", "org/other"], "not allowed to write (HTTP 403)")
    assert local_hub.head("org/init") == before and "org/other" not in local_hub.repos
    assert hub_main(["pull", "org/init"]) == 0  # a public repo reads with any token


def test_404_with_each_error_code(local_hub, published, monkeypatch, capsys):
    fails(capsys, ["pull", "org/nothing"], "no Hub model repo of that name")
    fails(capsys, ["pull", "org/init@v9"], "no revision 'v9'")
    local_hub.fault("HEAD", r"/resolve/.*/model\.safetensors$", status=404, headers={"X-Error-Code": "EntryNotFound"})
    fails(capsys, ["pull", "org/init"], "a file is missing in this Hub repo")
    assert "model.safetensors" not in " ".join(snapshot_files("org/init"))
    local_hub.fault("GET", r"/api/models/org/init", status=403, headers={"X-Error-Code": "GatedRepo"})
    fails(capsys, ["pull", "org/init"], "a gated Hub repo")
    local_hub.repos["org/init"].private = True
    monkeypatch.delenv("HF_TOKEN")
    fails(capsys, ["pull", "org/init"], "if it is private, set HF_TOKEN")


# ------------------------------------------------------------------------------------------------ 429 and 500


def test_429_is_retried_after_retry_after_on_upload(local_hub, init_folder, backoff, capsys):
    local_hub.fault("POST", r"/preupload/", status=429, headers={"Retry-After": "3"})
    local_hub.fault("POST", r"/commit/", status=429, headers={"Retry-After": "2"})
    assert hub_main(["push", str(init_folder), "--repo", "org/limited"]) == 0
    assert local_hub.count("POST", r"/commit/") == 2 and local_hub.count("POST", r"/preupload/") == 2
    assert backoff == [4.0, 3.0]  # Retry-After + 1 s, as huggingface_hub waits
    assert capsys.readouterr().out.strip().endswith(local_hub.head("org/limited"))


def test_429_and_500_that_last_are_one_line(local_hub, init_folder, published, backoff, capsys):
    local_hub.fault("GET", r"/api/models/org/init", status=429, headers={"Retry-After": "30"}, times=None)
    fails(capsys, ["pull", "org/init"], "rate-limiting these requests (HTTP 429), retry after 30 s")
    local_hub.faults.clear()
    local_hub.fault("POST", r"/commit/", status=500, times=None)
    (init_folder / "notes.txt").write_text("changed\n")
    try:
        line = fails(capsys, ["push", str(init_folder), "--repo", "org/init", "--overwrite-card"], "the Hub failed (HTTP 500)")
    finally:
        (init_folder / "notes.txt").unlink()
    assert "did not complete" in line and len(backoff) == 5  # huggingface_hub retried the commit 5 times
    assert "notes.txt" not in local_hub.files("org/init")
    local_hub.faults.clear()
    local_hub.fault("POST", r"/api/repos/create", status=500, times=None)
    fails(capsys, ["push", str(init_folder), "--repo", "org/fresh"], "the Hub failed (HTTP 500)")


def test_a_500_once_on_the_commit_is_retried(local_hub, init_folder, backoff, capsys):
    local_hub.fault("POST", r"/commit/", status=500)
    assert hub_main(["push", str(init_folder), "--repo", "org/flaky"]) == 0
    assert backoff == [1] and local_hub.count("POST", r"/commit/") == 2
    assert len(local_hub.repos["org/flaky"].commits) == 2  # the empty initial commit and one upload


def test_an_unreachable_hub_uses_the_cached_copy(local_hub, published, capsys):
    assert hub_main(["pull", "org/init"]) == 0
    commit = capsys.readouterr().out.splitlines()[0]
    local_hub.fault("GET", r"/api/models/org/init", status=503, times=None)
    assert hub_main(["pull", "org/init"]) == 0  # the cached copy of main
    assert capsys.readouterr().out.splitlines()[0] == commit
    fails(capsys, ["pull", "org/init@v1"], "no cached copy")


# ------------------------------------------------------------------------------------------------ dropped connections


def test_a_dropped_upload_is_retried_and_one_that_lasts_is_not_published(local_hub, init_folder, backoff, capsys):
    local_hub.fault("POST", r"/commit/", kind="drop")
    assert hub_main(["push", str(init_folder), "--repo", "org/dropped"]) == 0
    assert backoff == [1] and len(local_hub.repos["org/dropped"].commits) == 2
    capsys.readouterr()
    local_hub.fault("POST", r"/commit/", kind="drop", times=None)
    (init_folder / "notes.txt").write_text("changed\n")
    try:
        out_line = fails(capsys, ["push", str(init_folder), "--repo", "org/dropped", "--overwrite-card"], "cannot reach the Hub to push")
    finally:
        (init_folder / "notes.txt").unlink()
    assert "did not complete" in out_line and "notes.txt" not in local_hub.files("org/dropped")


def test_a_dropped_download_resumes_with_a_range_request(local_hub, init_folder, published, monkeypatch, capsys):
    from huggingface_hub import file_download

    monkeypatch.setattr(file_download.time, "sleep", lambda s: None)  # the 1 s wait before resuming
    local_hub.fault("GET", r"/resolve/.*/model\.safetensors$", kind="drop_body")
    assert hub_main(["pull", "org/init"]) == 0
    folder = Path(capsys.readouterr().out.splitlines()[1])
    assert local_hub.count("GET", r"/resolve/.*/model\.safetensors$") == 2
    assert all(torch.equal(weights(folder)[k], v) for k, v in weights(init_folder).items())


def test_a_truncated_file_leaves_nothing_in_the_cache(local_hub, published, capsys):
    local_hub.fault("GET", r"/resolve/.*/model\.safetensors$", kind="truncate", times=None)
    fails(capsys, ["pull", "org/init"], "a download from the Hub was cut short")
    assert not any("model.safetensors" in f or f.endswith(".incomplete") for f in cache_files("org/init"))
    local_hub.faults.clear()
    assert hub_main(["pull", "org/init"]) == 0  # downloads again, whole
    load_init(capsys.readouterr().out.splitlines()[1])


def test_a_file_that_does_not_match_its_etag_is_refused_and_removed(local_hub, published, tmp_path, capsys):
    local_hub.fault("HEAD", r"/resolve/.*/model\.safetensors$", kind="etag", times=2)
    fails(capsys, ["pull", "org/init"], "does not match the checksum the Hub sent")
    assert not any("model.safetensors" in f for f in snapshot_files("org/init"))
    assert len([f for f in cache_files("org/init") if f.startswith("blobs/")]) == len(snapshot_files("org/init"))
    fails(capsys, ["pull", "org/init", "--out", str(tmp_path / "pulled")], "does not match the checksum")
    assert not (tmp_path / "pulled" / "model.safetensors").exists()
    assert hub_main(["pull", "org/init"]) == 0  # the Hub answers right again: the download is whole
