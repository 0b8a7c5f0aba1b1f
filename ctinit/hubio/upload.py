"""Uploads to the Hub: the one push path of ``ctinit finetune --push-to-hub``, ``ctinit-train --push-to-hub``,
``ctinit-hub push`` and ``push_to_hub`` in Python (:class:`PushToHubMixin` for models).

Pushing works like timm's ``push_to_hub``: the folder is copied into a temporary directory, the copy is prepared
(the placeholder repo id in its card filled in) and uploaded, and the user's folder is never edited. An existing
card on the Hub is kept unless ``overwrite_card``. Links are copied as the files they point to, so a link that
leaves the folder, a broken link or a loop of links is refused first (one line). Before anything is uploaded every
file of the copy (exactly what is uploaded) is scanned, streaming and whatever its size, and every file name too,
for the token and for anything shaped like a Hugging Face token; a hit refuses the push and names the file, never
the token.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..errors import CheckpointError, ConfigError
from ..tokens import TOKEN_SHAPED, TOKEN_SHAPED_BYTES, get_token, scrub
from ..version import __version__
from .cards import PLACEHOLDER
from .errors import http_status, hub_error, hub_offline, is_connection_error, retry_after
from .names import PICKLE_PATTERNS, is_pickle_file, is_pickle_name, parse_hub_id

#: Never uploaded: pickle files and hidden files.
IGNORE_PATTERNS = [*PICKLE_PATTERNS, ".*", "**/.*"]

_CHUNK = 1 << 20


def _file_holds_secret(path: Path, needles: list[bytes]) -> bool:
    """Whether the file's bytes contain a needle or a token-shaped string; read in chunks, any size."""
    keep = max([len(n) for n in needles] + [64]) + 64  # an overlap, so that nothing split by a chunk edge is missed
    tail = b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                return False
            window = tail + chunk
            if any(n in window for n in needles) or TOKEN_SHAPED_BYTES.search(window):
                return True
            tail = window[-keep:]


def check_no_secrets(folder: str | Path, token: str | None, shown_as: str | Path | None = None) -> None:
    """Refuse a folder whose file names or contents hold the token or a token-shaped string (names the file, as
    ``shown_as/...`` when the folder is a staged copy of ``shown_as``). Links are not followed: scan a copy."""
    folder = Path(folder)
    shown = Path(shown_as) if shown_as is not None else folder
    needles = [token.encode()] if token else []
    for parent, dirs, files in os.walk(folder):  # followlinks=False: a link loop is never entered
        dirs.sort()
        for name in sorted(dirs + files):
            path = Path(parent) / name
            rel = path.relative_to(folder).as_posix()
            if (token and token in rel) or TOKEN_SHAPED.search(rel):
                raise ConfigError(f"{shown}: a file name holds a Hugging Face token ({scrub(rel, token)}); rename or "
                                  f"remove it before pushing")
            if path.is_file() and not path.is_symlink() and _file_holds_secret(path, needles):
                raise ConfigError(f"{shown / rel}: contains a Hugging Face token (yours, or a string shaped like one: "
                                  f"hf_...); remove it before pushing")


#: What a push never uploads: pickle files and hidden files, in any folder (``shutil.copytree``'s ``ignore``).
def not_uploaded(folder: str, names: list[str]) -> set[str]:
    return {name for name in names if name.startswith(".") or is_pickle_name(name)}


