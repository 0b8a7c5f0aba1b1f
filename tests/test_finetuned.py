"""ctinit finetune --out / --push-to-hub, ctinit predict, loading fine-tuned models with transformers, and the
bad-input cases of these commands (one line on stderr, exit 2, no traceback). The Hub is mocked."""
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import ctinit
from ctinit.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["top", "middle", "bottom"]
TOKEN = "hf_TestTokenThatMustNeverBePrinted123"


def make_task(path, size=28, n_per_class=16, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n_per_class)
    x = rng.integers(0, 40, size=(len(y), size, size), dtype=np.uint8)
    for c in range(3):
        x[y == c, 4 + 6 * c:8 + 6 * c, :] = 220
    np.savez(path, x=x, y=y, classes=np.array(CLASSES))
    return x, y


@pytest.fixture(scope="module")
def unique_root(tmp_path_factory):
    """A folder whose name is unique: no written file may contain it."""
    root = tmp_path_factory.mktemp(f"secret-{uuid.uuid4().hex[:12]}")
    return root


@pytest.fixture(scope="module")
def model(unique_root):
    """A convnet4-32 fine-tuned from a local init folder, saved with --out."""
    from ctinit.loading import save_init

    make_task(unique_root / "bars.npz")
    torch.manual_seed(0)
    save_init(ctinit.build_backbone("convnet4-32"), unique_root / "my-init", {"algorithm": "cts", "seed": 0})
    out = unique_root / "model"
    code = cli_main(["finetune", "--init", str(unique_root / "my-init"), "--data", f"npz:{unique_root / 'bars.npz'}",
                     "--steps", "30", "--batch-size", "16", "--out", str(out), "--json", "--no-progress"])
    assert code == 0
    return out


def one_line_error(capsys, needle, prefix="ctinit"):
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert lines and needle in lines[-1] and lines[-1].startswith(f"{prefix}"), err
    assert "Traceback" not in err
    return out, lines


