"""Small data and steps shared by the tests."""
import importlib.util
from pathlib import Path

import numpy as np


def make_npz(path, n_per_class=12, classes=3, size=28, seed=0):
    """An npz task (``x, y``) where a bright bar's position is the class: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    x = rng.integers(0, 40, size=(len(y), size, size), dtype=np.uint8)
    for c in range(classes):
        x[y == c, 4 + 6 * c:8 + 6 * c, :] = 220
    np.savez(path, x=x, y=y)
    return path


def weights(init_dir):
    """The tensors of an initialization folder's model.safetensors."""
    from safetensors.torch import load_file

    return load_file(str(Path(init_dir) / "model.safetensors"))


def resumed_pair(make, steps, make_resumed=None):
    """Engine ``a`` from ``make()``, stepped ``2 * steps``; engine ``b`` from ``make_resumed()`` (default ``make``),
    loaded from ``a``'s state after ``steps`` steps, its batch sources (the caller's state, not in the engine's)
    replayed past those steps, then stepped ``steps`` more. A resume is exact when the two agree."""
    a = make()
    for _ in range(steps):
        a.step()
    state = a.state_dict()
    for _ in range(steps):
        a.step()
    b = (make_resumed or make)()
    b.load_state_dict(state)
    for _ in range(steps):
        for source in b.batches:
            source()
    for _ in range(steps):
        b.step()
    return a, b


def load_script(relative: str, name: str | None = None):
    """A script of the checkout (``scripts/zoo.py``, ``benchmarks/newcomer.py``...) imported as a module."""
    path = Path(__file__).resolve().parent.parent / relative
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
