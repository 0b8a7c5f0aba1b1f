"""Small data shared by the tests."""
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