def test_out_is_a_standard_transformers_folder_with_named_labels_and_provenance(model, unique_root):
    from huggingface_hub import ModelCard

    assert {p.name for p in model.iterdir()} == {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"}
    config = json.loads((model / "config.json").read_text())
    assert config["id2label"] == {"0": "top", "1": "middle", "2": "bottom"} and config["label2id"]["bottom"] == 2
    assert config["architectures"] == ["CtinitConvNetForImageClassification"]
    made = config["ctinit"]
    assert made["base_model"] == {"name": "my-init", "algorithm": "cts"}  # the folder's name, never its path
    assert made["task"]["name"] == "bars" and made["steps"] == 30 and made["seed"] == 0
    assert made["recipe"]["batch_size"] == 16 and 0 <= made["test_accuracy"] <= 1
    assert json.loads((model / "preprocessor_config.json").read_text())["image_processor_type"] == "ViTImageProcessor"
    card = ModelCard.load(model / "README.md")
    assert card.data.pipeline_tag == "image-classification" and card.data.library_name == "ctinit"
    assert card.data.base_model is None and "ctinit" in card.data.tags
    [result] = card.data.eval_results
    assert result.metric_type == "accuracy" and result.metric_value == pytest.approx(round(made["test_accuracy"], 4))
    assert "2102.07215" in card.text and "ctinit predict --model" in card.text


def test_no_written_file_holds_the_folder_it_was_made_from(model, unique_root):
    from ctinit_hub.__main__ import main as hub_main

    from ctinit.loading import save_init

    # an export of a run whose tasks are local npz files, with evaluation results beside the card
    run = unique_root / "run"
    save_init(ctinit.build_backbone("convnet4-32"), run / "init",
              {"algorithm": "cts", "steps": 1, "seed": 0, "config": {"backbone": "convnet4-32"},
               "tasks": [{"spec": f"npz:{unique_root / 'bars.npz'}", "name": "bars", "num_classes": 3,
                          "train_size": 38, "test_size": 10}]})
    (run / "config.yaml").write_text(f"algorithm: cts\nbackbone: convnet4-32\ntasks:\n- npz:{unique_root / 'bars.npz'}\n")
    assert cli_main(["evaluate", "--init", str(run), "--init", f"scratch:{run}", "--data", f"npz:{unique_root / 'bars.npz'}",
                     "--seeds", "1", "--steps", "2", "--batch-size", "8", "--out", str(unique_root / "eval"),
                     "--no-progress"]) == 0
    assert hub_main(["export", str(run), str(unique_root / "export"), "--results", str(unique_root / "eval")]) == 0
    needle = unique_root.name.encode()
    written = [p for folder in (model, unique_root / "export") for p in folder.rglob("*") if p.is_file()]
    assert len(written) >= 10
    for path in written:
        assert needle not in path.read_bytes(), f"{path.name} names the folder it was made from"
    assert (unique_root / "export" / "curves.png").is_file() and (unique_root / "export" / "results.json").is_file()


def test_auto_classes_and_pipeline_load_it_after_import_ctinit(model, unique_root):
    from PIL import Image
    from transformers import AutoModelForImageClassification, pipeline

    from ctinit.predict import Predictor

    loaded = AutoModelForImageClassification.from_pretrained(str(model))
    assert type(loaded).__name__ == "CtinitConvNetForImageClassification" and loaded.config.id2label[2] == "bottom"
    x = np.load(unique_root / "bars.npz")["x"]
    paths = []
    for i in (0, 20, 40):
        Image.fromarray(x[i]).save(unique_root / f"img{i}.png")
        paths.append(str(unique_root / f"img{i}.png"))
    classify = pipeline("image-classification", model=str(model))
    results = classify(paths, top_k=3)
    predictor = Predictor.load(model)
    ours = list(predictor.predict_files([Path(p) for p in paths], top_k=3))
    for theirs, (_, top) in zip(results, ours):
        assert [r["label"] for r in theirs] == [label for label, _ in top]
        assert all(r["label"] in CLASSES for r in theirs)
        assert [r["score"] for r in theirs] == pytest.approx([s for _, s in top], abs=1e-5)


def test_the_saved_image_processor_computes_what_ctinit_feeds_the_model(model, unique_root):
    from PIL import Image
    from transformers import AutoImageProcessor

    from ctinit.predict import Predictor, read_image
    from ctinit.tasks import load_task, to_float

    processor = AutoImageProcessor.from_pretrained(str(model))
    predictor = Predictor.load(model)
    rng = np.random.default_rng(1)
    cases = {"gray.png": rng.integers(0, 256, (28, 28), dtype=np.uint8),           # grayscale at the model's size
             "rgb.png": rng.integers(0, 256, (28, 28, 3), dtype=np.uint8),         # colour at the model's size
             "big_gray.png": rng.integers(0, 256, (61, 45), dtype=np.uint8),       # resized
             "small_rgb.jpg": rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)}   # resized, JPEG
    for name, array in cases.items():
        Image.fromarray(array).save(unique_root / name)
        with Image.open(unique_root / name) as img:
            expected = processor(img, return_tensors="pt")["pixel_values"]
        ours = predictor.pixel_values(read_image(unique_root / name, predictor.size)[None])
        assert ours.shape == expected.shape == (1, 3, 28, 28)
        # the same uint8 pixels, then x / 255 normalized: equal up to float rounding (values are in [-1, 1])
        assert torch.allclose(ours, expected, atol=1e-5, rtol=0), name
    # and at the model's size, exactly what fine-tuning fed it: the task pipeline's uint8 -> [-1, 1], gray -> 3 channels
    task = load_task(f"npz:{unique_root / 'bars.npz'}", image_size=28)
    Image.fromarray(task.x_test[0, 0].numpy()).save(unique_root / "from_task.png")
    fed = to_float(task.x_test[:1], 3)
    ours = predictor.pixel_values(read_image(unique_root / "from_task.png", predictor.size)[None])
    assert torch.allclose(ours, fed, atol=1e-6, rtol=0)


