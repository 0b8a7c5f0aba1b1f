"""Issue 23, models and inputs: the suite ignores the user's HF_* variables, from_pretrained initialises every
tensor, predict's JSON is always valid, --hflip/--no-hflip, bounds on seeds and images, the one image reader.

Model folders with missing, extra or mis-shaped tensors and odd configs are fuzzed in test_model_folder_fuzz.py."""
import json
import math
import os
import subprocess
import sys
import threading
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import ctinit
from ctinit.cli import main as cli_main
from ctinit.loading import save_init
from ctinit.models import is_ctinit_config

from helpers import make_npz

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_UserTokenThatTestsMustNotSee12345678"


def one_line(capsys, needle):
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctinit: error:") and needle in lines[0], err
    return out, lines[0]


# ------------------------------------------------------------------------------ the test command


def test_a_test_sees_none_of_the_users_hub_settings():
    from huggingface_hub import constants

    from ctinit.errors import ConfigError
    from ctinit.hubio.errors import hub_offline
    from ctinit.hubio.upload import check_push
    from ctinit.tokens import get_token

    assert not hub_offline() and get_token() is None
    assert not any(os.environ.get(name) for name in ("HF_HUB_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"))
    assert not Path(constants.HF_TOKEN_PATH).exists()
    with pytest.raises(ConfigError, match="no Hugging Face token"):  # what a test of --push-to-hub expects
        check_push("me/model")


def test_the_suite_passes_with_an_offline_users_hub_settings(tmp_path):
    """The README's test command on a machine with HF_HUB_OFFLINE=1, a token and a saved login (where the test of
    `finetune --push-to-hub` without a token once got "HF_HUB_OFFLINE is set"): the test above passes there too."""
    home = tmp_path / "hf-home"
    home.mkdir()
    (home / "token").write_text(TOKEN)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_TOKEN": TOKEN, "HF_HOME": str(home), "OMP_NUM_THREADS": "1",
           "PYTHONDONTWRITEBYTECODE": "1"}
    test = f"tests/test_hardening_models.py::{test_a_test_sees_none_of_the_users_hub_settings.__name__}"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]  # 5 if nothing ran, 1 if it failed


def test_ci_runs_the_readme_test_command_then_the_suite_offline():
    readme = (ROOT / "README.md").read_text()
    command = "pip install torch==2.13.0 -e '.[dev,datasets]' && python -m pytest"
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert command in readme and command in ci
    assert ci.index("HF_HUB_OFFLINE=1 python -m pytest") > ci.index(command)


# ------------------------------------------------------------------------------ 1. every tensor initialised

ARCHS = ["resnet20", "resnet32", "resnet56", "convnet4", "convnet4-32", "hf-vit-tiny", "hf-convnext-tiny"]


@pytest.fixture(scope="module")
def inits(tmp_path_factory):
    root = tmp_path_factory.mktemp("inits")
    torch.manual_seed(0)
    for arch in ARCHS:
        save_init(ctinit.build_backbone(arch), root / arch, {"algorithm": "cts"})
    return root


def _load_quietly(folder, seed, **kwargs):
    from transformers import AutoModelForImageClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(seed)
    return AutoModelForImageClassification.from_pretrained(str(folder), **kwargs)


def _assert_fresh_head(models, kept: dict):
    """Every tensor finite, the checkpoint's tensors kept, and a head drawn from the seed: the same for one seed,
    other values for another (uninitialised memory fails one of the two), within torch's default bound for ctinit
    backbones (what ctinit.finetune's fresh head gets)."""
    a, again, other = models
    for model in models:
        state = model.state_dict()
        for name, tensor in state.items():
            assert torch.isfinite(tensor.float()).all(), name
        for name, tensor in kept.items():
            assert torch.equal(state[name], tensor), name
    for name in ("classifier.weight", "classifier.bias"):
        assert torch.equal(a.state_dict()[name], again.state_dict()[name]), name
    assert not torch.equal(a.classifier.weight, other.classifier.weight)
    assert a.classifier.weight.abs().sum() > 0
    if is_ctinit_config(a.config):
        bound = 1 / math.sqrt(a.classifier.in_features)
        assert a.classifier.weight.abs().max() <= bound and a.classifier.bias.abs().max() <= bound


