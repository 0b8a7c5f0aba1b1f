"""Task data: specs (npz:, folder:, hf:, builtin:) -> uint8 tensors on the device -> augmented batches."""
from .builtin import BUILTIN_TASKS, COLOUR_META_TEST, COLOUR_META_TRAIN, META_TEST, META_TRAIN, SUITES, builtin_path

#: Imported on first use (they import torch): `ctinit list` reads the bundled task names without torch.
_LAZY = {"BatchSampler": "sampler", "DeviceBatchSampler": "sampler", "eval_batches": "sampler",
         "random_crop_flip": "sampler", "to_float": "sampler", "TaskData": "data",
         "load_task": "specs", "parse_spec": "specs", "task_name": "specs"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BUILTIN_TASKS", "COLOUR_META_TEST", "COLOUR_META_TRAIN", "META_TEST", "META_TRAIN", "SUITES", "BatchSampler",
    "DeviceBatchSampler", "TaskData", "builtin_path", "eval_batches",
    "load_task", "parse_spec", "random_crop_flip", "task_name", "to_float",
]
