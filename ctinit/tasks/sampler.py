"""Batches from uint8 images kept on the device, augmented there: no per-sample Python work on the hot path."""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F

#: Inputs are scaled to [-1, 1]; the same for every task, so that an initialization transfers as is.
MEAN, STD = 0.5, 0.5


def to_float(x: torch.Tensor, channels: int = 3, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 ``[B, C, H, W]`` -> normalized float ``[B, channels, H, W]`` (grayscale is repeated to 3 channels)."""
    if x.shape[1] != channels:
        if x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        elif channels == 1:
            x = x.float().mean(1, keepdim=True)
        else:
            raise ValueError(f"cannot map {x.shape[1]} image channels to {channels}")
    return (x.to(dtype) / 255.0 - MEAN) / STD


def random_crop_flip(x: torch.Tensor, padding: int, hflip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, for a whole uint8 batch at once."""
    b, c, h, w = x.shape
    device = x.device
    if padding > 0:
        padded = F.pad(x, (padding, padding, padding, padding))
        oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=generator.device).to(device)
        ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=generator.device).to(device)
        rows = (oy[:, None] + torch.arange(h, device=device))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=device))[:, None, None, :]
        x = padded[torch.arange(b, device=device)[:, None, None, None], torch.arange(c, device=device)[None, :, None, None], rows, cols]
    if hflip:
        flip = (torch.rand(b, generator=generator, device=generator.device) < 0.5).to(device)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


class BatchSampler:
    """Endless shuffled mini-batches (epoch by epoch, seeded) of one task's training split.

    Calling the sampler returns ``(x, y)`` with ``x`` float ``[B, channels, H, W]`` on the data's device.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128, *, seed: int = 0,
                 augment: bool = True, hflip: bool = True, padding: int = 4, channels: int = 3,
                 dtype: torch.dtype = torch.float32):
        if len(x) == 0:
            raise ValueError("cannot sample batches from an empty split")
        self.x, self.y = x, y
        self.batch_size = min(batch_size, len(x))
        self.augment, self.hflip, self.padding = augment, hflip, padding
        self.channels, self.dtype = channels, dtype
        # The permutation and augmentation draws live on the CPU generator: reproducible on any device.
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(len(x), generator=self.generator)
        self.position = 0
        self.epoch = 0

    def indices(self) -> torch.Tensor:
        if self.position + self.batch_size > len(self.order):
            self.order = torch.randperm(len(self.x), generator=self.generator)
            self.position = 0
            self.epoch += 1
        idx = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return idx.to(self.x.device)

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.indices()
        x = self.x[idx]
        if self.augment:
            x = random_crop_flip(x, self.padding, self.hflip, self.generator)
        return to_float(x, self.channels, self.dtype), self.y[idx]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self.order.clone(), "position": self.position,
                "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order = state["order"].clone()
        self.position = int(state["position"])
        self.epoch = int(state["epoch"])


def eval_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int = 512, channels: int = 3,
                 dtype: torch.dtype = torch.float32) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The split in order, unaugmented, in batches."""
    for i in range(0, len(x), batch_size):
        yield to_float(x[i:i + batch_size], channels, dtype), y[i:i + batch_size]