@pytest.mark.parametrize("arch", ARCHS)
def test_from_pretrained_with_num_labels_initialises_the_head(inits, arch):
    from safetensors.torch import load_file

    folder = inits / arch
    models = [_load_quietly(folder, seed, num_labels=8) for seed in (1, 1, 2)]
    prefix = models[0].base_model_prefix
    kept = {f"{prefix}.{k}": v for k, v in load_file(str(folder / "model.safetensors")).items()}
    kept = {k: v for k, v in kept.items() if k in models[0].state_dict()}  # transformers renames some ViT keys
    assert kept
    _assert_fresh_head(models, kept)


@pytest.mark.parametrize("arch", ARCHS)
def test_ignore_mismatched_sizes_on_a_finetuned_folder_initialises_the_new_head(tmp_path, arch):
    from ctinit.models.finetuned_folder import save_finetuned

    torch.manual_seed(0)
    save_finetuned(ctinit.ImageClassifier(ctinit.build_backbone(arch), 3), tmp_path / "model")
    three = _load_quietly(tmp_path / "model", 0)
    models = [_load_quietly(tmp_path / "model", seed, num_labels=5, ignore_mismatched_sizes=True) for seed in (1, 1, 2)]
    kept = {k: v for k, v in three.state_dict().items() if not k.startswith("classifier.")}
    _assert_fresh_head(models, kept)


@pytest.mark.parametrize("arch", [a for a in ARCHS if not a.startswith("hf-")])
def test_init_weights_covers_every_tensor_of_the_ctinit_models(arch):
    """_init_weights is what transformers calls for whatever a checkpoint lacks: applied to a model whose every
    parameter and buffer is NaN (or -1), nothing is left unset."""
    from transformers import AutoModelForImageClassification

    config = ctinit.backbone_config(arch)
    config.num_labels = 4
    model = AutoModelForImageClassification.from_config(config)
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.fill_(float("nan") if tensor.is_floating_point() else -1)
    for module in model.modules():
        model._init_weights(module)
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            assert torch.isfinite(tensor).all(), name
        else:
            assert (tensor >= 0).all(), name


# ------------------------------------------------------------------------------ predict: scores, devices, files


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from ctinit.models.finetuned_folder import save_finetuned

    root = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    save_finetuned(ctinit.ImageClassifier(ctinit.build_backbone("convnet4-32"), 3), root / "model",
                   labels=["a", "b", "c"])
    return root / "model"


def _png(path, array):
    from PIL import Image

    Image.fromarray(array).save(path)
    return path


def noise(size=28, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_scores_that_are_not_finite_are_an_error_not_json_nan(model_dir, tmp_path, capsys):
    """Finite weights so large that the logits overflow: the softmax is NaN; predict says so, prints no score."""
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "overflowing"
    shutil.copytree(model_dir, broken)
    tensors = load_file(str(broken / "model.safetensors"))
    tensors["classifier.weight"] = torch.full_like(tensors["classifier.weight"], 3e38)
    save_file(tensors, str(broken / "model.safetensors"))
    image = _png(tmp_path / "x.png", noise())
    capsys.readouterr()
    assert cli_main(["predict", "--model", str(broken), str(image), "--json"]) == 2
    out, _ = one_line(capsys, "the scores are not finite numbers")
    assert out == ""


@pytest.mark.parametrize("device", ["cuda:99", "meta", "tpu"])
def test_predict_device_that_cannot_run_here_is_one_line(model_dir, tmp_path, capsys, device):
    image = _png(tmp_path / "x.png", noise())
    capsys.readouterr()
    assert cli_main(["predict", "--model", str(model_dir), str(image), "--device", device]) == 2
    one_line(capsys, "--device")


def test_predict_refuses_a_fifo_without_waiting_on_it(model_dir, tmp_path, capsys):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    image = _png(tmp_path / "x.png", noise())
    done = threading.Event()

    def writer():  # if predict opens the FIFO, give it bytes instead of letting it block forever
        while not done.is_set():
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.05)
                continue
            os.write(fd, b"not an image")
            os.close(fd)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        capsys.readouterr()
        code = cli_main(["predict", "--model", str(model_dir), str(fifo), str(image), "--json"])
    finally:
        done.set()
        thread.join(5)
    out, err = capsys.readouterr()
    assert code == 2
    assert [json.loads(line)["file"] for line in out.splitlines()] == [str(image)]
    assert f"{fifo}: not a regular file" in err.splitlines()[0]