def _run_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_a_finetuned_vit_loads_with_plain_transformers_and_a_ctinit_model_names_ctinit(model, unique_root):
    make_task(unique_root / "vit.npz")
    out = unique_root / "vit-model"
    assert cli_main(["finetune", "--init", "scratch:hf-vit-tiny", "--data", f"npz:{unique_root / 'vit.npz'}",
                     "--steps", "2", "--batch-size", "8", "--out", str(out), "--no-progress"]) == 0
    from ctinit.predict import Predictor

    predictor = Predictor.load(out)
    x = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 3), dtype=np.uint8)
    expected = predictor.model(pixel_values=predictor.pixel_values(x)).logits
    np.save(unique_root / "x.npy", x)
    np.save(unique_root / "expected.npy", expected.detach().numpy())  # never a pickle, not even in a test
    # one fresh process that never imports ctinit: the ViT loads and agrees; the ctinit model fails naming its type
    result = _run_python(f"""
import sys, numpy as np, torch
from transformers import AutoImageProcessor, AutoModelForImageClassification
model = AutoModelForImageClassification.from_pretrained({str(out)!r})
processor = AutoImageProcessor.from_pretrained({str(out)!r})
x = np.load({str(unique_root / 'x.npy')!r}, allow_pickle=False)
logits = model(**processor(list(x), return_tensors="pt")).logits
expected = torch.from_numpy(np.load({str(unique_root / 'expected.npy')!r}, allow_pickle=False))
assert type(model).__name__ == "ViTForImageClassification", type(model)
assert model.config.id2label[1] == "middle"
assert torch.allclose(logits, expected, atol=1e-4), (logits - expected).abs().max()
try:
    AutoModelForImageClassification.from_pretrained({str(model)!r})
except Exception as e:
    print("refused:", str(e).splitlines()[0])
assert "ctinit" not in sys.modules
print("ok")
""")
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]
    assert "refused:" in result.stdout and "ctinit-convnet" in result.stdout, result.stdout


def test_predict_prints_one_json_object_per_image_and_reports_unreadable_files(model, unique_root, capsys):
    from PIL import Image

    folder = unique_root / "predict"
    (folder / "sub").mkdir(parents=True)
    x = np.load(unique_root / "bars.npz")["x"]
    Image.fromarray(x[0]).save(folder / "a.png")
    Image.fromarray(np.repeat(x[20][..., None], 3, 2)).resize((70, 50)).save(folder / "sub" / "b.jpg")
    (folder / "c.png").write_bytes((folder / "a.png").read_bytes()[:50])  # truncated PNG
    (folder / "d.png").write_text("not an image")
    capsys.readouterr()
    code = cli_main(["predict", "--model", str(model), str(folder), "--top-k", "2", "--batch-size", "2", "--json"])
    out, err = capsys.readouterr()
    assert code == 2
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert [Path(r["file"]).name for r in rows] == ["a.png", "b.jpg"]
    assert all(len(r["predictions"]) == 2 and r["predictions"][0]["label"] in CLASSES for r in rows)
    assert rows[0]["predictions"][0]["score"] >= rows[0]["predictions"][1]["score"]
    errors = err.strip().splitlines()
    assert len(errors) == 3 and "c.png: unreadable image" in errors[0] and "d.png: unreadable image" in errors[1]
    assert "2 of 4 files could not be read" in errors[2] and "Traceback" not in err
    assert cli_main(["predict", "--model", str(model), str(folder / "a.png"), "--top-k", "9"]) == 0  # k capped
    out, _ = capsys.readouterr()
    assert out.startswith(f"{folder / 'a.png'}: ") and out.count("(") == 3


