"""Gated-convolution U-Net that fills a hole with healthy-tissue texture.

Input channels: the image with the hole zeroed, the hole (1 = fill), a noise field
z ~ N(0, 1) and a smooth pull-push fill of the hole; the network predicts a residual
over that smooth fill, so it only has to learn corrections and texture. The noise is fed again at full resolution just before the output,
so the last layers can shape it into fine texture: a deterministic network trained to
match texture statistics has no other source for the high frequencies it must invent.
Gated convolution (Yu et al., "Free-Form Image Inpainting with Gated Convolution",
ICCV 2019): out = act(conv_f(x)) * sigmoid(conv_g(x)), one convolution producing both.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

DEFAULT_WIDTHS = (8, 16, 32, 64, 128)


def pull_push_fill(masked: torch.Tensor, hole: torch.Tensor, levels: int = 8) -> torch.Tensor:
    """Smooth fill of the hole by pull-push interpolation (Gortler et al. 1996): average the
    known pixels down a pyramid, then fill each level's gaps from the level above."""
    known = 1.0 - hole
    xs, ws = [masked * known], [known]
    for _ in range(levels):
        if min(xs[-1].shape[-2:]) < 2:
            break
        xs.append(F.avg_pool2d(xs[-1], 2, ceil_mode=True))
        ws.append(F.avg_pool2d(ws[-1], 2, ceil_mode=True))
    w_top = ws[-1].sum((2, 3), keepdim=True)
    est = (xs[-1].sum((2, 3), keepdim=True) / w_top.clamp_min(1e-6)).expand_as(xs[-1])
    for x, w in zip(reversed(xs), reversed(ws)):
        up = F.interpolate(est, size=x.shape[-2:], mode="bilinear", align_corners=False)
        conf = (w * 4.0).clamp(max=1.0)
        est = conf * (x / w.clamp_min(1e-6)) + (1.0 - conf) * up
    return est


class GatedConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1):
        super().__init__()
        pad = dilation * (kernel - 1) // 2
        self.conv = nn.Conv2d(cin, 2 * cout, kernel, stride, pad, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat, gate = self.conv(x).chunk(2, dim=1)
        return F.elu(feat) * torch.sigmoid(gate)


class GatedUNet(nn.Module):
    """U-Net of gated convolutions; `stride` = 2**(len(widths)-1) is the size multiple it needs.

    widths: channels per level, full resolution first (default 8, 16, 32, 64, 128:
    about 1.5 M parameters, 5.9 MB float32). The coarsest level adds two dilated
    gated convolutions so large holes see far enough into their surroundings.
    """

    def __init__(self, widths: tuple[int, ...] = DEFAULT_WIDTHS, in_channels: int = 4):
        super().__init__()
        self.widths = tuple(int(w) for w in widths)
        self.stride = 2 ** (len(self.widths) - 1)
        w = self.widths
        self.stem = GatedConv(in_channels, w[0], kernel=5)
        self.down = nn.ModuleList(
            nn.Sequential(GatedConv(w[i], w[i + 1], stride=2), GatedConv(w[i + 1], w[i + 1]))
            for i in range(len(w) - 1)
        )
        self.context = nn.Sequential(GatedConv(w[-1], w[-1], dilation=2), GatedConv(w[-1], w[-1], dilation=4))
        self.up = nn.ModuleList(
            GatedConv(w[i + 1] + w[i], w[i]) for i in reversed(range(len(w) - 1))
        )
        self.texture = GatedConv(w[0] + 1, w[0])
        self.head = nn.Conv2d(w[0], 1, 3, padding=1)

    def forward(self, masked: torch.Tensor, hole: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        coarse = pull_push_fill(masked, hole)
        x = self.stem(torch.cat([masked, hole, noise, coarse], 1))
        skips = [x]
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = self.context(x)
        skips.pop()
        for block in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = block(torch.cat([x, skip], 1))
        x = self.texture(torch.cat([x, noise], 1))
        return coarse + self.head(x)