def _png_header(width, height):
    """A PNG whose header says width x height (8-bit grayscale) and whose pixel data is cut short."""
    def chunk(kind, data):
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_an_image_with_too_many_pixels_is_one_line_without_a_pil_warning(model_dir, tmp_path, capsys):
    from ctinit.errors import TaskSpecError
    from ctinit.tasks import load_task

    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_header(12000, 12000))
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli_main(["predict", "--model", str(model_dir), str(huge)]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and "huge.png: more than 67,108,864 pixels (8192 x 8192); downscale it" in lines[0]
    assert not caught and "site-packages" not in err
    for cls in ("a", "b"):  # the folder: task reader is the same reader
        (tmp_path / "task" / cls).mkdir(parents=True)
        _png(tmp_path / "task" / cls / "1.png", noise(seed=1))
    (tmp_path / "task" / "a" / "2.png").write_bytes(huge.read_bytes())
    with pytest.raises(TaskSpecError, match="2.png: more than 67,108,864 pixels"):
        load_task(f"folder:{tmp_path / 'task'}")


def test_sixteen_bit_images_are_scaled_not_clipped(model_dir, tmp_path):
    from PIL import Image

    from ctinit.images import read_image_array
    from ctinit.predict import read_image
    from ctinit.tasks import load_task

    wide = np.zeros((28, 28), dtype=np.uint16)
    wide[:, 10:20], wide[:, 20:] = 32896, 65535  # half and full scale
    for cls in ("a", "b"):
        (tmp_path / "task" / cls).mkdir(parents=True)
        Image.fromarray(wide).save(tmp_path / "task" / cls / "1.png")
        Image.fromarray(wide).save(tmp_path / "task" / cls / "2.png")
    path = tmp_path / "task" / "a" / "1.png"
    assert Image.open(path).mode.startswith("I")
    expected = np.zeros((28, 28), np.uint8)
    expected[:, 10:20], expected[:, 20:] = 128, 255
    assert np.array_equal(read_image_array(path), expected)
    assert np.array_equal(read_image(path, (28, 28)), np.repeat(expected[..., None], 3, axis=2))  # predict
    task = load_task(f"folder:{tmp_path / 'task'}")  # folder: tasks
    assert np.array_equal(torch.cat([task.x_train, task.x_test])[0, 0].numpy(), expected)


def test_one_image_reader_and_one_suffix_list_for_predict_and_folder_tasks(tmp_path):
    from PIL import Image

    import ctinit.predict
    import ctinit.tasks.folder
    from ctinit import images
    from ctinit.predict import find_images
    from ctinit.tasks import load_task

    assert ctinit.predict.IMAGE_SUFFIXES is images.IMAGE_SUFFIXES is ctinit.tasks.folder.IMAGE_SUFFIXES
    for cls, seed in (("a", 1), ("b", 2)):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(noise(seed=seed * 10 + i)).save(tmp_path / cls / f"{i}.tif")
    task = load_task(f"folder:{tmp_path}")  # TIFF was missing from the folder: reader's list
    assert task.num_classes == 2 and len(task.y_train) + len(task.y_test) == 6
    assert len(find_images([str(tmp_path)])) == 6


# ------------------------------------------------------------------------------ evaluate --seeds


def test_evaluate_huge_seed_count_is_one_line_before_any_work(tmp_path, capsys):
    npz = make_npz(tmp_path / "bars.npz")
    capsys.readouterr()
    assert cli_main(["evaluate", "--init", "scratch:convnet4-32", "--data", f"npz:{npz}", "--seeds", "100000000000",
                     "--steps", "2", "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    one_line(capsys, "--seeds 100000000000: a number of seeds is from 1 to 1000")
    assert not (tmp_path / "out").exists()


def test_from_pretrained_bounds_num_classes_before_allocating():
    from ctinit.errors import ConfigError

    for bad in (10**9, -1, True, 2.0):
        with pytest.raises(ConfigError, match="num_classes must be an integer from 0 to 100000"):
            ctinit.from_pretrained("scratch:convnet4-32", num_classes=bad)


# ------------------------------------------------------------------------------ 4. --hflip / --no-hflip


def _record_sampler(monkeypatch):
    seen = []

    class Recorded(Exception):
        pass

    def sampler(*args, **kwargs):
        seen.append(kwargs["hflip"])
        raise Recorded

    monkeypatch.setattr("ctinit.finetune.BatchSampler", sampler)
    return seen, Recorded


@pytest.mark.parametrize("task_hflip", [True, False])
def test_finetune_hflip_overrides_the_task(tmp_path, monkeypatch, task_hflip):
    from ctinit.finetune import FinetuneConfig, finetune
    from ctinit.tasks import load_task

    npz = tmp_path / "t.npz"
    x = np.zeros((12, 28, 28), np.uint8)
    np.savez(npz, x=x, y=np.repeat(np.arange(3), 4), hflip=np.array(task_hflip))
    task = load_task(f"npz:{npz}")
    seen, recorded = _record_sampler(monkeypatch)
    for hflip in (None, True, False):
        with pytest.raises(recorded):
            finetune(ctinit.build_backbone("convnet4-32"), task, FinetuneConfig(steps=1, hflip=hflip, progress=False))
    assert seen == [task_hflip, True, False]


def test_cli_hflip_is_recorded_in_the_model_config_and_card(tmp_path, capsys):
    npz = make_npz(tmp_path / "bars.npz")  # no hflip array: not marked flip-safe, so no flip unless --hflip
    base = ["finetune", "--init", "scratch:convnet4-32", "--data", f"npz:{npz}", "--steps", "2", "--batch-size", "8",
            "--no-progress"]
    for extra, recorded, words in (([], False, "no flip"), (["--hflip"], True, "random crop and horizontal flip"),
                                   (["--no-hflip"], False, "no flip"),
                                   (["--no-augment", "--hflip"], True, "no augmentation")):
        out = tmp_path / f"model-{len(extra)}-{recorded}"
        assert cli_main(base + extra + ["--out", str(out)]) == 0
        recipe = json.loads((out / "config.json").read_text())["ctinit"]["recipe"]
        assert recipe["hflip"] is recorded and recipe["augment"] is ("--no-augment" not in extra)
        assert words in (out / "README.md").read_text()
    capsys.readouterr()


def test_evaluate_records_no_hflip_in_its_results(tmp_path, monkeypatch, capsys):
    npz = make_npz(tmp_path / "bars.npz")
    assert cli_main(["evaluate", "--init", "scratch:convnet4-32", "--data", f"npz:{npz}", "--seeds", "1", "--steps",
                     "2", "--batch-size", "8", "--no-hflip", "--out", str(tmp_path / "eval"), "--no-progress"]) == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["finetune"]["hflip"] is False
    assert "random crop, no flip" in (tmp_path / "eval" / "results.md").read_text()
    seen, recorded = _record_sampler(monkeypatch)
    with pytest.raises(recorded):
        cli_main(["evaluate", "--init", "scratch:convnet4-32", "--data", f"npz:{npz}", "--seeds", "1", "--steps", "2",
                  "--no-hflip", "--out", str(tmp_path / "eval2"), "--no-progress", "--debug"])
    assert seen == [False]
    capsys.readouterr()


def test_runs_recorded_before_the_hflip_option_still_count_on_a_rerun(tmp_path, capsys):
    from ctinit.evaluate import _run_key

    npz = make_npz(tmp_path / "bars.npz")
    out = tmp_path / "eval"
    assert cli_main(["evaluate", "--init", "scratch:convnet4-32", "--data", f"npz:{npz}", "--seeds", "1", "--steps",
                     "2", "--batch-size", "8", "--val-fraction", "0", "--out", str(out), "--no-progress"]) == 0
    record = json.loads((out / "runs.jsonl").read_text().splitlines()[0])
    results = json.loads((out / "results.json").read_text())
    from ctinit.finetune import LATER_FIELDS

    # the recipe as ctinit recorded it then (before hflip and the length/schedule options existed)
    before = {k: v for k, v in results["finetune"].items() if k != "hflip" and k not in LATER_FIELDS}
    assert record["key"] == _run_key(results["inits"][0], record["task"], record["seed"], before, None, None)
    capsys.readouterr()


def test_readme_and_help_name_the_bundled_tasks_that_allow_flips(capsys, monkeypatch):
    from ctinit.tasks import BUILTIN_TASKS, builtin_path

    monkeypatch.setenv("COLUMNS", "400")  # argparse wraps help at hyphens otherwise

    flips = [name for name in BUILTIN_TASKS if bool(np.load(builtin_path(name))["hflip"])]
    assert flips == ["fashion-mnist", "colour-fashion", "colour-textures"]
    readme = " ".join((ROOT / "docs" / "data.md").read_text().split())  # the task specs' page of the manual
    assert "among the bundled tasks only `fashion-mnist`, `colour-fashion` and `colour-textures` do" in readme
    for command in ("finetune", "evaluate"):
        with pytest.raises(SystemExit):
            cli_main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--hflip, --no-hflip" in text and "fashion-mnist, colour-fashion and colour-textures" in text
