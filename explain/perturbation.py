"""Perturbations: what a masked pixel is replaced with.

Φ(x, M) = (1 − M)·x + M·C, where C is a counterfactual image. For the method, C is
healthy tissue inpainted from each pixel's neighbourhood; for the Fong & Vedaldi
baseline, a blurred copy of x. Inpainting every optimiser step costs an inpainter
pass per step, so C is built once by tiles (every pixel filled from context that
lies outside its own tile) and, optionally, refreshed on a schedule with the
current region as the hole, so the fill is conditioned on the region's true border.

At a partial mask value the plain blend of two independent textures is smoother than
either (at M = 0.5 its fine-texture s.d. is 0.71 of theirs), so a faint, wide mask
"deletes" texture itself. InpaintPerturbation's blend "texture" mixes the fine texture
with weights cos(πM/2), sin(πM/2) instead, so its energy stays that of the tissue at
every mask value, and only the coarse content is blended linearly.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

# An inpainter takes (image, hole) tensors of shape (B,1,H,W), hole 1 = fill.
Inpainter = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

BLENDS = ("linear", "texture")


def tile_holes(shape: tuple[int, int], tile: int, offset: int = 0) -> list[torch.Tensor]:
    """Four hole patterns on a grid of period 2*tile; together they cover every pixel.

    In each pattern a hole has its four neighbouring tiles as context, which keeps a
    hole's share of the image near a quarter (inside what the inpainter trained on).
    `offset` shifts the grid diagonally by that many pixels.
    """
    rows, cols = shape
    r = (torch.arange(rows)[:, None] + offset) // tile
    c = (torch.arange(cols)[None, :] + offset) // tile
    return [(((r + dr) % 2 == 0) & ((c + dc) % 2 == 0)).float()[None, None]
            for dr in (0, 1) for dc in (0, 1)]


def _check_tilings(tilings: int) -> None:
    if tilings < 1 or tilings % 2 == 0:
        raise ValueError(f"tilings {tilings!r} must be a positive odd number (a per-pixel median)")


def tiled_counterfactual(x: torch.Tensor, inpainter: Inpainter, tile: int, tilings: int = 1) -> torch.Tensor:
    """C: every pixel of x replaced by the inpainter's fill of the tile around it.

    A tile grid cuts through a lesion, and a tile filled from context that holds the
    rest of it brings lesion-like brightness back. With `tilings` (odd) > 1, grids
    shifted by tile / tilings each give a fill, and each pixel takes their median: a
    lesion cut by one grid lies whole inside a hole of another, so the median keeps
    the fills that did not see it."""
    _check_tilings(tilings)
    fills = []
    with torch.no_grad():
        for k in range(tilings):
            out = torch.empty_like(x)
            for hole in tile_holes(x.shape[-2:], tile, offset=k * tile // tilings):
                hole = hole.to(x)
                out = torch.where(hole.bool(), inpainter(x, hole), out)
            fills.append(out)
    return fills[0] if tilings == 1 else torch.stack(fills).median(0).values


def blurred(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur with reflect padding (Fong & Vedaldi's blur perturbation); replicate
    padding along a side too short to reflect the kernel's radius. Not explain.inpaint's
    gaussian_blur: this radius rounds 3 sigma down, that one up, and each is what its
    committed figures and weights were measured with."""
    radius = max(1, int(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    y = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode=_pad_mode(radius, x.shape[-1])), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(y, (0, 0, radius, radius), mode=_pad_mode(radius, x.shape[-2])), k.view(1, 1, -1, 1))


def _pad_mode(radius: int, side: int) -> str:
    return "reflect" if radius < side else "replicate"


class InpaintPerturbation:
    """Replace masked pixels by inpainted healthy tissue.

    Args:
        inpainter: fills holes from their neighbourhood (learned or classical).
        tile: hole size, in input pixels, of the initial tiled counterfactual;
            about the size of the largest lesion the classifier sees.
        tilings: odd number of shifted tile grids whose fills are combined by a
            per-pixel median (default 1: one grid; see tiled_counterfactual).
        refresh_every: re-inpaint with the current region as the hole every this
            many optimiser steps (0 = never).
        refresh_threshold: mask value above which a pixel belongs to that hole.
        blend: "linear" (Φ = (1 − M)·x + M·C, the paper's) or "texture" (the fine
            texture, x and C minus their Gaussian low-pass, blended with weights
            cos(πM/2), sin(πM/2), which keep its energy; the low-pass linearly).
            Both agree at M = 0 and M = 1 (default "linear").
        blend_sigma: the low-pass's Gaussian sigma, input pixels, for "texture"
            (default 2.0, the texture metric's).
    """

    def __init__(self, inpainter: Inpainter, tile: int = 32, refresh_every: int = 0,
                 refresh_threshold: float = 0.5, blend: str = "linear", blend_sigma: float = 2.0,
                 tilings: int = 1):
        if blend not in BLENDS:
            raise ValueError(f"blend {blend!r} is not one of {BLENDS}")
        _check_tilings(tilings)
        self.inpainter = inpainter
        self.tile, self.tilings = tile, tilings
        self.refresh_every = refresh_every
        self.refresh_threshold = refresh_threshold
        self.blend, self.blend_sigma = blend, blend_sigma

    def apply(self, x: torch.Tensor, mask: torch.Tensor, counterfactual: torch.Tensor) -> torch.Tensor:
        if self.blend == "linear":
            return apply(x, mask, counterfactual)
        return texture_blend(x, mask, counterfactual, self.blend_sigma)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        return tiled_counterfactual(x, self.inpainter, self.tile, self.tilings)

    def refresh(self, x: torch.Tensor, mask: torch.Tensor, current: torch.Tensor, step: int) -> torch.Tensor:
        if not self.refresh_every or step == 0 or step % self.refresh_every:
            return current
        return self.fill_region(x, mask > self.refresh_threshold, current)

    def fill_region(self, x: torch.Tensor, region: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """Inpaint `region` (bool, (1,1,H,W)) and a 2-pixel margin around it, keeping `current` elsewhere."""
        if not region.any():
            return current
        hole = F.max_pool2d(region.float(), 5, stride=1, padding=2)  # a small margin of context
        with torch.no_grad():
            filled = self.inpainter(x, hole)
        return torch.where(hole.bool(), filled, current)


class BlurPerturbation:
    """Fong & Vedaldi (2017): masked pixels are replaced by a blurred copy of x."""

    def __init__(self, sigma: float = 10.0):
        self.sigma = sigma

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return blurred(x, self.sigma)

    def refresh(self, x, mask, current, step):
        return current

    def fill_region(self, x, region, current):
        return current

    def apply(self, x, mask, counterfactual):
        return apply(x, mask, counterfactual)


def apply(x: torch.Tensor, mask: torch.Tensor, counterfactual: torch.Tensor) -> torch.Tensor:
    """Φ(x, M) = (1 − M)·x + M·C."""
    return (1.0 - mask) * x + mask * counterfactual


def texture_blend(x: torch.Tensor, mask: torch.Tensor, counterfactual: torch.Tensor,
                  sigma: float) -> torch.Tensor:
    """Φ with the fine texture's energy kept: low-pass blended linearly, the rest by
    cos/sin weights (uncorrelated textures: cos² + sin² = 1)."""
    low_x, low_c = blurred(x, sigma), blurred(counterfactual, sigma)
    angle = mask * (torch.pi / 2)
    return (apply(low_x, mask, low_c) + torch.cos(angle) * (x - low_x)
            + torch.sin(angle) * (counterfactual - low_c))
