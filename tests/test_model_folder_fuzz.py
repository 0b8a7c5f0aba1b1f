"""A table-driven fuzz over fine-tuned model folders (issue 23): missing, extra, mis-shaped or integer tensors, NaN
weights, configs of another architecture or with broken labels, odd preprocessors. Each folder goes through
`ctinit predict --json`: bad ones are one line `ctinit: error: ...` naming what is wrong, exit 2, nothing on stdout;
good ones print valid JSON (never NaN). A ctinit backbone and a plain transformers one (ViT, whose tensor names
transformers maps on load) are both fuzzed."""
import json
import shutil

import numpy as np
import pytest
import torch

import ctinit
from ctinit.cli import main as cli_main

ARCHS = ["convnet4-32", "hf-vit-tiny"]
OTHER_MODEL_TYPE = {"convnet4-32": {"model_type": "ctinit-resnet", "depth": 20,
                                    "architectures": ["CtinitResNetForImageClassification"]},
                    "hf-vit-tiny": {"model_type": "ctinit-convnet", "num_layers": 4,
                                    "architectures": ["CtinitConvNetForImageClassification"]}}


def _first_backbone_tensor(t):
    return next(k for k in sorted(t) if not k.startswith("classifier."))


def _set(mapping, **values):
    mapping.update(values)


