"""Backbones as transformers ``PreTrainedModel``s: ``forward(pixel_values)`` returns pooled features.

They return a plain ``[batch, feature_dim]`` tensor rather than a ``ModelOutput``: the engine calls them
millions of times and the head is a separate, task-specific module.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from .configuration import CtinitConvNetConfig, CtinitResNetConfig


class _CtinitPreTrainedModel(PreTrainedModel):
    main_input_name = "pixel_values"
    base_model_prefix = "backbone"

    def _init_weights(self, module):
        """Fresh values for every parameter and buffer of ``module``: transformers calls this for whatever a
        checkpoint does not hold (a new classification head, a missing tensor) and skips what was loaded (its
        guarded ``nn.init`` functions leave loaded tensors alone). Every module type with tensors that these models
        use is covered (tests/test_hardening_models.py checks it): anything left out would be uninitialised memory."""
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
            if module.running_mean is not None:
                nn.init.zeros_(module.running_mean)
                nn.init.ones_(module.running_var)
                nn.init.zeros_(module.num_batches_tracked)
        elif isinstance(module, nn.Linear):
            module.reset_parameters()  # torch's default, as the fresh head ctinit.finetune puts on a backbone

    @property
    def feature_dim(self) -> int:
        return self.config.feature_dim


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CtinitResNetModel(_CtinitPreTrainedModel):
    config_class = CtinitResNetConfig

    def __init__(self, config: CtinitResNetConfig):
        super().__init__(config)
        blocks_per_stage = (config.depth - 2) // 6
        w = config.widths
        self.stem = nn.Sequential(nn.Conv2d(config.num_channels, w[0], 3, 1, 1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU())
        stages, in_ch = [], w[0]
        for i, out_ch in enumerate(w):
            for b in range(blocks_per_stage):
                stages.append(BasicBlock(in_ch, out_ch, stride=2 if (i > 0 and b == 0) else 1))
                in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(pixel_values)).mean(dim=(2, 3))


class CtinitConvNetModel(_CtinitPreTrainedModel):
    config_class = CtinitConvNetConfig

    def __init__(self, config: CtinitConvNetConfig):
        super().__init__(config)
        layers, in_ch = [], config.num_channels
        for _ in range(config.num_layers):
            layers += [nn.Conv2d(in_ch, config.hidden_size, 3, 1, 1), nn.BatchNorm2d(config.hidden_size), nn.ReLU(), nn.MaxPool2d(2)]
            in_ch = config.hidden_size
        self.layers = nn.Sequential(*layers)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # Global average pooling makes the feature size independent of the input size.
        return self.layers(pixel_values).mean(dim=(2, 3))