def check_links(folder: str | Path) -> None:
    """Refuse what a push cannot copy faithfully: a link that leaves the folder (its target would be uploaded), a
    broken link, a loop of links to folders (the copy would never end) and anything but files and folders (a FIFO
    would block). Walks the folder as the copy does, following links to folders inside it; what is never uploaded
    (hidden files, pickles) is skipped."""
    root = Path(os.path.realpath(folder))

    def visit(real_dir: Path, shown: Path, ancestors: frozenset) -> None:
        names = sorted(os.listdir(real_dir))
        skipped = not_uploaded(str(real_dir), names)
        for name in names:
            if name in skipped:
                continue
            path, where = real_dir / name, shown / name
            target = Path(os.path.realpath(path))
            if path.is_symlink():
                if not target.exists():
                    raise ConfigError(f"{where}: a broken link; remove it or restore what it points to before pushing")
                if target != root and root not in target.parents:
                    raise ConfigError(f"{where}: a link that leaves the folder (to {target}); a push uploads what "
                                      f"links point to: copy what you mean to publish into the folder, or remove the link")
            if target.is_dir():
                if target in ancestors:
                    raise ConfigError(f"{where}: a link to a folder that holds it (a loop); remove the link before pushing")
                visit(target, where, ancestors | {target})
            elif not target.is_file():
                raise ConfigError(f"{where}: not a file or a folder (a FIFO, socket or device); remove it before pushing")

    visit(root, Path(folder), frozenset({root}))


# ------------------------------------------------------------------------------------------------ pushing


def _repo_id(repo_id: str) -> str:
    parsed = parse_hub_id(str(repo_id))
    if parsed is None or str(repo_id).startswith("hf-hub:"):
        raise ConfigError(f"--repo '{repo_id}': write a Hub id as ORG/NAME")
    if parsed[1] is not None:
        raise ConfigError(f"--repo '{repo_id}': give the branch with --revision, not @")
    return parsed[0]


def check_push(repo_id: str) -> tuple[str, str]:
    """What a push needs before any work starts: a valid repo id, the network allowed and a token.
    Returns ``(repo, token)``; called early (before fine-tuning or meta-training) and again by :func:`push_folder`."""
    repo = _repo_id(repo_id)
    if hub_offline():
        raise ConfigError(f"cannot push to {repo}: HF_HUB_OFFLINE is set; unset it to publish")
    token = get_token()
    if not token:
        raise ConfigError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access)")
    if not (token.isascii() and token.isprintable()) or any(c.isspace() for c in token):
        raise ConfigError("the Hugging Face token (HF_TOKEN or the saved login) holds a space or a character that is "
                          "not printable ASCII (a pasted quote or letter?): set it again to the token as shown on "
                          "huggingface.co")
    return repo, token


def staging_error(error: OSError, where: str | Path | None = None) -> ConfigError:
    """An ``OSError`` while a push is staged (a temporary copy, before anything is uploaded) as one line with the
    path: TMPDIR full, read-only or missing."""
    from ..atomic import os_error_reason

    where = where or tempfile.gettempdir()
    why = error.args[0][0][2] if isinstance(error, shutil.Error) and error.args and error.args[0] else None
    reason = os_error_reason(error) if error.errno is not None else None
    return ConfigError(f"cannot stage the push in {where}: {' '.join(str(reason or why or error).split())[:200]}; "
                       "nothing was uploaded: free space there, or set TMPDIR to a folder with room")


