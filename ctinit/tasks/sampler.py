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


class _SplitSampler:
    """What both samplers keep: one task's split, the batch size (at most the split's size) and the augmentation
    and output settings."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, augment: bool, hflip: bool,
                 padding: int, channels: int, dtype: torch.dtype):
        if len(x) == 0:
            raise ValueError("cannot sample batches from an empty split")
        self.x, self.y = x, y
        self.batch_size = min(batch_size, len(x))
        self.augment, self.hflip, self.padding = augment, hflip, padding
        self.channels, self.dtype = channels, dtype


class BatchSampler(_SplitSampler):
    """Endless shuffled mini-batches (epoch by epoch, seeded) of one task's training split.

    Calling the sampler returns ``(x, y)`` with ``x`` float ``[B, channels, H, W]`` on the data's device.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128, *, seed: int = 0,
                 augment: bool = True, hflip: bool = True, padding: int = 4, channels: int = 3,
                 dtype: torch.dtype = torch.float32):
        super().__init__(x, y, batch_size, augment=augment, hflip=hflip, padding=padding, channels=channels,
                         dtype=dtype)
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


_MASK32 = 0xFFFFFFFF


def hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xorshift-multiply) of int64 ``x``, in int64 arithmetic that never overflows (every
    product is below 2**63), so it gives the same values on every device. For counter-based random draws."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x2C1B3C6D) & _MASK32
    return x ^ (x >> 16)


class DeviceBatchSampler(_SplitSampler):
    """Endless shuffled, augmented mini-batches of one task's split, drawn by device operations alone.

    The same kind of batches as ``BatchSampler`` (epoch by epoch without replacement, random crop with zero padding
    and horizontal flip), but no draw reads from or writes to the host, so the draw can sit inside a captured CUDA
    graph: the epoch's order is a device tensor, the position in it a device counter, and the crop offsets and
    flips are a hash of (seed, draw counter, sample) rather than a stateful generator's output (counter-based, so the
    same on every device and in every replay of a graph). The draws differ from ``BatchSampler``'s.

    Protocol (``TrajectoryEngine`` with ``compile: graphs`` or ``inductor``): ``prepare()`` on the host before a step
    (it shuffles a new epoch, an eager device operation, when the host-side position says one is due), ``draw()``
    inside the step (device only), ``advance()`` after it. Calling the sampler does all three.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128, *, seed: int = 0,
                 augment: bool = True, hflip: bool = True, padding: int = 4, channels: int = 3,
                 dtype: torch.dtype = torch.float32):
        super().__init__(x, y, batch_size, augment=augment, hflip=hflip, padding=padding, channels=channels,
                         dtype=dtype)
        self.seed = int(seed)
        device = x.device
        self._arange = torch.arange(self.batch_size, device=device)
        self.position = 0  # host-side mirror of the device position
        self.epoch = 0
        self.device_position = torch.zeros((), dtype=torch.long, device=device)
        self.draws = torch.zeros((), dtype=torch.long, device=device)
        self.order = self.permutation(0)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of the split in ``epoch``: an argsort of distinct hashed keys (deterministic on every device)."""
        n = len(self.x)
        index = torch.arange(n, device=self.x.device)
        salt = (self.seed * 0x9E3779B1 + epoch * 0x85EBCA77) & _MASK32  # host integers: no device read
        return torch.argsort(hash32(hash32(index + salt) ^ salt) * n + index)

    def prepare(self) -> None:
        if self.position + self.batch_size > len(self.x):
            self.epoch += 1
            self.order.copy_(self.permutation(self.epoch))
            self.device_position.zero_()
            self.position = 0

    def advance(self) -> None:
        self.position += self.batch_size

    def draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.order.index_select(0, self.device_position + self._arange)
        self.device_position.add_(self.batch_size)
        x, y = self.x.index_select(0, idx), self.y.index_select(0, idx)
        if self.augment:
            b, c, h, w = x.shape
            keys = hash32((self.draws * self.batch_size + self._arange) * 3 + self.seed * 0x632BE5AB)
            if self.padding > 0:
                span = 2 * self.padding + 1
                oy, ox = keys % span, (keys >> 8) % span
                padded = F.pad(x, (self.padding,) * 4)
                rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
                cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
                x = padded[self._arange[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None],
                           rows, cols]
            if self.hflip:
                x = torch.where(((keys >> 20) & 1).bool()[:, None, None, None], x.flip(-1), x)
        self.draws.add_(1)
        return to_float(x, self.channels, self.dtype), y

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.prepare()
        out = self.draw()
        self.advance()
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "draws": int(self.draws)}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.order.copy_(self.permutation(self.epoch))
        self.device_position.fill_(self.position)
        self.draws.fill_(int(state["draws"]))


def eval_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int = 512, channels: int = 3,
                 dtype: torch.dtype = torch.float32) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The split in order, unaugmented, in batches."""
    for i in range(0, len(x), batch_size):
        yield to_float(x[i:i + batch_size], channels, dtype), y[i:i + batch_size]
