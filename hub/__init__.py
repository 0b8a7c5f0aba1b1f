"""Publish initializations on the Hugging Face Hub: export a run as a model repo folder, render its card,
push, pull and list.

    ctinit-hub export RUN_DIR OUT_DIR [--repo ORG/NAME] [--license ID] [--results EVAL_DIR]
    ctinit-hub push OUT_DIR --repo ORG/NAME [--private] [--revision BRANCH] [--create-pr] [--overwrite-card]
    ctinit-hub update-card OUT_DIR EVAL_DIR
    ctinit-hub pull ORG/NAME [--revision REV] [--out DIR]
    ctinit-hub push-zoo --org ORG [--dry-run] [--private]
    ctinit-hub list [--author ORG]

``hub`` imports ``ctinit`` (public names only); ``ctinit`` never imports ``hub``. Pushing goes through
``ctinit.hubio.push_folder``, the one push path of every command. The token comes from ``HF_TOKEN`` or the saved
login (``hf auth login``) and is never printed or written.
"""
from __future__ import annotations

#: Imported on first use (they import torch and transformers): `ctinit-hub --help` answers without them.
_LAZY = {"TEMPLATE": "card", "render_init_card": "card", "export_run": "export", "pull": "remote", "push": "remote"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["TEMPLATE", "export_run", "pull", "push", "render_init_card"]
