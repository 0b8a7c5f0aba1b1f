"""Hub failures as one line: huggingface_hub's exception types (``huggingface_hub.errors``) and the network's mapped
to a :class:`~ctinit.errors.CheckpointError` that says what is wrong and what to do."""
from __future__ import annotations

from ..errors import CheckpointError, CtinitError
from .names import CONFIG_NAME, WEIGHTS_NAME, one_line


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set (read the way huggingface_hub reads it)."""
    from huggingface_hub import constants

    check = getattr(constants, "is_offline_mode", None)
    return bool(check()) if callable(check) else bool(getattr(constants, "HF_HUB_OFFLINE", False))


def hub_cache() -> str:
    """The Hugging Face cache folder (``HF_HUB_CACHE``)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _hub_types(*names: str) -> tuple[type, ...]:
    """The exception types of ``huggingface_hub.errors`` with these names (an older huggingface_hub lacks some)."""
    from huggingface_hub import errors

    return tuple(t for t in (getattr(errors, name, None) for name in names) if isinstance(t, type))


#: The HTTP clients huggingface_hub has used (httpx2 or httpx since 1.0, requests before) and their transport
#: failures (connect and read errors, timeouts, proxy errors).
_CLIENT_ERRORS = {"httpx2": ("TransportError",), "httpx": ("TransportError",), "requests": ("ConnectionError", "Timeout")}


def _network_types() -> tuple[type, ...]:
    """The exception types that mean the network failed, for whichever HTTP clients are installed."""
    import importlib

    types: list[type] = [ConnectionError, TimeoutError, *_hub_types("OfflineModeIsEnabled")]
    for module_name, names in _CLIENT_ERRORS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        types += [t for t in (getattr(module, name, None) for name in names) if isinstance(t, type)]
    return tuple(types)


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of a failed Hub request, if it has one."""
    return getattr(getattr(exc, "response", None), "status_code", None)


def retry_after(exc: BaseException) -> str:
    """``", retry after N s"`` from a failed request's ``Retry-After`` header, or ``""``."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    value = str(headers.get("Retry-After", "")).strip()
    return f", retry after {value} s" if value.isdigit() else ""


def is_connection_error(exc: BaseException) -> bool:
    """Whether a huggingface_hub / network exception means the Hub could not be reached (a server error too)."""
    if isinstance(exc, _network_types()):
        return True
    status = http_status(exc)
    return isinstance(exc, _hub_types("HfHubHTTPError")) and isinstance(status, int) and status >= 500


def _is(exc: BaseException, *names: str) -> bool:
    return isinstance(exc, _hub_types(*names))


def hub_error(exc: BaseException, repo_id: str, revision: str | None) -> CtinitError | None:
    """A one-line :class:`CheckpointError` for a huggingface_hub error about ``repo_id``; None if it is not one."""
    rev = revision or "main"
    where = f"{repo_id}@{rev}"
    first = one_line(str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__, 200)
    if _is(exc, "RevisionNotFoundError"):
        return CheckpointError(f"{repo_id}: no revision '{rev}' in this Hub repo; pass an existing branch, tag or commit hash")
    if _is(exc, "GatedRepoError"):
        return CheckpointError(f"{repo_id}: a gated Hub repo; accept its terms on huggingface.co, then log in (HF_TOKEN or `hf auth login`)")
    if _is(exc, "RepositoryNotFoundError"):
        return CheckpointError(f"'{repo_id}': no such local directory, and no Hub model repo of that name (if it is private, "
                               f"set HF_TOKEN or run `hf auth login`)")
    if _is(exc, "DisabledRepoError"):
        return CheckpointError(f"{repo_id}: this Hub repo has been disabled")
    if _is(exc, "IncompleteSnapshotError"):
        return CheckpointError(f"{where}: the cached copy is incomplete and the Hub cannot be reached; download it again online")
    if _is(exc, "HFValidationError"):
        return CheckpointError(f"'{repo_id}': not a valid Hub repo id ({first}); write ORG/NAME or a local directory")
    if _is(exc, "LocalEntryNotFoundError", "OfflineModeIsEnabled", "CachedRepoTreeNotFoundError"):
        if hub_offline():
            return CheckpointError(f"{where}: no cached copy in {hub_cache()} and HF_HUB_OFFLINE=1 forbids downloading; "
                                   f"download it once online (ctinit-hub pull {repo_id}) or unset HF_HUB_OFFLINE")
        return CheckpointError(f"{where}: the Hub cannot be reached and there is no cached copy in {hub_cache()}; "
                               f"check the network (or the repo id), or pass a local directory")
    if _is(exc, "EntryNotFoundError"):
        return CheckpointError(f"{where}: a file is missing in this Hub repo ({first}); an initialization repo holds "
                               f"{CONFIG_NAME} and {WEIGHTS_NAME}")
    if isinstance(exc, OSError) and "Consistency check failed" in str(exc):  # huggingface_hub's size check
        return CheckpointError(f"{where}: a download from the Hub was cut short (fewer bytes than the Hub announced); "
                               f"nothing of it was kept: download again")
    if http_status(exc) == 429:
        return CheckpointError(f"{repo_id}: the Hub is rate-limiting these requests (HTTP 429){retry_after(exc)}; "
                               f"wait, then rerun")
    if is_connection_error(exc):
        if hub_offline():
            return CheckpointError(f"{where}: HF_HUB_OFFLINE=1 is set and there is no cached copy; download it once "
                                   f"online (ctinit-hub pull {repo_id}) or unset HF_HUB_OFFLINE")
        return CheckpointError(f"{where}: the Hub cannot be reached ({type(exc).__name__}: {first}) and there is no cached copy")
    if _is(exc, "HfHubHTTPError"):
        status = http_status(exc)
        if status in (401, 403):
            return CheckpointError(f"{repo_id}: not authorized (HTTP {status}); set HF_TOKEN or run `hf auth login` with a token that can read it")
        return CheckpointError(f"{repo_id}: Hub request failed (HTTP {status}): {first}")
    return None


def raise_hub_error(exc: BaseException, repo_id: str, revision: str | None) -> None:
    """Raise :func:`hub_error`'s line for ``exc`` (chained), or ``exc`` itself when it is no Hub error."""
    error = hub_error(exc, repo_id, revision)
    if error is None:
        raise exc
    raise error from exc


__all__ = ["http_status", "hub_cache", "hub_error", "hub_offline", "is_connection_error", "raise_hub_error",
           "retry_after"]
