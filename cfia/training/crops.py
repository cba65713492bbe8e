"""Lesion-free training crops of breast tissue, with augmentation.

Crops come from every image at several scales of its stored pixels (1 = as stored, 0.5 =
half size). The node inpaints on the classifier's input grid (by default 512 rows over the
breast's crop), so these crops match its pixel scale only for images of about 512 rows (or
1024, at 0.5): a 2048-row detector image's 96-pixel crop covers about a quarter (at 0.5, a
half) of the tissue it covers at the node (docs/models.md, "Training your own").
A fraction `edge_fraction` of crops straddle the skin line; the rest lie inside the breast.
Crops never touch a lesion mask dilated by `lesion_margin` pixels, so positives contribute
healthy tissue.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from .mammo_io import Mammo


@dataclass
class _Level:
    image: np.ndarray
    inside: np.ndarray   # flat indices of top-left corners of crops inside the breast
    edge: np.ndarray     # ... of crops across the skin line


class CropSampler:
    """Draws (crop, breast-fraction) pairs; all randomness comes from the rng passed in."""

    def __init__(self, images: list[Mammo], crop: int = 96, scales: tuple[float, ...] = (1.0, 0.5),
                 edge_fraction: float = 0.2, lesion_margin: int = 16):
        self.crop, self.edge_fraction = int(crop), float(edge_fraction)
        self.levels: list[_Level] = []
        for m in images:
            for s in scales:
                self._add(m, s, lesion_margin)
        if not self.levels:
            raise ValueError(f"no image has a {crop}x{crop} crop of lesion-free breast tissue")

    def _add(self, m: Mammo, scale: float, margin: int) -> None:
        c = self.crop
        img, breast = m.image, m.breast.astype(np.float32)
        bad = np.zeros_like(breast) if m.lesion is None else ndimage.binary_dilation(m.lesion, iterations=margin).astype(np.float32)
        if scale != 1.0:
            size = (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale)))
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
            breast = cv2.resize(breast, size, interpolation=cv2.INTER_AREA)
            bad = cv2.resize(bad, size, interpolation=cv2.INTER_AREA)
        if img.shape[0] < c or img.shape[1] < c:
            return
        # Fraction of breast / lesion in the crop whose top-left corner is at each pixel.
        frac = cv2.boxFilter(breast, -1, (c, c), anchor=(0, 0), normalize=True, borderType=cv2.BORDER_CONSTANT)
        hit = cv2.boxFilter(bad, -1, (c, c), anchor=(0, 0), normalize=True, borderType=cv2.BORDER_CONSTANT)
        valid = np.zeros_like(frac, bool)
        valid[: img.shape[0] - c + 1, : img.shape[1] - c + 1] = True
        valid &= hit <= 1e-6
        inside = np.flatnonzero(valid & (frac >= 0.98))
        edge = np.flatnonzero(valid & (frac >= 0.3) & (frac <= 0.9))
        if inside.size or edge.size:
            self.levels.append(_Level(img.astype(np.float32), inside, edge))

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        c = self.crop
        while True:
            lvl = self.levels[rng.integers(len(self.levels))]
            want_edge = rng.random() < self.edge_fraction
            pool = lvl.edge if (want_edge and lvl.edge.size) or not lvl.inside.size else lvl.inside
            if pool.size:
                break
        r, col = np.unravel_index(pool[rng.integers(pool.size)], lvl.image.shape)
        return lvl.image[r: r + c, col: col + c].copy(), pool is lvl.edge


def augment(crop: np.ndarray, is_edge: bool, rng: np.random.Generator, gamma: tuple[float, float] = (0.7, 1.4),
            contrast: tuple[float, float] = (0.8, 1.2), noise_prob: float = 0.3, noise_sigma: float = 0.01) -> np.ndarray:
    """The inpainter's crop augmentation (the classifier's is cfia/training/augment.py): a
    vertical flip; a horizontal flip for interior crops only (edge crops keep the chest wall
    on the left); gamma and contrast about the mean; extra white noise sometimes."""
    x = crop
    if rng.random() < 0.5:
        x = x[::-1]
    if not is_edge and rng.random() < 0.5:
        x = x[:, ::-1]
    x = np.clip(x, 0, 1) ** rng.uniform(*gamma)
    m = x.mean()
    x = (x - m) * rng.uniform(*contrast) + m
    if rng.random() < noise_prob:
        x = x + rng.normal(0, rng.uniform(0, noise_sigma), x.shape)
    return np.clip(x, 0, 1).astype(np.float32)


def add_texture(crop: np.ndarray, rng: np.random.Generator, amplitude: tuple[float, float]) -> np.ndarray:
    """Extra tissue texture inside the breast (pixels > 0.02) of one crop: the classifier
    augmentation's field (a power-law field or glandular islands), its s.d. `amplitude`
    (a range) x the crop's breast pixel s.d. The phantom's texture is one kind among many;
    an inpainter that saw only it fills foreign tissue with its own (docs/models.md,
    "Texture augmentation for the inpainter")."""
    import torch

    from .augment import texture_field

    breast = crop > 0.02
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    amp = rng.uniform(*amplitude)
    if breast.sum() < 16:
        return crop
    field = texture_field(*crop.shape, gen).numpy()
    field = (field - field[breast].mean()) / max(float(field[breast].std()), 1e-6)
    out = np.where(breast, crop + amp * float(crop[breast].std()) * field, crop)
    return np.clip(out, 0, 1).astype(np.float32)
