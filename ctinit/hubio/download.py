"""Downloads from the Hub: a repo's files (config and safetensors weights, never pickles) into the Hugging Face
cache or a folder, checked before anything is downloaded, and the cached copy when offline."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from ..errors import CheckpointError, CtinitError
from .errors import hub_offline, is_connection_error, raise_hub_error
from .names import COMMIT_HASH, CONFIG_NAME, PICKLE_PATTERNS, WEIGHTS_NAME, is_pickle_name


def _check_repo_files(files: list[str], repo_id: str, revision: str | None, need_weights: bool) -> None:
    where = f"{repo_id}@{revision or 'main'}"
    if need_weights and WEIGHTS_NAME not in files:
        pickles = sorted(f for f in files if is_pickle_name(f))
        if pickles:
            raise CheckpointError(
                f"{where}: only pickle weights on the Hub ({', '.join(pickles[:3])}); ctinit loads safetensors only, "
                f"because unpickling can run arbitrary code: ask the publisher for {WEIGHTS_NAME}"
            )
        raise CheckpointError(f"{where}: no {WEIGHTS_NAME} in this Hub repo; an initialization repo holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    if CONFIG_NAME not in files:
        raise CheckpointError(f"{where}: no {CONFIG_NAME} in this Hub repo; an initialization repo holds {CONFIG_NAME} and {WEIGHTS_NAME}")


def _remember_ref(snapshot: Path, revision: str, commit: str) -> None:
    """Record in the cache that ``revision`` (a branch or tag) points at ``commit``, as huggingface_hub does when it
    downloads by branch name, so that a later offline run finds the copy under the name the user typed."""
    refs = snapshot.parent.parent / "refs"
    if snapshot.parent.name != "snapshots" or not refs.parent.is_dir():
        return
    ref = refs / revision
    try:
        if not ref.is_file() or ref.read_text().strip() != commit:
            ref.parent.mkdir(parents=True, exist_ok=True)
            ref.write_text(commit)
    except OSError:  # a read-only cache still works online
        pass


def _matches_etag(path: Path, etag: str) -> bool | None:
    """Whether a file's bytes are those its Hub ETag names: the git blob sha1 (a regular file) or the sha256 (an
    LFS file); None when the ETag is neither (nothing to check)."""
    if len(etag) == 40:
        digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    elif len(etag) == 64:
        digest = hashlib.sha256()
    else:
        return None
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest() == etag.lower()


def _check_downloaded(folder: Path, repo_id: str, revision: str | None, local_dir: bool) -> None:
    """Refuse (and remove) a downloaded file whose bytes are not the ones the Hub's ETag names, so that a corrupt
    download never stays in the cache as if it were the model. In the cache a file links to ``blobs/ETAG``; in a
    ``local_dir`` huggingface_hub keeps the ETag in ``.cache/huggingface/download/NAME.metadata`` (second line)."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.relative_to(folder).parts):
        if local_dir:
            meta = folder / ".cache" / "huggingface" / "download" / (path.relative_to(folder).as_posix() + ".metadata")
            lines = meta.read_text().splitlines() if meta.is_file() else []
            etag, blob = (lines[1].strip() if len(lines) > 1 else ""), path
        else:
            blob = path.resolve()
            etag = blob.name if path.is_symlink() and blob.parent.name == "blobs" else ""
        if not etag or _matches_etag(blob, etag) is not False:
            continue
        for stale in {path, blob}:
            stale.unlink(missing_ok=True)
        raise CheckpointError(f"{repo_id}@{revision or 'main'}: the downloaded {path.name} does not match the checksum "
                              f"the Hub sent (ETag {etag[:12]}...); it was removed from the cache: download again, "
                              f"and if it happens again the file or a proxy on the way is corrupt")


def hub_snapshot(repo_id: str, revision: str | None = None, *, need_weights: bool = True,
                 allow_patterns: list[str] | None = None, local_dir: str | Path | None = None) -> tuple[Path, str | None]:
    """Download (or find in the cache) a Hub initialization; returns ``(folder, commit hash)``.

    Online, the repo's file list is checked first (pickle-only repos are refused before anything is downloaded),
    then :func:`huggingface_hub.snapshot_download` fetches ``allow_patterns`` (default: config and weights) into the
    cache, or into ``local_dir``. Offline (``HF_HUB_OFFLINE=1``) or when the Hub cannot be reached, the cached copy
    of that revision is used. Pickle files are never downloaded.
    """
    from huggingface_hub import HfApi, snapshot_download

    if allow_patterns is None:
        allow_patterns = [CONFIG_NAME, WEIGHTS_NAME] if need_weights else [CONFIG_NAME]
    info = None
    if not hub_offline():
        try:
            info = HfApi().model_info(repo_id, revision=revision)
        except Exception as e:  # noqa: BLE001 - mapped to one line below
            if not is_connection_error(e):
                raise_hub_error(e, repo_id, revision)
    if info is not None:
        _check_repo_files([s.rfilename for s in (info.siblings or [])], repo_id, revision, need_weights)
    if info is None and local_dir is not None:
        # Offline into a folder: the copy is in the Hugging Face cache (snapshot_download only looks in local_dir)
        try:
            cached, commit = hub_snapshot(repo_id, revision, need_weights=need_weights, allow_patterns=allow_patterns)
        except CtinitError:
            cached = None
        if cached is not None:
            shutil.copytree(cached, local_dir, dirs_exist_ok=True)  # follows the cache's symlinks: real files
            return Path(local_dir), commit
    try:
        # Download the commit model_info just reported, not the branch again: a push in between cannot mix
        # files of two commits, and the commit printed is the one whose files were read.
        pinned = getattr(info, "sha", None) if info is not None else None
        folder = snapshot_download(repo_id, revision=pinned or revision, allow_patterns=allow_patterns,
                                   ignore_patterns=PICKLE_PATTERNS, local_dir=str(local_dir) if local_dir else None,
                                   local_files_only=info is None)
    except Exception as e:  # noqa: BLE001 - mapped to one line
        raise_hub_error(e, repo_id, revision)
    folder = Path(folder)
    if info is not None:  # just downloaded (offline, the copy was checked when it was downloaded)
        _check_downloaded(folder, repo_id, revision, local_dir is not None)
    commit = getattr(info, "sha", None) if info is not None else None
    if commit and local_dir is None and not COMMIT_HASH.match(revision or "main"):
        _remember_ref(folder, revision or "main", commit)
    if commit is None and COMMIT_HASH.match(folder.name):
        commit = folder.name
    return folder, commit


__all__ = ["hub_snapshot"]
