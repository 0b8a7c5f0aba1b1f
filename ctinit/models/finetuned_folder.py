"""The folder of a fine-tuned classifier: a standard transformers image-classification folder, written by the
models themselves (:meth:`ImageClassifier.save_pretrained`, ``push_to_hub``) and ``ctinit finetune --out``.

    OUT/config.json               the backbone's config with id2label/label2id and a ``ctinit`` entry (provenance)
    OUT/model.safetensors         backbone + classifier head
    OUT/preprocessor_config.json  written by transformers' ViTImageProcessor: resize to the model's size
                                  (bilinear), x / 255, normalize with mean 0.5 and std 0.5, grayscale to RGB
    OUT/README.md                 the card: pipeline_tag image-classification, base_model, model-index

ctinit backbones become :class:`~ctinit.models.for_image_classification.CtinitResNetForImageClassification` /
``CtinitConvNetForImageClassification`` (``AutoModelForImageClassification`` finds them after ``import ctinit``);
the standard ones (``hf-vit-tiny``, ``hf-convnext-tiny``) become transformers' own ``ViTForImageClassification`` /
``ConvNextForImageClassification`` and load without ctinit. Nothing written holds a local path. Reading such a
folder back is :mod:`ctinit.finetuned_loading`.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..atomic import check_output_folder, folder_content, give_new_file_mode, owned_dir, staged_dir
from ..errors import CheckpointError, ConfigError
from ..hubio.cards import card_license, check_license, dataset_id, render_card
from ..hubio.names import CARD_NAME, CONFIG_NAME, PREPROCESSOR_NAME, WEIGHTS_NAME
from ..version import __version__
from .configuration import is_ctinit_config


# ------------------------------------------------------------------------------------------------ the processor


def image_processor(config):
    """A transformers image processor that reproduces what ctinit feeds a model of ``config``: bilinear resize to
    ``image_size`` (PIL's, the same as :func:`ctinit.predict.preprocess`), rescale by 1/255, normalize with mean
    and std 0.5 (inputs in [-1, 1]), grayscale and other modes converted to RGB."""
    try:  # transformers 5 without torchvision: the PIL backend, saved as "ViTImageProcessor"
        from transformers import ViTImageProcessorPil as processor_class
    except ImportError:
        from transformers import ViTImageProcessor as processor_class
    from ..tasks.sampler import MEAN, STD

    size = getattr(config, "image_size", 28)
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    channels = int(getattr(config, "num_channels", 3))
    return processor_class(do_resize=True, size={"height": size, "width": size}, resample=2, do_rescale=True,
                           rescale_factor=1 / 255, do_normalize=True, image_mean=[MEAN] * channels,
                           image_std=[STD] * channels, do_convert_rgb=channels == 3)


def _classifier_card(config, info: dict, repo_id: str | None, license: str | None) -> str:
    """The card of a fine-tuned classifier (``templates/classifier.md`` of :mod:`ctinit.hubio.cards`)."""
    from huggingface_hub import EvalResult, ModelCardData

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
    card = render_card(
        "classifier", data, model_name=name, task_name=task.get("name", "a task"), num_labels=len(labels),
        class_names=shown, origin=origin, steps=info.get("steps"), seed=info.get("seed"),
        optimizer=opt.get("name", "?"), lr=opt.get("lr", "?"), batch_size=recipe.get("batch_size", "?"),
        augmentation=_augmentation(recipe), accuracy=accuracy if accuracy is None else f"{accuracy:.4f}",
        test_size=task.get("test_size", "?"), license_note=license_note, ref=repo_id or "DIR",
        load_lines="from transformers import pipeline\n" if plain else
        "import ctinit  # registers ctinit's models with transformers\nfrom transformers import pipeline\n",
        loads_how=f"It is a plain transformers `{type_name(config)}` and loads without ctinit." if plain else
        "After `import ctinit`, `AutoModelForImageClassification.from_pretrained(...)` loads it (no `trust_remote_code`).",
        image_size=getattr(config, "image_size", 28))
    return str(card)


def _augmentation(recipe: dict) -> str:
    """The card's words for the augmentation of ``recipe`` (the config's ``ctinit.recipe``)."""
    if "augment" not in recipe:
        return ""
    if not recipe["augment"]:
        return "; no augmentation"
    return "; random crop" + {True: " and horizontal flip", False: ", no flip"}.get(recipe.get("hflip"), "")


def type_name(config) -> str:
    return (getattr(config, "architectures", None) or [config.model_type])[0]


def check_finite(model: nn.Module, doing: str = "save", where: str = "") -> None:
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{where}tensor '{name}' holds NaN or infinite values: refusing to {doing} a broken "
                                  f"model (fine-tune it again)")


def write_model_folder(model, out: str | Path, *, labels=None, made_with: dict | None = None,
                       license: str | None = None, repo_id: str | None = None) -> Path:
    """Write the folder (see module doc) for ``model``: an ImageClassifier with a head (converted by
    :func:`to_transformers`) or a transformers image-classification model. ``out`` is created if needed (this
    writes into it: :func:`save_finetuned` writes a whole folder safely). Without ``license`` the card's license
    follows the data (:func:`ctinit.hubio.cards.card_license`)."""
    if license is not None:
        check_license(license)
    if hasattr(model, "to_transformers"):  # an ImageClassifier: converted (models/finetuned_transformers.py)
        model = model.to_transformers(labels, made_with)
    elif made_with is not None:
        model.config.ctinit = {"library_version": __version__, **made_with}
    check_finite(model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    give_new_file_mode(out / WEIGHTS_NAME)  # safetensors writes it 0600; the folder is for others to load
    image_processor(model.config).save_pretrained(str(out))
    info = dict(getattr(model.config, "ctinit", None) or {})
    (out / CARD_NAME).write_text(_classifier_card(model.config, info, repo_id, license).rstrip("\n") + "\n")
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


__all__ = ["MODEL_FILES", "check_finite", "check_model_out_dir", "check_out_dir", "image_processor", "own_out_dir", "save_finetuned",
           "type_name", "write_model_folder"]
