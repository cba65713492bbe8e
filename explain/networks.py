"""cfia's default classifier network, built from MONAI blocks.

MammoNet: a small residual CNN (MONAI `Convolution` stem + `ResidualUnit` stages,
each halving the resolution) with a head that concatenates global average and
global max pooling before one linear layer. Max pooling keeps a small lesion's
evidence from being averaged away over a whole breast; average pooling keeps the
gradient spread over more than one location. Sized for CPU: a forward+backward of
one 1x384x256 image takes well under 0.2 s on one core.

Optional front end (`lcn_sigma` > 0): each input channel is fed alongside its local
contrast normalisation, (x - local mean) / local s.d. (Gaussian windows of sigma and
2 sigma input pixels), a fixed divisive normalisation that a stack of convolutions and
ReLUs does not easily learn: a faint mass in fatty tissue and a lump in dense tissue
reach the stem on the same scale.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
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
        lcn_sigma: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes
        self.lcn = LocalContrast(lcn_sigma) if lcn_sigma > 0 else None
        stem_in = 2 * in_channels if self.lcn is not None else in_channels
        self.stem = Convolution(2, stem_in, channels[0], strides=2, kernel_size=stem_kernel,
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
        if self.lcn is not None:
            x = torch.cat([x, self.lcn(x)], dim=1)
        return self.features(self.stem(x))

    def head(self, f: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        return self.fc(self.dropout(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.feature_map(x))


class LocalContrast(nn.Module):
    """(x - G_sigma * x) / sqrt(G_2sigma * (x - G_sigma * x)^2 + eps), per channel, scaled
    by 1/4 so typical values stay within [-1, 1]. Fixed (no parameters); edges replicated."""

    def __init__(self, sigma: float, eps: float = 1e-4) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("k_mean", _gaussian_1d(sigma), persistent=False)
        self.register_buffer("k_var", _gaussian_1d(2 * sigma), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        detail = x - _blur(x, self.k_mean)
        return 0.25 * detail / torch.sqrt(_blur(detail * detail, self.k_var) + self.eps)


def _gaussian_1d(sigma: float) -> torch.Tensor:
    radius = max(1, int(3 * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _blur(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W), each channel alone, edges replicated."""
    c, r = x.shape[1], k.numel() // 2
    kh = k.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    kv = k.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), kh, groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), kv, groups=c)


NETWORKS = {"MammoNet": MammoNet}