# name -> (what to change: "tensors", "config", "preprocessor" (as data), "config-text", "preprocessor-text" (as
# text), or several joined by "+" with a tuple of changes; the change; expected: None = prints predictions, else a
# text of the one error line, ARCH standing for the architecture's class name).
CASES = {
    "unchanged": ("tensors", lambda t, arch: t, None),
    "no head weight": ("tensors", lambda t, arch: {k: v for k, v in t.items() if k != "classifier.weight"},
                       "missing tensor 'classifier.weight' (1 missing, 0 unexpected)"),
    "no head at all": ("tensors", lambda t, arch: {k: v for k, v in t.items() if not k.startswith("classifier.")},
                       "missing tensor 'classifier.bias', 'classifier.weight' (2 missing, 0 unexpected)"),
    "no backbone tensor": ("tensors", lambda t, arch: {k: v for k, v in t.items() if k != _first_backbone_tensor(t)},
                           "(1 missing, 0 unexpected): the weights do not match"),
    "no tensors": ("tensors", lambda t, arch: {}, "missing tensor"),
    "an extra tensor": ("tensors", lambda t, arch: {**t, "extra.weight": torch.zeros(3)},
                        "unexpected tensor 'extra.weight' (0 missing, 1 unexpected)"),
    "a mis-shaped head": ("tensors", lambda t, arch: {**t, "classifier.weight": torch.zeros(5, t["classifier.weight"].shape[1])},
                          "tensor 'classifier.weight' has shape (5,"),
    "a mis-shaped backbone tensor": ("tensors", lambda t, arch: {**t, _first_backbone_tensor(t): torch.zeros(2, 2, 2, 2, 2)},
                                     "has shape (2, 2, 2, 2, 2) but"),
    "integer head": ("tensors", lambda t, arch: {**t, "classifier.weight": t["classifier.weight"].long()},
                     "tensor 'classifier.weight' holds int64 values but"),
    "NaN weights": ("tensors", lambda t, arch: {**t, "classifier.bias": torch.full_like(t["classifier.bias"], float("nan"))},
                    "tensor 'classifier.bias' holds NaN or infinite values: refusing to load"),
    "infinite weights": ("tensors", lambda t, arch: {**t, "classifier.weight": torch.full_like(t["classifier.weight"], float("inf"))},
                         "holds NaN or infinite values"),
    "float16 weights": ("tensors", lambda t, arch: {k: v.half() if v.is_floating_point() else v for k, v in t.items()},
                        None),
    "bfloat16 weights, config dtype bfloat16": (
        "tensors+config", (lambda t, arch: {k: v.bfloat16() if v.is_floating_point() else v for k, v in t.items()},
                           lambda c, arch: _set(c, dtype="bfloat16")), None),
    "another architecture's model_type": ("config", lambda c, arch: _set(c, **OTHER_MODEL_TYPE[arch]),
                                          "missing tensor"),
    "num_labels of a billion": ("config", lambda c, arch: (c.pop("id2label"), c.pop("label2id"), _set(c, num_labels=10**9)),
                                "num_labels = 1000000000: must be an integer from 0 to 100000"),
    "num_labels a string": ("config", lambda c, arch: _set(c, num_labels="3"), "num_labels = '3'"),
    "num_labels disagrees with id2label": ("config", lambda c, arch: _set(c, num_labels=2),
                                           "num_labels = 2: does not match id2label (3 classes)"),
    "id2label a list": ("config", lambda c, arch: _set(c, id2label=["a", "b", "c"]), 'id2label = [\'a\', \'b\', \'c\']'),
    "id2label with a missing key": ("config", lambda c, arch: _set(c, id2label={"0": "a", "2": "c", "3": "d"}),
                                    "keys must be 0..2 (missing 1)"),
    "id2label of 200,000 classes": ("config", lambda c, arch: _set(c, id2label={str(i): str(i) for i in range(200_000)}),
                                    "has 200000 classes, more than 100000"),
    "id2label names not strings": ("config", lambda c, arch: _set(c, id2label={"0": 1, "1": 2, "2": 3}),
                                   "class names must be strings"),
    "label2id a list": ("config", lambda c, arch: _set(c, label2id=[0, 1, 2]), "label2id = [0, 1, 2]"),
    "more labels than the head": ("config", lambda c, arch: _set(c, id2label={str(i): f"c{i}" for i in range(4)},
                                                                 label2id={f"c{i}": i for i in range(4)}),
                                  "has shape (3,) but ARCH with 4 classes"),
    "image_size absurd": ("config", lambda c, arch: _set(c, image_size=10**6), "image_size = 1000000"),
    "config not JSON": ("config-text", lambda text, arch: text[: len(text) // 2], "not valid JSON"),
    "preprocessor size 60000": ("preprocessor", lambda p, arch: _set(p, size={"height": 60000, "width": 60000}),
                                "size = {'height': 60000, 'width': 60000}: sizes must be positive integers (at most 8192)"),
    "preprocessor size 0": ("preprocessor", lambda p, arch: _set(p, size={"height": 0, "width": 28}), "size = {'height': 0"),
    "preprocessor size negative": ("preprocessor", lambda p, arch: _set(p, size=-5), "size = -5"),
    "preprocessor size a string": ("preprocessor", lambda p, arch: _set(p, size={"height": "28", "width": 28}),
                                   "sizes must be positive integers"),
    "preprocessor size one number": ("preprocessor", lambda p, arch: _set(p, size=28), None),
    "preprocessor size not the model's": ("preprocessor", lambda p, arch: _set(p, size={"height": 14, "width": 14}),
                                          "size = {'height': 14, 'width': 14}: the model takes 28 x 28 images"),
    "preprocessor 5 means": ("preprocessor", lambda p, arch: _set(p, image_mean=[0.5] * 5),
                             "image_mean = [0.5, 0.5, 0.5, 0.5, 0.5]: must be one number or one per colour channel (3)"),
    "preprocessor mean a string": ("preprocessor", lambda p, arch: _set(p, image_mean="0.5"), "image_mean = '0.5'"),
    "preprocessor std zero": ("preprocessor", lambda p, arch: _set(p, image_std=[0, 0, 0]),
                              "image_std = [0, 0, 0]: a standard deviation of 0 divides by zero"),
    "preprocessor one std": ("preprocessor", lambda p, arch: _set(p, image_std=0.25), None),
    "preprocessor rescale a string": ("preprocessor", lambda p, arch: _set(p, rescale_factor="0.1"),
                                      "rescale_factor = '0.1': must be a positive number"),
    "preprocessor rescale negative": ("preprocessor", lambda p, arch: _set(p, rescale_factor=-1), "rescale_factor = -1"),
    "preprocessor rescale NaN": ("preprocessor", lambda p, arch: _set(p, rescale_factor=float("nan")),
                                 "rescale_factor = nan"),
    "preprocessor without normalizing": ("preprocessor", lambda p, arch: _set(p, do_normalize=False), None),
    "preprocessor empty": ("preprocessor", lambda p, arch: p.clear(), None),
    "preprocessor not a mapping": ("preprocessor-text", lambda text, arch: "[1, 2]", "not an image processor config"),
}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A fine-tuned folder per architecture (not trained: the fuzz is about loading), and two images."""
    from PIL import Image

    from ctinit.models.finetuned_folder import save_finetuned

    root = tmp_path_factory.mktemp("fuzz")
    for arch in ARCHS:
        torch.manual_seed(0)
        save_finetuned(ctinit.ImageClassifier(ctinit.build_backbone(arch), 3), root / arch, labels=["a", "b", "c"])
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(root / "colour.png")
    Image.fromarray(rng.integers(0, 256, (40, 30), dtype=np.uint8)).save(root / "gray.png")
    return root


def _strict_json(line: str):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(line, parse_constant=refuse)


def _mutate(folder, target: str, change, arch: str) -> None:
    from safetensors.torch import load_file, save_file

    for what, fn in zip(target.split("+"), change if isinstance(change, tuple) else (change,)):
        if what == "tensors":
            weights = folder / "model.safetensors"
            save_file({k: v.contiguous() for k, v in fn(load_file(str(weights)), arch).items()}, str(weights))
            continue
        name, _, as_text = what.partition("-")
        file = folder / ("preprocessor_config.json" if name == "preprocessor" else "config.json")
        if as_text:
            file.write_text(fn(file.read_text(), arch))
        else:
            data = json.loads(file.read_text())
            fn(data, arch)
            file.write_text(json.dumps(data))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("case", list(CASES))
def test_a_model_folder_loads_exactly_or_is_one_line(base, tmp_path, capsys, arch, case):
    target, change, expected = CASES[case]
    folder = tmp_path / "model"
    shutil.copytree(base / arch, folder)
    _mutate(folder, target, change, arch)
    capsys.readouterr()
    code = cli_main(["predict", "--model", str(folder), str(base / "colour.png"), str(base / "gray.png"), "--json",
                     "--top-k", "3"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "internal error" not in err, err
    if expected is None:
        assert code == 0 and err == "", err
        rows = [_strict_json(line) for line in out.splitlines()]
        assert [r["file"].rsplit("/", 1)[-1] for r in rows] == ["colour.png", "gray.png"]
        for row in rows:
            scores = [p["score"] for p in row["predictions"]]
            assert sorted(p["label"] for p in row["predictions"]) == ["a", "b", "c"]
            assert abs(sum(scores) - 1) < 1e-4 and scores == sorted(scores, reverse=True)
    else:
        arch_name = "ViTForImageClassification" if arch.startswith("hf-vit") else "CtinitConvNetForImageClassification"
        lines = err.strip().splitlines()
        assert code == 2 and out == "" and len(lines) == 1, err
        assert lines[0].startswith("ctinit: error: ") and expected.replace("ARCH", arch_name) in lines[0], lines[0]


def test_float16_weights_predict_what_float32_weights_predict(base, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    def predict(folder):
        capsys.readouterr()
        assert cli_main(["predict", "--model", str(folder), str(base / "colour.png"), "--json"]) == 0
        return {p["label"]: p["score"] for p in _strict_json(capsys.readouterr().out)["predictions"]}

    folder = tmp_path / "half"
    shutil.copytree(base / "convnet4-32", folder)
    tensors = load_file(str(folder / "model.safetensors"))
    rounded = {k: v.half().float() if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(rounded, str(folder / "model.safetensors"))
    expected = predict(folder)
    save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, str(folder / "model.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "dtype": "float16"}))
    got = predict(folder)
    assert got.keys() == expected.keys() and all(abs(got[k] - expected[k]) < 1e-5 for k in got)
