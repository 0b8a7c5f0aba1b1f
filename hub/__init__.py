"""Publish initializations on the Hugging Face Hub: export a run as a model repo folder, render its card,
push, pull and list.

    ctinit-hub export RUN_DIR OUT_DIR [--repo ORG/NAME] [--license apache-2.0] [--results EVAL_DIR]
    ctinit-hub push OUT_DIR --repo ORG/NAME [--private] [--revision BRANCH] [--commit-message TEXT]
    ctinit-hub pull ORG/NAME [--revision REV] [--out DIR]
    ctinit-hub list [--author ORG]

``hub`` imports ``ctinit``; ``ctinit`` never imports ``hub``. Every Hub call goes through ``huggingface_hub``; the
token comes from ``HF_TOKEN`` or the saved login (``hf auth login``) and is never printed or written.
"""
from __future__ import annotations

from .card import TEMPLATE, render_card
from .export import export_run
from .remote import pull, push

__all__ = ["TEMPLATE", "export_run", "pull", "push", "render_card"]
