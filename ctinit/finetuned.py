"""Fine-tuned classifiers as standard transformers image-classification folders, and loading them back.

    OUT/config.json               the backbone's config with id2label/label2id and a ``ctinit`` entry (provenance)
    OUT/model.safetensors         backbone + classifier head
    OUT/preprocessor_config.json  written by transformers' ViTImageProcessor: resize to the model's size
                                  (bilinear), x / 255, normalize with mean 0.5 and std 0.5, grayscale to RGB
    OUT/README.md                 the card: pipeline_tag image-classification, base_model, model-index

ctinit backbones become :class:`~ctinit.models.classification.CtinitResNetForImageClassification` /
``CtinitConvNetForImageClassification`` (``AutoModelForImageClassification`` finds them after ``import ctinit``);
the standard ones (``hf-vit-tiny``, ``hf-convnext-tiny``) become transformers' own ``ViTForImageClassification`` /
``ConvNextForImageClassification`` and load without ctinit. Nothing written holds a local path.
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import torch
from torch import nn

from . import __version__
from .atomic import check_output_folder, folder_content, owned_dir, staged_dir
from .errors import CheckpointError, ConfigError
from .loading import CONFIG_NAME, PICKLE_SUFFIXES, WEIGHTS_NAME

PREPROCESSOR_NAME = "preprocessor_config.json"
CARD_NAME = "README.md"


# ------------------------------------------------------------------------------------------------ the processor


def image_processor(config):
    """A transformers image processor that reproduces what ctinit feeds a model of ``config``: bilinear resize to
    ``image_size`` (PIL's, the same as :func:`ctinit.predict.preprocess`), rescale by 1/255, normalize with mean
    and std 0.5 (inputs in [-1, 1]), grayscale and other modes converted to RGB."""
    try:  # transformers 5 without torchvision: the PIL backend, saved as "ViTImageProcessor"
        from transformers import ViTImageProcessorPil as processor_class
    except ImportError:
        from transformers import ViTImageProcessor as processor_class
    from .tasks.sampler import MEAN, STD

    size = getattr(config, "image_size", 28)
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    channels = int(getattr(config, "num_channels", 3))
    return processor_class(do_resize=True, size={"height": size, "width": size}, resample=2, do_rescale=True,
                           rescale_factor=1 / 255, do_normalize=True, image_mean=[MEAN] * channels,
                           image_std=[STD] * channels, do_convert_rgb=channels == 3)


# ------------------------------------------------------------------------------------------------ conversion


def _labels(labels, num_classes: int) -> list[str]:
    names = [str(c) for c in labels] if labels else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ConfigError(f"{len(names)} class names for a head of {num_classes} classes")
    if len(set(names)) != len(names):
        raise ConfigError("class names must be distinct (label2id maps each name to one class)")
    return names


def to_transformers(classifier, labels=None, made_with: dict | None = None):
    """The transformers ``*ForImageClassification`` model equal to ``classifier`` (an ImageClassifier with a head),
    with ``id2label`` from ``labels`` (numbers where there are none) and ``config.ctinit = made_with``."""
    from transformers import AutoModelForImageClassification

    from .models import HFBackbone, TaskHead, is_ctinit_config

    head = getattr(classifier, "head", None)
    if not isinstance(head, TaskHead):
        raise ConfigError("this classifier has no head: fine-tune it first (or save the backbone with ctinit.loading.save_init)")
    backbone = classifier.backbone
    inner = backbone.model if isinstance(backbone, HFBackbone) else backbone
    config = copy.deepcopy(inner.config)
    names = _labels(labels, head.num_classes)
    config.num_labels = len(names)
    config.id2label = dict(enumerate(names))
    config.label2id = {name: i for i, name in enumerate(names)}
    config.ctinit = {"library_version": __version__, **(made_with or {})}
    if is_ctinit_config(config):
        from .models.classification import CtinitConvNetForImageClassification, CtinitResNetForImageClassification

        model_class = {"ctinit-resnet": CtinitResNetForImageClassification,
                       "ctinit-convnet": CtinitConvNetForImageClassification}[config.model_type]
        model = model_class(config)
        base = model.backbone
    else:
        model = AutoModelForImageClassification.from_config(config)
        base = getattr(model, model.base_model_prefix)
    classifier_layer = getattr(model, "classifier", None)
    if not isinstance(classifier_layer, nn.Linear) or classifier_layer.weight.shape != head.weight.shape:
        raise ConfigError(f"model_type '{config.model_type}': its transformers classifier is not one linear layer on "
                          f"ctinit's pooled features, so it cannot be saved as {type(model).__name__}")
    own = base.state_dict()
    state = {k: v for k, v in inner.state_dict().items() if k in own}
    missing = sorted(set(own) - set(state))
    if missing:
        raise ConfigError(f"cannot map the backbone onto {type(model).__name__}: no tensor for '{missing[0]}'")
    base.load_state_dict(state, strict=True)
    classifier_layer.load_state_dict(head.state_dict())
    model.config.architectures = [type(model).__name__]
    return model.eval()


def _card(config, info: dict, repo_id: str | None, license: str | None) -> str:
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from .models import is_ctinit_config
    from .publish import ARXIV_URL, card_license, dataset_id, install_line

    plain = not is_ctinit_config(config)
    task = info.get("task") or {}
    base = info.get("base_model") or {}
    license, license_note = card_license(license, [task.get("spec", "")])
    tags = list(dict.fromkeys(["ctinit", "image-classification", "meta-learning", config.model_type]
                              + ([base["algorithm"]] if base.get("algorithm") else [])))
    dataset = dataset_id(task.get("spec", "")) if task.get("spec") else task.get("dataset")
    name = (repo_id or "").split("/")[-1] or f"{task.get('name', 'task')}-classifier"
    accuracy = info.get("test_accuracy")
    eval_results = None
    if accuracy is not None:
        eval_results = [EvalResult(task_type="image-classification", dataset_type=dataset or task.get("name", "task"),
                                   dataset_name=task.get("name", "task"), dataset_split="test", metric_type="accuracy",
                                   metric_value=round(float(accuracy), 4),
                                   metric_name=f"test accuracy after {info.get('steps')} fine-tuning steps")]
    data = ModelCardData(
        library_name="transformers" if plain else "ctinit", pipeline_tag="image-classification",
        license=license, tags=tags, base_model=base.get("repo_id"),
        datasets=[dataset] if dataset else None, model_name=name, eval_results=eval_results,
    )
    labels = list(config.id2label.values())
    shown = ", ".join(f"`{c}`" for c in labels[:20]) + (f" and {len(labels) - 20} more" if len(labels) > 20 else "")
    origin = (f"[`{base['repo_id']}`](https://huggingface.co/{base['repo_id']})"
              + (f" (commit `{base['commit'][:10]}`)" if base.get("commit") else "")) if base.get("repo_id") else \
        (f"a fresh `{base['scratch']}`" if base.get("scratch") else f"the initialization `{base.get('name', '?')}`")
    recipe = info.get("recipe") or {}
    opt = recipe.get("optimizer") or {}
    ref = repo_id or "DIR"
    load = ("from transformers import pipeline\n" if plain else "import ctinit  # registers ctinit's models with transformers\nfrom transformers import pipeline\n")
    body = f"""
# {name}

An image classifier for **{task.get('name', 'a task')}** ({len(labels)} classes: {shown}), fine-tuned with
ctinit from {origin} for {info.get('steps')} steps (seed {info.get('seed')};
{opt.get('name', '?')} lr {opt.get('lr', '?')}, batch {recipe.get('batch_size', '?')}{_augmentation(recipe)}). Test
accuracy:
**{accuracy if accuracy is None else f'{accuracy:.4f}'}** on {task.get('test_size', '?')} held-out images.
{license_note}

## Use it

```bash
{install_line()}
ctinit predict --model {ref} image.png more_images/ --top-k 3 --json
```

```python
{load}classify = pipeline("image-classification", model="{ref}")
print(classify("image.png"))
```
{"It is a plain transformers `" + type_name(config) + "` and loads without ctinit." if plain else "After `import ctinit`, `AutoModelForImageClassification.from_pretrained(...)` loads it (no `trust_remote_code`)."}
Inputs: RGB (grayscale is converted), resized to {getattr(config, 'image_size', 28)} px, scaled to [-1, 1]
(`preprocessor_config.json`).

## Citation

ctinit implements Continual Trajectory Shifting ([arXiv:2102.07215]({ARXIV_URL})):

```bibtex
@inproceedings{{shin2021large,
  title         = {{Large-Scale Meta-Learning with Continual Trajectory Shifting}},
  author        = {{Shin, Jaewoong and Lee, Hae Beom and Gong, Boqing and Hwang, Sung Ju}},
  booktitle     = {{Proceedings of the 38th International Conference on Machine Learning (ICML)}},
  year          = {{2021}},
  eprint        = {{2102.07215}},
  archivePrefix = {{arXiv}}
}}
```
"""
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))


def _augmentation(recipe: dict) -> str:
    """The card's words for the augmentation of ``recipe`` (the config's ``ctinit.recipe``)."""
    if "augment" not in recipe:
        return ""
    if not recipe["augment"]:
        return "; no augmentation"
    return "; random crop" + {True: " and horizontal flip", False: ", no flip"}.get(recipe.get("hflip"), "")


def type_name(config) -> str:
    return (getattr(config, "architectures", None) or [config.model_type])[0]


def _check_finite(model: nn.Module, doing: str = "save", where: str = "") -> None:
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{where}tensor '{name}' holds NaN or infinite values: refusing to {doing} a broken "
                                  f"model (fine-tune it again)")


def write_model_folder(model, out: str | Path, *, labels=None, made_with: dict | None = None,
                       license: str | None = None, repo_id: str | None = None) -> Path:
    """Write the folder (see module doc) for ``model``: an ImageClassifier with a head (converted by
    :func:`to_transformers`) or a transformers image-classification model. ``out`` is created if needed (this
    writes into it: :func:`save_finetuned` writes a whole folder safely). Without ``license`` the card's license
    follows the data (:func:`ctinit.publish.card_license`)."""
    from .publish import check_license

    if license is not None:
        check_license(license)
    if isinstance(model, nn.Module) and hasattr(model, "backbone") and hasattr(model, "head"):
        model = to_transformers(model, labels, made_with)
    elif made_with is not None:
        model.config.ctinit = {"library_version": __version__, **made_with}
    _check_finite(model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    image_processor(model.config).save_pretrained(str(out))
    info = dict(getattr(model.config, "ctinit", None) or {})
    (out / CARD_NAME).write_text(_card(model.config, info, repo_id, license).rstrip("\n") + "\n")
    return out


#: The files of a fine-tuned model folder: what ``--overwrite`` replaces (other files in the folder are kept).
MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME, PREPROCESSOR_NAME, CARD_NAME)


def _saved_by_ctinit(folder: Path) -> bool:
    """Whether ``folder/config.json`` is that of a model ctinit saved (it has a ``ctinit`` entry)."""
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and isinstance(config.get("ctinit"), dict)


def check_model_out_dir(out: str | Path, overwrite: bool = False) -> Path:
    """Refuse an ``--out`` for a model that is a non-empty folder (unless ``overwrite``), or that
    :func:`ctinit.atomic.check_output_folder` refuses: a file, files of a model's names that ctinit did not save (even
    with ``overwrite``: they are the user's), a folder holding the current one or beside which nothing can be written
    (a new model is staged beside ``out`` and replaces it whole); called before any training."""
    if folder_content(out) and not overwrite:
        raise ConfigError(f"--out {out}: exists and is not empty; choose a new folder or pass --overwrite")
    return check_output_folder(out, ours=MODEL_FILES, written_by_us=_saved_by_ctinit, replaced_whole=True,
                               theirs=f"ctinit did not save (no 'ctinit' entry in {CONFIG_NAME}); --overwrite replaces "
                                      "only a model saved by ctinit: choose another folder")


check_out_dir = check_model_out_dir  # its name before the results folder's check took another; for one release


def own_out_dir(out: str | Path, overwrite: bool = False):
    """``with own_out_dir(out, overwrite):`` holds ``--out`` for a whole command (:func:`ctinit.atomic.owned_dir`
    with :func:`check_model_out_dir`): a second command on it is refused before it trains."""
    return owned_dir(out, lambda folder: check_model_out_dir(folder, overwrite))


def save_finetuned(classifier, out: str | Path, *, labels=None, made_with: dict | None = None,
                   license: str | None = None, overwrite: bool = False, repo_id: str | None = None) -> Path:
    """Save the model folder ``out`` (:func:`write_model_folder`) whole: held with :func:`own_out_dir`, written
    beside it and swapped in once complete, so a failure (a full disk) leaves an earlier model there as it was. With
    ``overwrite`` that earlier model is replaced; other files of the user's in the folder stay."""
    with own_out_dir(out, overwrite) as out:
        content = folder_content(out)
        kept = f"the model in {out} is unchanged" if set(content) & set(MODEL_FILES) else f"nothing was saved in {out}"
        with staged_dir(out, kept=kept, carry_over=[n for n in content if n not in MODEL_FILES]) as tmp:
            write_model_folder(classifier, tmp, labels=labels, made_with=made_with, license=license, repo_id=repo_id)
    return out


