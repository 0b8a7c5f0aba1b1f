"""Task data: specs (npz:, folder:, hf:, builtin:) -> uint8 tensors on the device -> augmented batches."""
from .builtin import BUILTIN_TASKS, COLOUR_META_TEST, COLOUR_META_TRAIN, META_TEST, META_TRAIN, SUITES, builtin_path
from .sampler import BatchSampler, DeviceBatchSampler, eval_batches, random_crop_flip, to_float
from .data import TaskData
from .specs import load_task, parse_spec, task_name

__all__ = [
    "BUILTIN_TASKS", "COLOUR_META_TEST", "COLOUR_META_TRAIN", "META_TEST", "META_TRAIN", "SUITES", "BatchSampler",
    "DeviceBatchSampler", "TaskData", "builtin_path", "eval_batches",
    "load_task", "parse_spec", "random_crop_flip", "task_name", "to_float",
]
