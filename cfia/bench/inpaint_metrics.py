"""Inpainting quality on one image: MAE and texture fidelity in the hole, SSIM in its bounding box."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def high_pass(x: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    return x - ndimage.gaussian_filter(x, sigma)


def hole_metrics(out: np.ndarray, orig: np.ndarray, hole: np.ndarray, sigma: float = 2.0) -> dict:
    """out, orig: (H, W) float in [0, 1]; hole: (H, W) bool.

    mae: mean |out - orig| inside the hole. ssim: skimage SSIM (data_range 1, 7x7
    window) over the hole's bounding box grown by 3 px. texture: high-pass energy
    (image minus gaussian_filter(image, sigma)) of out inside the hole over orig's."""
    from skimage.metrics import structural_similarity

    hole = hole.astype(bool)
    rows, cols = np.nonzero(hole)
    r0, r1 = max(rows.min() - 3, 0), min(rows.max() + 4, hole.shape[0])
    c0, c1 = max(cols.min() - 3, 0), min(cols.max() + 4, hole.shape[1])
    a, b = out[r0:r1, c0:c1].astype(np.float64), orig[r0:r1, c0:c1].astype(np.float64)
    win = min(7, (min(a.shape) // 2) * 2 - 1) if min(a.shape) < 7 else 7
    ssim = structural_similarity(a, b, data_range=1.0, win_size=max(win, 3))
    e_out = float((high_pass(out.astype(np.float64), sigma)[hole] ** 2).mean())
    e_orig = float((high_pass(orig.astype(np.float64), sigma)[hole] ** 2).mean())
    return {"mae": float(np.abs(out - orig)[hole].mean()), "ssim": float(ssim),
            "texture": e_out / max(e_orig, 1e-12)}


def summarise(rows: list[dict]) -> dict:
    """Mean of each metric over images."""
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}
