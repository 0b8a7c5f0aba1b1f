"""Push an export to the Hub, pull an initialization from it. Every call goes through ``huggingface_hub``.

The token is whatever huggingface_hub finds (``HF_TOKEN``, else the saved login of ``hf auth login``); it is passed
to ``HfApi`` and nowhere else: never printed, logged or written, and a folder that contains it is not uploaded.
"""
from __future__ import annotations

from pathlib import Path

from ctinit import hubio, tokens
from ctinit.errors import CheckpointError, ConfigError
from ctinit.hubio import CONFIG_NAME, WEIGHTS_NAME, hub_snapshot, parse_hub_id
from ctinit.hubio.names import is_pickle_file
from ctinit.loading import init_info, load_init

def get_token() -> str | None:
    return tokens.get_token()


def scrub(text: str, token: str | None = None) -> str:
    return tokens.scrub(text, token)


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
    pickles = sorted(str(p.relative_to(export)) for p in export.rglob("*") if is_pickle_file(p))
    if pickles:
        raise CheckpointError(f"{export}: holds pickle files ({', '.join(pickles[:3])}); ctinit publishes safetensors only: remove them")
    load_init(export)  # truncated or mismatched weights are refused here, not by the people who download them
    from huggingface_hub import ModelCard

    try:
        card = ModelCard.load(export / "README.md")
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"{export / 'README.md'}: not a model card with YAML front matter ({type(e).__name__}); re-export") from e
    if card.data.library_name not in ("ctinit", "transformers") or "ctinit" not in (card.data.tags or []):
        raise ConfigError(f"{export / 'README.md'}: not a ctinit card (library_name {card.data.library_name!r}, "
                          f"no 'ctinit' tag); re-export")
    return str(init_info(export).get("algorithm", "unknown"))


def push(export_dir: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
         commit_message: str | None = None, create_pr: bool = False, overwrite_card: bool = False, log=None):
    """Check the export, then upload it with :func:`ctinit.hubio.push_folder` (the one push path: a temporary copy,
    the secrets scan, the Hub's card kept unless ``overwrite_card``). Returns the ``CommitInfo``."""
    export = Path(export_dir)
    algorithm = check_export(export)  # the local folder first: its errors need no token or network
    hubio.check_push(repo_id)
    return hubio.push_folder(export, repo_id, private=private, revision=revision, create_pr=create_pr,
                               overwrite_card=overwrite_card, log=log,
                               commit_message=commit_message or f"Upload ctinit initialization ({algorithm})")


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
