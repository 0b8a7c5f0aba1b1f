"""``import ctinit`` registers the ctinit backbones with transformers' Auto classes without importing transformers.

Importing transformers and torch takes seconds, and ``ctinit --help``, ``ctinit list`` and an argument error need
neither. So ``import ctinit`` registers the backbones (:mod:`ctinit.models` does it on import) at once only when
transformers is already imported; otherwise it arranges for :mod:`ctinit.models` to be imported right after
transformers is, whoever imports it. Either way, once both are imported,
``AutoModel.from_pretrained(folder)`` knows the ctinit model types, as it did when ``import ctinit`` imported them.
Standard library only.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

TRANSFORMERS = "transformers"
MODELS = "ctinit.models"


def register_models() -> None:
    """Import :mod:`ctinit.models`, which registers the ctinit model types with transformers' Auto classes."""
    if MODELS not in sys.modules:
        importlib.import_module(MODELS)


class _RegisterAfterLoad(importlib.abc.Loader):
    """transformers' own loader, then :func:`register_models` once its ``__init__`` has run."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        register_models()

    def __getattr__(self, name):  # get_resource_reader, is_package, get_source...: transformers' loader answers
        return getattr(self._loader, name)


class _TransformersImportHook(importlib.abc.MetaPathFinder):
    """Finds nothing itself: on the first import of transformers it wraps the real spec's loader (and leaves)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != TRANSFORMERS:
            return None
        uninstall()
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisterAfterLoad(spec.loader)
        return spec


def _hooks() -> list:
    return [finder for finder in sys.meta_path if isinstance(finder, _TransformersImportHook)]


def uninstall() -> None:
    for finder in _hooks():
        sys.meta_path.remove(finder)


def install() -> None:
    """Register now if transformers is imported, else right after it is (once; idempotent)."""
    if TRANSFORMERS in sys.modules:
        register_models()
    elif not _hooks():
        sys.meta_path.insert(0, _TransformersImportHook())


__all__ = ["install", "register_models", "uninstall"]