# ------------------------------------------------------------------------------------------------ loading


def resolve_model(model: str | Path, revision: str | None = None) -> tuple[Path, str | None, str | None]:
    """A fine-tuned model folder or Hub id -> ``(local folder, repo id, commit)``."""
    from .loading import hub_snapshot, parse_hub_id

    path = Path(str(model)).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"--model {path}: a model is a folder with {CONFIG_NAME} and {WEIGHTS_NAME}, not a file")
        return path, None, None
    hub = parse_hub_id(str(model))
    if hub is None:
        raise CheckpointError(f"--model {model}: no such folder, and not a Hub id ORG/NAME[@REVISION]")
    folder, commit = hub_snapshot(hub[0], hub[1] or revision,
                                  allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, PREPROCESSOR_NAME])
    return folder, hub[0], commit


def load_classifier(model: str | Path, revision: str | None = None):
    """A fine-tuned classifier (a transformers model in eval mode, float32) from a folder or Hub id; safetensors only.

    Every tensor the model needs must be in ``model.safetensors`` with its shape, and nothing else: a file that
    lacks the head or a backbone tensor, holds others, or belongs to another architecture (another ``model_type``)
    is one line naming the tensors (:func:`ctinit.loading.check_tensors`, the check initializations go through),
    never a model with random weights. Weights stored in another floating-point dtype are read as float32."""
    from transformers import AutoModelForImageClassification

    from .loading import check_config_sizes, check_tensors, read_config, read_weights

    folder, _, _ = resolve_model(model, revision)
    config = read_config(folder)
    if not (folder / WEIGHTS_NAME).is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise CheckpointError(f"{folder}: only pickle weights ({', '.join(pickles)}); ctinit loads safetensors "
                                  f"only, because unpickling can run arbitrary code")
        raise CheckpointError(f"{folder}: no {WEIGHTS_NAME}; a model folder holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    architectures = getattr(config, "architectures", None) or []
    if not any(str(a).endswith("ForImageClassification") for a in architectures):
        raise CheckpointError(f"{folder}: no classes in {CONFIG_NAME} (id2label); is it an initialization? "
                              f"fine-tune it first (ctinit finetune --out DIR)")
    tensors = read_weights(folder)  # a truncated or corrupt file is one clear line, not a transformers traceback
    check_config_sizes(config)
    try:
        # transformers maps the file's tensor names to the model's and reports what does not fit; a mis-shaped
        # tensor is reported (ignore_mismatched_sizes) instead of raised as "see the above report"
        loaded, report = AutoModelForImageClassification.from_pretrained(
            str(folder), use_safetensors=True, output_loading_info=True, ignore_mismatched_sizes=True)
    except (ValueError, KeyError, OSError, RuntimeError, TypeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{folder}: cannot load as an image classifier ({first[:200]})") from e
    # transformers casts integer tensors to the model's float dtype without a word; only the model's own integer
    # buffers (batch norm's num_batches_tracked) may be integers in the file
    own_integer = {k for k, v in loaded.state_dict().items() if not v.is_floating_point()}
    integer = [(k, v.dtype) for k, v in sorted(tensors.items()) if not v.is_floating_point() and k not in own_integer]
    check_tensors(str(folder / WEIGHTS_NAME), sorted(report["missing_keys"]), sorted(report["unexpected_keys"]),
                  sorted(report["mismatched_keys"]), integer,
                  f"{type(loaded).__name__} with {config.num_labels} classes (the config's model_type "
                  f"'{config.model_type}' and id2label)")
    loaded = loaded.float()
    _check_finite(loaded, "load", where=f"{folder / WEIGHTS_NAME}: ")
    return loaded.eval()


def read_processor_settings(folder: Path, config) -> dict:
    """Input size (the config's ``image_size``), rescale factor, mean and std from ``preprocessor_config.json`` (else
    ctinit's defaults), each checked: one line for a size that is not a positive integer up to the bound on
    ``image_size`` or not the model's, a rescale factor that is not a positive number, a mean or std that is not one
    number or one per channel, a zero std."""
    from .loading import MAX_IMAGE_SIZE
    from .tasks.sampler import MEAN, STD

    size = getattr(config, "image_size", 28)
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    settings = {"size": (size, size), "rescale_factor": 1 / 255, "image_mean": [MEAN] * 3, "image_std": [STD] * 3}
    file = Path(folder) / PREPROCESSOR_NAME
    if not file.is_file():
        return settings
    try:
        raw = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file}: not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise CheckpointError(f"{file}: not an image processor config (a JSON object); fine-tune the model again")

    def bad(key: str, what: str) -> CheckpointError:
        return CheckpointError(f"{file}: {key} = {' '.join(repr(raw[key]).split())[:80]}: {what}; fix it or "
                               f"fine-tune the model again")

    def is_number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if raw.get("size") is not None:
        sizes = raw["size"] if isinstance(raw["size"], dict) else {"height": raw["size"], "width": raw["size"]}
        if not sizes or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_IMAGE_SIZE
                                for v in sizes.values()):
            raise bad("size", f"sizes must be positive integers (at most {MAX_IMAGE_SIZE})")
        if "height" in sizes and "width" in sizes and (sizes["height"], sizes["width"]) != settings["size"]:
            raise bad("size", f"the model takes {size} x {size} images (its config's image_size)")
    if "rescale_factor" in raw and not (is_number(raw["rescale_factor"]) and raw["rescale_factor"] > 0):
        raise bad("rescale_factor", "must be a positive number (1/255 for 8-bit images)")
    if raw.get("do_rescale", True) is not False:
        settings["rescale_factor"] = raw.get("rescale_factor", settings["rescale_factor"])
    else:
        settings["rescale_factor"] = 1.0
    for key in ("image_mean", "image_std"):
        if key not in raw:
            continue
        values = raw[key] if isinstance(raw[key], list) else [raw[key]]
        if len(values) not in (1, 3) or not all(is_number(v) for v in values):
            raise bad(key, "must be one number or one per colour channel (3)")
        if key == "image_std" and any(v == 0 for v in values):
            raise bad(key, "a standard deviation of 0 divides by zero")
        settings[key] = [float(v) for v in values]
    if raw.get("do_normalize", True) is False:
        settings["image_mean"], settings["image_std"] = [0.0], [1.0]
    return settings


__all__ = ["MODEL_FILES", "PREPROCESSOR_NAME", "check_out_dir", "image_processor", "load_classifier", "own_out_dir",
           "read_processor_settings", "resolve_model", "save_finetuned", "to_transformers", "write_model_folder"]
