"""Hugging Face tokens: the one the user has, what looks like one, and text with both blanked out.

Every command's error line goes through :func:`scrub` (``ctinit.entrypoint``), and publishing refuses files that
hold a token (``ctinit.hubio.upload``). Imports nothing of ctinit, and huggingface_hub only when the token is asked for.
"""
from __future__ import annotations

import re

#: A Hugging Face token: ``hf_`` and its letters and digits (current tokens have 34 of them).
TOKEN_SHAPED = re.compile(r"hf_[A-Za-z0-9]{30,}")
TOKEN_SHAPED_BYTES = re.compile(rb"hf_[A-Za-z0-9]{30,}")


def get_token() -> str | None:
    """The token huggingface_hub would use (``HF_TOKEN``, else the saved login); never printed or written."""
    try:
        from huggingface_hub import get_token as _get_token
    except ImportError:  # older huggingface_hub
        from huggingface_hub.utils import get_token as _get_token
    return _get_token()


def scrub(text: str, token: str | None = None) -> str:
    """``text`` with the token and anything token-shaped replaced by ``hf_***``."""
    try:
        token = token if token is not None else get_token()
    except Exception:  # noqa: BLE001 - an error line must be printed even if the token cannot be read
        token = None
    if token:
        text = text.replace(token, "hf_***")
    return TOKEN_SHAPED.sub("hf_***", text)


__all__ = ["TOKEN_SHAPED", "TOKEN_SHAPED_BYTES", "get_token", "scrub"]
