"""Register model classes with transformers' Auto classes without importing them (or transformers' modeling code).

``import ctinit`` must stay light: transformers' ``modeling_utils`` imports Accelerate when it is installed, and the
core never needs it. The Auto mappings only look a class up when a model is built, so a stand-in that imports the
real class on first use is registered instead; it carries the real class's name (the pipelines check model class
names) and its ``config_class`` (``register`` checks that).
"""
from __future__ import annotations

import importlib


class _LazyClass(type):
    def resolve(cls) -> type:
        return getattr(importlib.import_module(cls._ctinit_module), cls.__name__)

    def __getattr__(cls, name):
        if name.startswith("__") or name in ("_ctinit_module",):
            raise AttributeError(name)
        return getattr(cls.resolve(), name)

    def __call__(cls, *args, **kwargs):
        return cls.resolve()(*args, **kwargs)

    def __instancecheck__(cls, obj) -> bool:
        return isinstance(obj, cls.resolve())

    def __subclasscheck__(cls, sub) -> bool:
        return issubclass(sub, cls.resolve())


def lazy_class(module: str, name: str, config_class: type) -> type:
    """A stand-in for ``module.name`` that imports it on first use."""
    return _LazyClass(name, (), {"_ctinit_module": module, "config_class": config_class, "__module__": module})


__all__ = ["lazy_class"]
