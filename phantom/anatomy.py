"""Breast outline, compressed-breast thickness, skin line and pectoral muscle.

Geometry is built in a canonical orientation, chest wall at column 0 and nipple
toward the right (a left breast as displayed); `compose` mirrors right breasts.
All lengths are in millimetres and converted with the pixel spacing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .texture import power_law_noise


@dataclass
class Anatomy:
    breast: np.ndarray       # bool, inside the skin line
    thickness: np.ndarray    # float, 0..1 relative compressed thickness
    skin: np.ndarray         # float, 0..1 skin-line weight
    pectoral: np.ndarray     # float, 0..1 projected pectoral thickness (MLO only)
    depth_mm: np.ndarray     # float, distance to the skin line in mm (0 outside)
    nipple: tuple[int, int]  # (row, col) of the nipple


def depth_below_skin(breast: np.ndarray) -> np.ndarray:
    """Distance to the skin line in pixels (canonical frame). The chest wall (column 0) and the
    image's edges are not skin: depth is measured as if the breast went on beyond them."""
    cols = breast.shape[1]
    return ndimage.distance_transform_edt(np.pad(breast, ((0, 0), (cols, 0)), mode="edge"))[:, cols:]


def breast_anatomy(shape: tuple[int, int], view: str, spacing_mm: float, rng: np.random.Generator) -> Anatomy:
    rows, cols = shape
    r = np.arange(rows, dtype=np.float32)[:, None]
    c = np.arange(cols, dtype=np.float32)[None, :]
    if view == "CC":
        centre = rows * rng.uniform(0.45, 0.55)
        half_height = rows * rng.uniform(0.36, 0.46)
    else:  # MLO: taller, shifted up so the axillary tail leaves the top edge
        centre = rows * rng.uniform(0.42, 0.52)
        half_height = rows * rng.uniform(0.52, 0.62)
    depth = cols * rng.uniform(0.55, 0.8)
    # Irregular outline: low-frequency modulation of the radius along the boundary.
    wobble = 1.0 + 0.04 * ndimage.zoom(rng.standard_normal(8), rows / 8, order=3)[:rows, None]
    u = np.clip((r - centre) / half_height, -1.0, 1.0)
    extent = depth * wobble * np.sqrt(np.clip(1.0 - np.abs(u) ** 2.2, 0.0, 1.0))
    breast = (c < extent) & (np.abs(r - centre) < half_height)
    breast = ndimage.binary_opening(breast, iterations=2)
    depth_mm = (depth_below_skin(breast) * spacing_mm).astype(np.float32)

    # Compressed breast: flat in the middle, rounded within edge_mm of the skin.
    edge_mm = rng.uniform(8.0, 16.0)
    s = np.clip(depth_mm / edge_mm, 0.0, 1.0)
    thickness = np.sqrt(np.clip(1.0 - (1.0 - s) ** 2, 0.0, 1.0)) * breast
    skin_mm = rng.uniform(1.0, 2.0)
    skin = (breast & (depth_mm < skin_mm)).astype(np.float32)
    skin = ndimage.gaussian_filter(skin, 0.6)

    pectoral = np.zeros(shape, np.float32)
    if view == "MLO":
        pectoral = _pectoral(shape, breast, rng)
    nipple_row = int(np.clip(centre, 0, rows - 1))
    nipple_col = int(np.clip(np.argmax(~breast[nipple_row]) - 1, 0, cols - 1)) if (~breast[nipple_row]).any() else cols - 1
    return Anatomy(breast, thickness.astype(np.float32), skin, pectoral, depth_mm, (nipple_row, nipple_col))


def _pectoral(shape: tuple[int, int], breast: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Triangle-like muscle in the upper chest-wall corner with a slightly curved edge."""
    rows, cols = shape
    top_width = cols * rng.uniform(0.15, 0.3)
    left_height = rows * rng.uniform(0.4, 0.7)
    r = np.arange(rows, dtype=np.float32)[:, None]
    c = np.arange(cols, dtype=np.float32)[None, :]
    bow = rng.uniform(-0.08, 0.12)
    frac = r / left_height
    edge = top_width * (1.0 - frac) * (1.0 + bow * np.sin(np.pi * np.clip(frac, 0, 1)))
    inside = (c < edge) & breast
    # Projected thickness grows toward the chest wall.
    t = np.clip((edge - c) / np.maximum(edge, 1.0), 0.0, 1.0) * inside
    return ndimage.gaussian_filter(np.sqrt(t).astype(np.float32), 1.5)


def gland_envelope(anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Where glandular tissue sits: behind the nipple, thinning to fat under the skin."""
    shape = anatomy.breast.shape
    nr, nc = anatomy.nipple
    r = np.arange(shape[0], dtype=np.float32)[:, None]
    c = np.arange(shape[1], dtype=np.float32)[None, :]
    sy = shape[0] * rng.uniform(0.18, 0.3)
    sx = max(nc, 1) * rng.uniform(0.45, 0.7)
    cx = nc * rng.uniform(0.35, 0.55)
    env = np.exp(-0.5 * (((r - nr) / sy) ** 2 + ((c - cx) / sx) ** 2))
    # A little low-frequency irregularity so the dense region is not an ellipse.
    env *= 1.0 + 0.35 * ndimage.gaussian_filter(power_law_noise(shape, 3.0, rng), 4)
    fat_margin = np.clip(anatomy.depth_mm / rng.uniform(6.0, 14.0), 0.0, 1.0)
    return np.clip(env, 0.0, 1.5).astype(np.float32) * fat_margin * anatomy.breast
