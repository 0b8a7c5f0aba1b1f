"""Push an export to the Hub, pull an initialization from it. Every call goes through ``huggingface_hub``.

The token is whatever huggingface_hub finds (``HF_TOKEN``, else the saved login of ``hf auth login``); it is passed
to ``HfApi`` and nowhere else: never printed, logged or written, and a folder that contains it is not uploaded.
"""
from __future__ import annotations

from pathlib import Path

from ctinit.errors import CheckpointError, ConfigError
from ctinit.loading import (CONFIG_NAME, PICKLE_PATTERNS, PICKLE_SUFFIXES, WEIGHTS_NAME, hub_error, hub_snapshot,
                            init_info, load_init, parse_hub_id)

from .card import PLACEHOLDER

TEXT_SUFFIXES = (".json", ".md", ".yaml", ".yml", ".txt", ".cfg", ".toml", ".log", ".jsonl")


def get_token() -> str | None:
    try:
        from huggingface_hub import get_token as _get_token
    except ImportError:  # older huggingface_hub
        from huggingface_hub.utils import get_token as _get_token
    return _get_token()


def scrub(text: str, token: str | None = None) -> str:
    """``text`` with the token (given, or the one huggingface_hub would use) replaced by ``***``."""
    token = token if token is not None else get_token()
    return text.replace(token, "***") if token else text


def _repo(repo_id: str, what: str = "--repo") -> tuple[str, str | None]:
    parsed = parse_hub_id(repo_id)
    if parsed is None:
        raise ConfigError(f"{what} '{repo_id}': write a Hub id as ORG/NAME")
    return parsed


def check_export(export: Path) -> str:
    """Refuse what should not be published; returns the algorithm."""
    if not export.is_dir():
        raise ConfigError(f"{export}: no such export folder; make one with `ctinit-hub export RUN_DIR {export}`")
    for name in (CONFIG_NAME, WEIGHTS_NAME, "README.md"):
        if not (export / name).is_file():
            raise ConfigError(f"{export}: no {name}; make the folder with `ctinit-hub export RUN_DIR {export}`")
    pickles = sorted(str(p.relative_to(export)) for p in export.rglob("*") if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(f"{export}: holds pickle files ({', '.join(pickles[:3])}); ctinit publishes safetensors only: remove them")
    load_init(export)  # truncated or mismatched weights are refused here, not by the people who download them
    from huggingface_hub import ModelCard

    try:
        card = ModelCard.load(export / "README.md")
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"{export / 'README.md'}: not a model card with YAML front matter ({type(e).__name__}); re-export") from e
    if card.data.library_name != "ctinit":
        raise ConfigError(f"{export / 'README.md'}: the card's library_name is {card.data.library_name!r}, not 'ctinit'; re-export")
    return str(init_info(export).get("algorithm", "unknown"))


def _check_no_token(export: Path, token: str) -> None:
    for path in sorted(export.rglob("*")):
        if path.is_file() and (path.suffix in TEXT_SUFFIXES or path.stat().st_size < 1 << 20):
            try:
                if token.encode() in path.read_bytes():
                    raise ConfigError(f"{path}: contains your Hugging Face token; remove it before pushing")
            except OSError:
                continue


def push(export_dir: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
         commit_message: str | None = None, log=None):
    """Create ``repo_id`` if needed (``exist_ok``), upload ``export_dir`` and return the ``CommitInfo``."""
    from huggingface_hub import HfApi

    export = Path(export_dir)
    repo, pinned = _repo(repo_id)
    if pinned:
        raise ConfigError(f"--repo '{repo_id}': give the branch with --revision, not @")
    algorithm = check_export(export)
    token = get_token()
    if not token:
        raise ConfigError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access)")
    _check_no_token(export, token)
    readme = export / "README.md"
    text = readme.read_text()
    filled = PLACEHOLDER.sub(repo, text)
    if filled != text:  # the card's snippets name the repo it lives in; restored if the upload fails
        readme.write_text(filled)
    api = HfApi(token=token)
    try:
        api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        if revision and revision != "main":
            api.create_branch(repo, branch=revision, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            repo_id=repo, folder_path=str(export), repo_type="model", revision=revision,
            commit_message=commit_message or f"Upload ctinit initialization ({algorithm})",
            ignore_patterns=[*PICKLE_PATTERNS, ".*", "**/.*"],
        )
    except Exception as e:  # noqa: BLE001
        readme.write_text(text)
        from ctinit.loading import _is_connection_error

        error = hub_error(e, repo, revision)
        if _is_connection_error(e):
            error = CheckpointError(f"{repo}: cannot reach the Hub to push ({type(e).__name__}); check the network")
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            error = ConfigError(f"{repo}: not allowed to write (HTTP {status}); use a token with write access to "
                                f"{repo.split('/')[0]} (HF_TOKEN or `hf auth login`)")
        if error is None:
            raise
        raise type(error)(scrub(str(error), token)) from e
    if filled != text and log:
        log(f"hub push: wrote the repo id {repo} into {readme}")
    return info


def pull(repo_id: str, revision: str | None = None, out: str | Path | None = None) -> tuple[Path, str | None]:
    """Download an initialization repo (everything but pickle files) into the cache or ``out``; checks that it
    loads. Returns ``(folder, commit hash)``; offline, the cached copy is used."""
    repo, pinned = _repo(repo_id, "repo id")
    if pinned and revision and pinned != revision:
        raise ConfigError(f"'{repo_id}' pins revision '{pinned}' but --revision says '{revision}': give one of them")
    folder, commit = hub_snapshot(repo, pinned or revision, allow_patterns=["*"], local_dir=out)
    load_init(folder)
    return folder, commit


__all__ = ["check_export", "get_token", "pull", "push", "scrub"]
