"""Texture-aware inpainting loss: low-pass L1 for structure, high-pass statistics for texture.

Plain L1 on pixels makes a network predict the conditional median, which is a blur.
Here pixel L1 gets a small weight; structure is judged on low-passed images, and
texture by (a) the energy of three high-pass bands inside the hole (log ratio, so a
flat fill is punished hard) and (b) Gram matrices of a fixed random filter bank run on
the high-pass image (second-order texture statistics, Gatys-style, without a VGG).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from explain.inpaint import gaussian_blur


class TextureLoss(nn.Module):
    """loss(out, target, hole) -> (total, parts). Weights default to what trained the shipped model."""

    def __init__(self, w_l1: float = 0.2, w_low: float = 1.0, w_grad: float = 1.0, w_energy: float = 0.1,
                 w_gram: float = 0.1, low_sigma: float = 1.5, n_filters: int = 8, seed: int = 0,
                 energy_floor: float = 1e-5):
        super().__init__()
        self.w = dict(l1=w_l1, low=w_low, grad=w_grad, energy=w_energy, gram=w_gram)
        self.low_sigma = low_sigma
        # Band energies below the floor (air, flat skin-line background) count as equal:
        # without it a log ratio against ~0 explodes.
        self.floor = energy_floor
        g = torch.Generator().manual_seed(seed)
        bank = torch.randn(n_filters, 1, 7, 7, generator=g)
        bank = bank - bank.mean((2, 3), keepdim=True)
        self.register_buffer("bank", bank / bank.flatten(1).norm(dim=1).view(-1, 1, 1, 1))

    @staticmethod
    def _masked_mean(x, m):
        return (x * m).sum((1, 2, 3)) / m.sum((1, 2, 3)).clamp_min(1.0)

    def forward(self, out: torch.Tensor, target: torch.Tensor, hole: torch.Tensor):
        comp = (1 - hole) * target + hole * out
        near = F.max_pool2d(hole, 7, 1, 3)
        parts = {}
        parts["l1"] = self._masked_mean((out - target).abs(), hole).mean()
        lo_c, lo_t = gaussian_blur(comp, self.low_sigma), gaussian_blur(target, self.low_sigma)
        parts["low"] = self._masked_mean((lo_c - lo_t).abs(), near).mean()
        gy = lambda x: x[..., 1:, :] - x[..., :-1, :]  # noqa: E731
        gx = lambda x: x[..., :, 1:] - x[..., :, :-1]  # noqa: E731
        parts["grad"] = (self._masked_mean((gy(lo_c) - gy(lo_t)).abs(), near[..., 1:, :]).mean()
                         + self._masked_mean((gx(lo_c) - gx(lo_t)).abs(), near[..., :, 1:]).mean())
        energy = 0.0
        prev_c, prev_t = comp, target
        for sigma in (1.0, 2.0, 4.0):
            b_c, b_t = gaussian_blur(comp, sigma), gaussian_blur(target, sigma)
            e_c = self._masked_mean((prev_c - b_c) ** 2, hole)
            e_t = self._masked_mean((prev_t - b_t) ** 2, hole)
            energy = energy + (torch.log(e_c + self.floor) - torch.log(e_t + self.floor)).abs().mean()
            prev_c, prev_t = b_c, b_t
        parts["energy"] = energy / 3
        hp_c = comp - gaussian_blur(comp, 2.0)
        hp_t = target - gaussian_blur(target, 2.0)
        f_c, f_t = F.conv2d(hp_c, self.bank, padding=3), F.conv2d(hp_t, self.bank, padding=3)
        n = hole.sum((1, 2, 3)).clamp_min(1.0).view(-1, 1, 1)
        g_c = torch.einsum("bihw,bjhw->bij", f_c * hole, f_c) / n
        g_t = torch.einsum("bihw,bjhw->bij", f_t * hole, f_t) / n
        # Normalised by the batch's mean target Gram norm, not per crop (a flat crop would divide by ~0).
        parts["gram"] = (g_c - g_t).abs().sum((1, 2)).mean() / (g_t.abs().sum((1, 2)).mean() + 1e-6)
        total = sum(self.w[k] * v for k, v in parts.items())
        return total, {k: float(v.detach()) for k, v in parts.items()}
