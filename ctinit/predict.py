"""Batched inference of a fine-tuned classifier on image files (``ctinit predict``).

Images are read by :mod:`ctinit.images` (PNG, JPEG, TIFF..., any size up to 8192 x 8192, grayscale, colour or
16-bit), converted to RGB, resized with PIL's bilinear filter to the model's input size when they differ, and
normalized as ``preprocessor_config.json`` says: exactly what transformers' image processor of that folder computes,
done for a whole batch at once in torch. Scores that are not finite numbers are an error, never printed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import CheckpointError, ConfigError, TaskSpecError
from .images import IMAGE_SUFFIXES, is_image_file, open_image


def find_images(inputs: list[str]) -> list[Path]:
    """Files as given, and the image files (by suffix, sorted) under each folder; a folder without images fails."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if is_image_file(p)
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                raise ConfigError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            files.extend(found)
        else:
            files.append(path)  # a missing or unreadable file is reported with the others, not fatal here
    if not files:
        raise ConfigError("name at least one image file or folder")
    return files


def read_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``[H, W, 3]`` at ``size`` (height, width): RGB, PIL bilinear resize as the image processor does."""
    from PIL import Image

    rgb = open_image(path).convert("RGB")
    if rgb.size != (size[1], size[0]):
        rgb = rgb.resize((size[1], size[0]), resample=Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


@dataclass
class Predictor:
    """A loaded classifier and its input settings; :meth:`__call__` takes uint8 ``[B, H, W, 3]`` images."""

    model: torch.nn.Module
    labels: list[str]
    size: tuple[int, int]
    scale: torch.Tensor   # [1, 3, 1, 1]: rescale_factor / std
    shift: torch.Tensor   # [1, 3, 1, 1]: mean / std
    device: torch.device
    name: str = "the model"  # for messages

    @classmethod
    def load(cls, model: str | Path, revision: str | None = None, device: str | None = None) -> "Predictor":
        from .schema import check_device
        from .finetune import resolve_device
        from .finetuned_loading import load_classifier, read_processor_settings, resolve_model

        device = resolve_device(check_device(device))  # cpu, cuda[:N] that exists here: before anything is loaded
        folder, _, _ = resolve_model(model, revision)
        net = load_classifier(folder)
        settings = read_processor_settings(folder, net.config)
        mean = torch.tensor(settings["image_mean"], dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(settings["image_std"], dtype=torch.float32).view(1, -1, 1, 1)
        labels = [net.config.id2label[i] for i in range(net.config.num_labels)]
        return cls(net.to(device), labels, settings["size"], (settings["rescale_factor"] / std).to(device),
                   (mean / std).to(device), device, str(model))

    def pixel_values(self, images: np.ndarray) -> torch.Tensor:
        """uint8 ``[B, H, W, 3]`` -> float ``[B, 3, H, W]``: x * rescale / std - mean / std (the processor's math)."""
        if not images.flags.writeable:  # np.asarray of a PIL image is read-only
            images = images.copy()
        x = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2)
        return x.float() * self.scale - self.shift

    @torch.inference_mode()
    def __call__(self, images: np.ndarray, top_k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores, class indices)``, each ``[B, k]``, best first."""
        out = self.model(pixel_values=self.pixel_values(images))
        logits = out.logits if hasattr(out, "logits") else out
        probs = logits.float().softmax(-1)
        if not bool(torch.isfinite(probs).all()):
            raise CheckpointError(f"{self.name}: the scores are not finite numbers (NaN or infinite): its weights or "
                                  f"preprocessor_config.json are broken (e.g. weights too large for float32, a zero "
                                  f"image_std); fine-tune it again")
        return probs.topk(min(top_k, probs.shape[-1]), dim=-1)

    def predict_files(self, files: list[Path], top_k: int = 5, batch_size: int = 64, on_error=None):
        """Yield ``(file, [(label, score), ...])`` for each readable file in order; ``on_error(file, error)`` for
        the others (they do not stop the rest)."""
        for start in range(0, len(files), batch_size):
            batch, arrays = [], []
            for f in files[start:start + batch_size]:
                try:
                    arrays.append(read_image(f, self.size))
                    batch.append(f)
                except TaskSpecError as e:
                    if on_error is None:
                        raise
                    on_error(f, e)
            if not arrays:
                continue
            scores, indices = self(np.stack(arrays), top_k)
            for f, s, idx in zip(batch, scores.tolist(), indices.tolist()):
                yield f, [(self.labels[i], float(p)) for i, p in zip(idx, s)]


__all__ = ["Predictor", "find_images", "read_image"]
