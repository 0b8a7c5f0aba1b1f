"""The wheel built from the repository: no generic top-level modules, the recipes and the card template inside."""
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_installs_only_ctinit_names_with_recipes_and_card_template(tmp_path):
    pytest.importorskip("setuptools")
    src = tmp_path / "src"  # a copy, so that the build leaves no build/ or egg-info in the checkout
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "runs", "__pycache__", ".pytest_cache", "ctinit_training",
        "ctinit_hub", "benchmarks", "tests", "gpu_out"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                             "-q", "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    [wheel] = list((tmp_path / "dist").glob("ctinit-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"ctinit", "ctinit_training", "ctinit_hub"}
    assert not top & {"hub", "training", "model_cards"}
    for needed in ("ctinit_training/recipes/quickstart.yaml", "ctinit_training/recipes/tiny.yaml",
                   "ctinit_training/recipes/paper.yaml", "ctinit/hubio/templates/initialization.md",
                   "ctinit/hubio/templates/classifier.md",
                   "ctinit/data/builtin/LICENSES.md", "ctinit/data/colour/LICENSES.md", "ctinit/data/colour/cards.npz",
                   "ctinit/hubio/upload.py", "ctinit/execution/precision.py", "ctinit/predict.py"):
        assert needed in names, needed
    assert any(n.startswith("ctinit/data/builtin/") and n.endswith(".npz") for n in names)
    assert "ctinit/zoo/registry.json" in names and "ctinit/zoo/__init__.py" in names
    for entry in json.loads((ROOT / "ctinit" / "zoo" / "registry.json").read_text()):  # every entry works offline
        for file in ("config.json", "model.safetensors", "README.md", "preprocessor_config.json"):
            assert f"ctinit/zoo/weights/{entry['name']}/{file}" in names, (entry["name"], file)
        assert f"ctinit_training/recipes/{entry['recipe'].removeprefix('training/recipes/')}" in names
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Project-URL: Paper, https://arxiv.org/abs/2102.07215" in text  # [project.urls] reaches the metadata
    # what `pip show` reads: the license (and its full text in the wheel), the author, the lock's dependency
    assert "License-Expression: Apache-2.0" in text and "Author: ctinit developers" in text
    assert "License-File: LICENSE" in text and "Requires-Dist: filelock" in text
    license_text = zipfile.ZipFile(wheel).read(metadata.replace("METADATA", "licenses/LICENSE")).decode()
    assert license_text == (ROOT / "LICENSE").read_text() and "Apache License" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
    entry_points = zipfile.ZipFile(wheel).read(metadata.replace("METADATA", "entry_points.txt")).decode()
    # ctinit-train's parser answers --help and argument errors before the trainer (and torch) is imported
    assert "ctinit-train = ctinit_training.cli:main" in entry_points and "ctinit-hub" in entry_points

    # From the wheel's files alone (outside the checkout, offline): the zoo, the bundled tasks and the recipes list.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    import os

    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    listed = subprocess.run([sys.executable, "-c", "import sys; from ctinit.cli import main; sys.exit(main(['list', '--json']))"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr[-2000:]
    data = json.loads(listed.stdout)
    registry = json.loads((ROOT / "ctinit" / "zoo" / "registry.json").read_text())
    assert [z["name"] for z in data["zoo"]] == [e["name"] for e in registry]
    assert "quickstart" in [r["name"] for r in data["recipes"]] and data["tasks"]
    # and fine-tunes a zoo entry by name on a user's npz file, with no meta-training first
    import numpy as np

    rng = np.random.default_rng(0)
    data = tmp_path / "t.npz"
    np.savez(data, x_train=rng.integers(0, 256, (24, 28, 28), dtype=np.uint8), y_train=np.arange(24) % 3,
             x_test=rng.integers(0, 256, (9, 28, 28), dtype=np.uint8), y_test=np.arange(9) % 3)
    tuned = subprocess.run([sys.executable, "-c", "import sys; from ctinit.cli import main; sys.exit(main(sys.argv[1:]))",
                            "finetune", "--init", f"zoo:{registry[0]['name']}", "--data", f"npz:{data}", "--steps", "3",
                            "--batch-size", "8", "--json", "--no-progress", "--out", str(tmp_path / "model")],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    assert 0.0 <= json.loads(tuned.stdout)["test_accuracy"] <= 1.0
    assert (tmp_path / "model" / "model.safetensors").is_file()