def push_folder(folder: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                commit_message: str | None = None, create_pr: bool = False, overwrite_card: bool = False, log=None):
    """Upload ``folder`` to the model repo ``repo_id`` (created if needed) from a temporary copy; returns the
    ``CommitInfo``. The user's folder is never edited; the Hub's existing ``README.md`` is kept unless
    ``overwrite_card``; ``create_pr`` opens a pull request instead of committing to the branch."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    repo, token = check_push(repo_id)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder to push")
    check_links(folder)
    pickles = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if is_pickle_name(p.name) or (
        p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts) and is_pickle_file(p)))
    if pickles:
        raise CheckpointError(f"{folder}: holds pickle files ({', '.join(pickles[:3])}); ctinit publishes safetensors only: remove them")
    with _temporary_folder() as tmp:
        staged = Path(tmp) / "repo"
        readme = staged / "README.md"
        try:
            shutil.copytree(folder, staged, ignore=not_uploaded)  # links become the files they point to
            if readme.is_file():
                readme.write_text(PLACEHOLDER.sub(repo, readme.read_text()))
        except OSError as e:
            raise staging_error(e, tmp) from e
        check_no_secrets(staged, token, shown_as=folder)  # the copy: exactly what is uploaded
        api = HfApi(token=token, library_name="ctinit", library_version=__version__)
        try:
            api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
            if revision and revision != "main" and not create_pr:
                api.create_branch(repo, branch=revision, exist_ok=True, repo_type="model")
            if readme.is_file() and not overwrite_card and api.file_exists(repo, "README.md", revision=revision,
                                                                          repo_type="model"):
                readme.unlink()  # keep the card on the Hub (it may have been edited there)
                if log:
                    log(f"push: kept the model card already on {repo} (pass --overwrite-card to replace it)")
            return api.upload_folder(
                repo_id=repo, folder_path=str(staged), repo_type="model", revision=revision, create_pr=create_pr,
                commit_message=commit_message or "Upload with ctinit", ignore_patterns=IGNORE_PATTERNS)
        except Exception as e:  # noqa: BLE001 - mapped to one line
            raise _push_error(e, repo, revision, token) from e


def _temporary_folder():
    """A temporary folder for staging a push; one that cannot be made (TMPDIR full or missing) is one line."""
    try:
        return tempfile.TemporaryDirectory(prefix="ctinit-push-", ignore_cleanup_errors=True)
    except OSError as e:
        raise staging_error(e) from e


def _push_error(exc: BaseException, repo: str, revision: str | None, token: str) -> Exception:
    status = http_status(exc)
    if status in (401, 403):
        return ConfigError(f"{repo}: not allowed to write (HTTP {status}); use a token with write access to "
                           f"{repo.split('/')[0]} (HF_TOKEN or `hf auth login`)")
    if status == 429:
        return CheckpointError(f"{repo}: the Hub is rate-limiting these requests (HTTP 429){retry_after(exc)}; the push "
                               f"did not complete: wait, then push again")
    if isinstance(status, int) and status >= 500:
        return CheckpointError(f"{repo}: the Hub failed (HTTP {status}); the push did not complete: push again later")
    if is_connection_error(exc):
        return CheckpointError(f"{repo}: cannot reach the Hub to push ({type(exc).__name__}); the push did not "
                               f"complete: check the network and push again")
    error = hub_error(exc, repo, revision)
    if error is None:
        return type(exc)(scrub(str(exc), token)) if isinstance(exc, CheckpointError) else exc
    return type(error)(scrub(str(error), token))


class PushToHubMixin:
    """``push_to_hub`` for a model that can write its folder: a class defines ``write_hub_folder(folder, *,
    repo_id, **options)`` (the files of :meth:`save_pretrained`, the card naming ``repo_id``), and pushing writes that
    folder into a temporary directory and uploads it with :func:`push_folder` (checked first: the repo id, the
    network, a token; then links, pickles and secrets). Like timm's and transformers' mixins, but through ctinit's
    one push path."""

    def write_hub_folder(self, folder: Path, *, repo_id: str, **options) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not write a Hub folder")

    def push_to_hub(self, repo_id: str, *, private: bool = False, revision: str | None = None,
                    commit_message: str | None = None, create_pr: bool = False, overwrite_card: bool = False,
                    log=None, **options):
        """Upload this model to the model repo ``repo_id`` (created if needed); returns the ``CommitInfo``.
        ``options`` go to :meth:`write_hub_folder` (``license``, ``labels``...)."""
        check_push(repo_id)  # before the folder is written
        with _temporary_folder() as tmp:
            try:
                self.write_hub_folder(Path(tmp), repo_id=repo_id, **options)
            except OSError as e:
                raise staging_error(e, tmp) from e
            return push_folder(tmp, repo_id, private=private, revision=revision, commit_message=commit_message,
                               create_pr=create_pr, overwrite_card=overwrite_card, log=log)


__all__ = ["IGNORE_PATTERNS", "PushToHubMixin", "check_links", "check_no_secrets", "check_push", "not_uploaded",
           "push_folder", "staging_error"]
