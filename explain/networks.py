"""cfia's default classifier network, built from MONAI blocks.

MammoNet: a small residual CNN (MONAI `Convolution` stem + `ResidualUnit` stages,
each halving the resolution) with a head that concatenates global average and
global max pooling before one linear layer. Max pooling keeps a small lesion's
evidence from being averaged away over a whole breast; average pooling keeps the
gradient spread over more than one location. Sized for CPU: a forward+backward of
one 1x384x256 image takes well under 0.2 s on one core.
"""
from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.blocks import Convolution, ResidualUnit
from torch import nn

__all__ = ["MammoNet", "NETWORKS"]


class MammoNet(nn.Module):
    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        channels: Sequence[int] = (16, 24, 32, 64, 96),
        stem_kernel: int = 5,
        subunits: int = 2,
        dropout: float = 0.2,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes
        self.stem = Convolution(2, in_channels, channels[0], strides=2, kernel_size=stem_kernel,
                                act="relu", norm=norm)
        stages = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            stages.append(ResidualUnit(2, c_in, c_out, strides=2, kernel_size=3, subunits=subunits,
                                       act="relu", norm=norm))
        self.features = nn.Sequential(*stages)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * channels[-1], num_classes)
        # Training-only auxiliary head: a lesion map at the last feature resolution,
        # supervised with the lesion masks (deep supervision); forward() ignores it.
        self.lesion = nn.Conv2d(channels[-1], 1, kernel_size=1)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.stem(x))

    def head(self, f: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        return self.fc(self.dropout(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.feature_map(x))


NETWORKS = {"MammoNet": MammoNet}
