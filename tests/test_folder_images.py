"""``folder:`` tasks resize each image as it is read (JPEGs decoded at a reduced scale): a folder of large photos
never sits in memory at full size."""
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from ctinit.images import read_image_array
from ctinit.tasks import load_task

SIDE = 1500  # an RGB image of this side is 6.75 MB as a uint8 array


@pytest.fixture
def large_folder(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(4):
            pixels = np.full((SIDE, SIDE, 3), 40 * i + (100 if c == "b" else 0), np.uint8)
            pixels[::97, ::89] = rng.integers(0, 255, (len(range(0, SIDE, 97)), len(range(0, SIDE, 89)), 3))
            Image.fromarray(pixels).save(tmp_path / c / f"{i}.png")
    return tmp_path


def test_a_folder_of_large_images_is_never_held_at_full_size(large_folder):
    one_image = SIDE * SIDE * 3
    tracemalloc.start()
    try:
        task = load_task(f"folder:{large_folder}", image_size=16, seed=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert task.x_train.shape[1:] == (3, 16, 16) and len(task.y_train) + len(task.y_test) == 8
    # reading one image costs about 3 of its size at once (PIL's bytes, their join, the array); held at full size,
    # the 8 images and their stacked copy would be 16
    assert peak < 4 * one_image, f"peak {peak / 1e6:.1f} MB for 8 images of {one_image / 1e6:.1f} MB"


def test_a_jpeg_is_decoded_at_a_reduced_scale(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.full((2000, 1600, 3), 128, np.uint8)).save(path, quality=90)
    assert read_image_array(path).shape == (2000, 1600, 3)
    reduced = read_image_array(path, reduce_to=32)
    assert reduced.shape == (250, 200, 3)  # 1/8 scale: both sides still at least 2 x 32
    assert read_image_array(path, reduce_to=300).shape == (1000, 800, 3)  # 1/2: 1/4 would go below 600