@pytest.mark.parametrize("case", ["empty_folder", "top_k_0", "pickle_model", "init_not_model", "missing_model"])
def test_predict_bad_input_is_one_line(model, unique_root, capsys, case):
    from ctinit.loading import save_init

    image = unique_root / "img0.png"
    if not image.exists():
        from PIL import Image

        Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    args, needle = ["predict", "--model", str(model), str(image)], None
    if case == "empty_folder":
        (unique_root / "empty").mkdir(exist_ok=True)
        (unique_root / "empty" / "notes.txt").write_text("no images here")
        args[-1], needle = str(unique_root / "empty"), "no image files"
    elif case == "top_k_0":
        args, needle = args + ["--top-k", "0"], "--top-k must be >= 1"
    elif case == "pickle_model":
        pickled = unique_root / "pickled"
        pickled.mkdir(exist_ok=True)
        (pickled / "config.json").write_text((model / "config.json").read_text())
        (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
        args[2], needle = str(pickled), "only pickle weights"
    elif case == "init_not_model":
        save_init(ctinit.build_backbone("convnet4-32"), unique_root / "just-init", {"algorithm": "cts"})
        args[2], needle = str(unique_root / "just-init"), "no classes"
    else:
        args[2], needle = str(unique_root / "nope" / "x"), "no such folder"
    capsys.readouterr()
    assert cli_main(args) == 2
    _, lines = one_line_error(capsys, needle)
    assert len(lines) == 1


def test_finetune_out_bad_input_fails_before_training(model, unique_root, capsys, monkeypatch):
    from huggingface_hub import constants

    data = f"npz:{unique_root / 'bars.npz'}"
    base = ["finetune", "--init", "scratch:convnet4-32", "--data", data, "--steps", "2", "--batch-size", "8", "--no-progress"]
    trained = []
    monkeypatch.setattr("ctinit.finetune.BatchSampler", lambda *a, **k: trained.append(1))
    (unique_root / "a-file").write_text("x")
    cases = [
        (["--out", str(unique_root / "a-file")], "exists and is a file"),
        (["--out", str(model)], "exists and is not empty; choose a new folder or pass --overwrite"),
        (["--out", str(unique_root / "a-file" / "sub")], "is not writable"),
        (["--out", str(unique_root / "new"), "--license", "apache2"], "did you mean apache-2.0"),
        (["--push-to-hub", "not a repo"], "write a Hub id as ORG/NAME"),
    ]
    monkeypatch.setattr("ctinit.hubio.upload.get_token", lambda: None)
    cases.append((["--push-to-hub", "me/model"], "no Hugging Face token"))
    for extra, needle in cases:
        capsys.readouterr()
        assert cli_main(base + extra) == 2, extra
        _, lines = one_line_error(capsys, needle)
        assert len(lines) == 1
    monkeypatch.setattr("ctinit.hubio.upload.get_token", lambda: TOKEN)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert cli_main(base + ["--push-to-hub", "me/model"]) == 2
    one_line_error(capsys, "HF_HUB_OFFLINE is set")
    assert not trained and not (unique_root / "new").exists()


def test_finetune_overwrite_replaces_the_model(model, unique_root, capsys):
    out = unique_root / "again"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["finetune", "--init", "scratch:convnet4-32", "--data", f"npz:{unique_root / 'bars.npz'}", "--steps", "2",
            "--batch-size", "8", "--no-progress", "--out", str(out), "--overwrite"]
    assert cli_main(args) == 0
    assert (out / "keep.txt").read_text() == "mine" and (out / "model.safetensors").is_file()


@pytest.fixture
def hub(local_hub, monkeypatch):
    """The local Hub (tests/local_hub.py) over HTTP, with ``TOKEN`` as the user's token (never printed)."""
    local_hub.add_token(TOKEN, "me")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return local_hub


def test_finetune_push_to_hub_uploads_the_model_folder(model, unique_root, hub, capsys):
    from huggingface_hub import ModelCard

    args = ["finetune", "--init", str(unique_root / "my-init"), "--data", f"npz:{unique_root / 'bars.npz'}",
            "--steps", "2", "--batch-size", "8", "--no-progress", "--json", "--push-to-hub", "me/model", "--private"]
    assert cli_main(args) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["commit_url"] == f"{hub.url}/me/model/commit/{hub.head('me/model')}"
    assert TOKEN not in out + err
    assert "ctinit/" in hub.user_agents[-1] and hub.repos["me/model"].private
    files = {p: d for p, d in hub.files("me/model").items() if p != ".gitattributes"}
    assert set(files) == {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"}
    for name, data in files.items():
        assert unique_root.name.encode() not in data and TOKEN.encode() not in data, name
    card = ModelCard(files["README.md"].decode())  # huggingface_hub's parser reads the pushed card
    assert card.data.library_name and card.data.pipeline_tag == "image-classification"
    assert 'pipeline("image-classification", model="me/model")' in card.text


def test_image_classifier_save_pretrained_and_push_to_hub(unique_root, hub):
    from transformers import AutoModelForImageClassification

    classifier = ctinit.ImageClassifier(ctinit.build_backbone("resnet20"), num_classes=2).eval()
    with pytest.raises(ctinit.CtinitError, match="no head"):
        ctinit.ImageClassifier(ctinit.build_backbone("resnet20")).save_pretrained(unique_root / "headless")
    classifier.save_pretrained(unique_root / "py-model", labels=["cat", "dog"])
    loaded = AutoModelForImageClassification.from_pretrained(str(unique_root / "py-model")).eval()
    x = torch.randn(2, 3, 28, 28)
    assert torch.allclose(loaded(x).logits, classifier(x), atol=1e-5) and loaded.config.id2label[1] == "dog"
    info = classifier.push_to_hub("me/py-model", labels=["cat", "dog"])
    assert info.oid == hub.head("me/py-model") and "model.safetensors" in hub.files("me/py-model")
    # by id, over HTTP: the weights pushed are the weights loaded
    by_id = AutoModelForImageClassification.from_pretrained("me/py-model").eval()
    assert torch.allclose(by_id(x).logits, classifier(x), atol=1e-5)
    info = loaded.push_to_hub("me/py-model", commit_message="again")  # a loaded model pushes through the same code
    assert info.oid == hub.head("me/py-model")


def test_a_hub_init_is_named_by_id_and_commit_and_becomes_base_model(model, unique_root):
    from huggingface_hub import ModelCard

    from ctinit.cli import provenance
    from ctinit.finetune import FinetuneConfig, FinetuneResult
    from ctinit.loading import InitSource

    source = InitSource("org/cts-init@v1", path=unique_root / "my-init", repo_id="org/cts-init", revision="v1",
                        commit="c" * 40)
    task = SimpleNamespace(name="fashion-mnist", num_classes=2, y_train=[0] * 8, y_test=[0] * 2, hflip=True)
    made = provenance(source, task, "builtin:fashion-mnist", FinetuneConfig(steps=5, seed=3),
                      FinetuneResult(0.75, 0.5, 0.6, 5, 1.0, []))
    assert made["base_model"] == {"repo_id": "org/cts-init", "commit": "c" * 40, "algorithm": "cts"}
    assert made["task"] == {"name": "fashion-mnist", "num_classes": 2, "train_size": 8, "test_size": 2,
                            "spec": "builtin:fashion-mnist", "dataset": "zalando-datasets/fashion_mnist"}
    assert made["seed"] == 3 and made["steps"] == 5 and "progress" not in made["recipe"]
    classifier = ctinit.ImageClassifier(ctinit.build_backbone("convnet4-32"), num_classes=2)
    folder = classifier.save_pretrained(unique_root / "hub-based", labels=["shirt", "shoe"], made_with=made,
                                        license="mit")
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model == "org/cts-init" and card.data.license == "mit"
    assert card.data.datasets == ["zalando-datasets/fashion_mnist"]
    assert card.data.eval_results[0].dataset_type == "zalando-datasets/fashion_mnist"  # one mapping for both
    assert "[`org/cts-init`](https://huggingface.co/org/cts-init) (commit `cccccccccc`)" in card.text


def test_predict_takes_a_hub_id_and_fetches_only_safe_files(model, unique_root, hub, capsys):
    from huggingface_hub import HfApi

    assert cli_main(["finetune", "--init", str(unique_root / "my-init"), "--data", f"npz:{unique_root / 'bars.npz'}",
                     "--steps", "1", "--batch-size", "8", "--no-progress", "--push-to-hub", "me/bars"]) == 0
    HfApi().create_tag("me/bars", tag="v2")
    (unique_root / "more").mkdir(exist_ok=True)
    (unique_root / "more" / "optimizer.pt").write_bytes(b"a pickle that must never be downloaded")
    HfApi().upload_folder(repo_id="me/bars", folder_path=str(unique_root / "more"))
    from PIL import Image

    Image.fromarray(np.zeros((28, 28), np.uint8)).save(unique_root / "zero.png")
    capsys.readouterr()
    before = len(hub.requests)
    assert cli_main(["predict", "--model", "me/bars@v2", str(unique_root / "zero.png"), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert len(row["predictions"]) == 3 and {p["label"] for p in row["predictions"]} == set(CLASSES)
    v2 = hub.repos["me/bars"].tags["v2"]
    downloads = [p for m, p in hub.requests[before:] if m == "GET" and "/me/bars/resolve/" in p]
    assert {p.rsplit("/", 1)[1] for p in downloads} == {"config.json", "model.safetensors", "preprocessor_config.json"}
    assert all(f"/resolve/{v2}/" in p for p in downloads)  # the commit v2 named: no card, never a pickle
