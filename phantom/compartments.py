"""A second phantom generator, built on other models than mammogram.py's.

The breast's texture is Bakic-style adipose compartments (fat lobules framed by bright
fibrous septa, glandular compartments filled in, vessels across), not a power-law field;
its lesions are lobulated and ill-defined masses, architectural distortions and linear
calcifications, not the first generator's circumscribed and spiculated masses and round
clusters; its detector has a heel effect, correlated noise and an S-shaped display curve.
It shares only the Mammogram record and the DICOM writer with the first generator. It
exists to measure models trained on the first generator on mammograms they have never
seen (docs/models.md, "A second generator"); the shipped models never saw it.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .anatomy import Anatomy, depth_below_skin
from .lesions_second import KINDS
from .mammogram import Mammogram, add_lesions, as_displayed, contrast_unit


def synthesize(
    shape: tuple[int, int],
    rng: np.random.Generator,
    laterality: str,
    view: str,
    n_lesions: int,
    spacing_mm: float,
    bits_stored: int = 12,
    for_processing: bool = False,
    lesion_kinds: tuple[str, ...] = KINDS,
    lesion_gain: float = 1.0,
) -> Mammogram:
    """The same interface as mammogram.synthesize; lesion_gain 0 draws the image without lesions."""
    breast, depth_mm, nipple = _outline(shape, view, spacing_mm, rng)
    thickness = np.sqrt(np.clip(depth_mm / rng.uniform(10.0, 20.0), 0.0, 1.0)) * breast
    texture = _compartments(breast, depth_mm, nipple, spacing_mm, rng) + _vessels(breast, nipple, spacing_mm, rng)
    tissue = rng.uniform(0.35, 0.7) * texture
    skin = ndimage.gaussian_filter((breast & (depth_mm < rng.uniform(1.5, 3.0))).astype(np.float32), 0.7)
    pectoral = _pectoral(breast, spacing_mm, rng) if view == "MLO" else np.zeros(shape, np.float32)
    attenuation = thickness * (1.0 + tissue) + rng.uniform(0.15, 0.35) * skin + pectoral
    anatomy = Anatomy(breast, thickness, skin, pectoral, depth_mm, nipple)  # where lesions may go
    tissue_std = contrast_unit(thickness * tissue, depth_mm)
    mask, lesions, _ = add_lesions(attenuation, anatomy, n_lesions, lesion_kinds, tissue_std, spacing_mm, rng,
                                   lesion_gain)
    pixels = _detector(attenuation, breast, bits_stored, for_processing, rng)
    return as_displayed(Mammogram(pixels, mask, breast, laterality, view, spacing_mm, lesions, beta=0.0))


def _outline(shape, view, spacing_mm, rng):
    """(breast, depth below the skin in mm, nipple): a superellipse, chest wall at column 0."""
    rows, cols = shape
    r = np.arange(rows, dtype=np.float32)[:, None]
    c = np.arange(cols, dtype=np.float32)[None, :]
    nipple_row = rows * (rng.uniform(0.42, 0.58) if view == "CC" else rng.uniform(0.55, 0.68))
    up = rows * (rng.uniform(0.35, 0.45) if view == "CC" else rng.uniform(0.6, 0.8))  # MLO leaves the top
    down = rows * rng.uniform(0.33, 0.45)
    p = rng.uniform(1.6, 3.0)  # rounder or squarer breasts
    u = np.clip(np.where(r < nipple_row, (nipple_row - r) / up, (r - nipple_row) / down), 0.0, 1.0)
    extent = cols * rng.uniform(0.5, 0.82) * (1.0 - u ** p) ** (1.0 / p)
    breast = (c < extent) & (u < 1.0)
    depth_px = depth_below_skin(breast)
    nipple = (int(nipple_row), int(max(extent[int(nipple_row), 0] - 1, 0)))
    return breast, (depth_px * spacing_mm).astype(np.float32), nipple


def _compartments(breast, depth_mm, nipple, spacing_mm, rng):
    """Voronoi compartments on a warped grid: fat (dark) or glandular (bright) cells,
    fibrous septa (thin bright lines) between them."""
    rows = breast.shape[0]
    inside = np.flatnonzero(breast)
    cell_mm = rng.uniform(4.0, 10.0)
    n = max(int(inside.size * spacing_mm ** 2 / cell_mm ** 2), 8)
    seeds = np.column_stack(np.unravel_index(rng.choice(inside, n), breast.shape)).astype(np.float32)
    stretch = np.array([1.0, rng.uniform(1.0, 1.6)], np.float32)  # cells long toward the nipple
    pixels = np.column_stack(np.unravel_index(inside, breast.shape)).astype(np.float32)
    pixels += _warp(breast.shape, 0.2 * cell_mm / spacing_mm, rng).reshape(-1, 2)[inside]  # rounded cells
    dist, idx = cKDTree(seeds / stretch).query(pixels / stretch, k=2)
    # Glandular cells cluster behind the nipple and thin out under the skin.
    nr, nc = nipple
    sy, sx = rows * rng.uniform(0.15, 0.3), max(nc, 1) * rng.uniform(0.3, 0.6)
    envelope = np.exp(-0.5 * (((seeds[:, 0] - nr) / sy) ** 2 + ((seeds[:, 1] - nc * 0.45) / sx) ** 2))
    envelope *= np.clip(depth_mm[seeds[:, 0].astype(int), seeds[:, 1].astype(int)] / 10.0, 0.0, 1.0)
    gland = rng.random(n) < rng.uniform(0.2, 1.0) * envelope
    level = np.where(gland, rng.uniform(0.5, 0.9, n), rng.uniform(0.0, 0.06, n))[idx[:, 0]]
    septum = max(rng.uniform(0.15, 0.35) / spacing_mm, 0.5)
    septa = np.exp(-0.5 * ((dist[:, 1] - dist[:, 0]) / septum) ** 2)
    fine = ndimage.gaussian_filter(rng.standard_normal(breast.shape).astype(np.float32), max(0.4 / spacing_mm, 0.6))
    fine *= rng.uniform(0.05, 0.12) / max(float(fine.std()), 1e-6)
    out = np.zeros(breast.shape, np.float32)
    out.flat[inside] = level + rng.uniform(0.15, 0.35) * septa + fine.flat[inside] * (level > 0.3)
    return ndimage.gaussian_filter(out, rng.uniform(0.2, 0.5) / spacing_mm) * breast


def _warp(shape, amplitude, rng):
    """A smooth random displacement field (rows, cols, 2) of about `amplitude` pixels."""
    field = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), amplitude * 2)
                      for _ in range(2)], axis=-1)
    return field * amplitude / max(float(field.std()), 1e-6)


def _vessels(breast, nipple, spacing_mm, rng):
    """1-3 smooth tubes running from the chest wall across the breast."""
    rows, cols = breast.shape
    out = np.zeros(breast.shape, np.float32)
    for _ in range(rng.integers(1, 4)):
        r, c, angle = rng.uniform(0.2, 0.8) * rows, 0.0, rng.uniform(-0.4, 0.4)
        points = []
        for _ in range(40):
            points.append((c, r))
            angle += rng.normal(0, 0.12)
            r, c = r + np.sin(angle) * cols / 40, c + np.cos(angle) * cols / 40
        width = max(int(round(rng.uniform(1.0, 2.5) / spacing_mm)), 1)
        tube = np.zeros_like(out)
        cv2.polylines(tube, [np.round(points).astype(np.int32)], False, 1.0, thickness=width, lineType=cv2.LINE_AA)
        out = np.maximum(out, rng.uniform(0.15, 0.35) * ndimage.gaussian_filter(tube, width / 2))
    return out * breast


def _pectoral(breast, spacing_mm, rng):
    """The muscle in the upper chest-wall corner, edge slightly convex or concave."""
    rows, cols = breast.shape
    r = np.arange(rows, dtype=np.float32)[:, None] / (rows * rng.uniform(0.35, 0.6))
    c = np.arange(cols, dtype=np.float32)[None, :] / (cols * rng.uniform(0.2, 0.4))
    inside = (c < 1.0 - np.clip(r, 0, 1) ** rng.uniform(0.8, 1.5)) & (r < 1.0) & breast
    return rng.uniform(0.2, 0.45) * ndimage.gaussian_filter(inside.astype(np.float32), 1.0 / spacing_mm)


def _detector(attenuation, breast, bits_stored, for_processing, rng):
    """Exposure with a heel effect and correlated quantum noise -> stored values."""
    rows = attenuation.shape[0]
    maxval = (1 << bits_stored) - 1
    heel = 1.0 + rng.uniform(-0.12, 0.12) * np.linspace(-1.0, 1.0, rows, dtype=np.float32)[:, None]
    exposure = heel * np.exp(-rng.uniform(1.0, 1.6) * ndimage.gaussian_filter(attenuation, rng.uniform(0.5, 1.0)))
    white = ndimage.gaussian_filter(rng.standard_normal(attenuation.shape).astype(np.float32), 0.7)
    exposure = np.clip(exposure + rng.uniform(0.003, 0.008) * np.sqrt(exposure) * white / white.std(), 1e-4, None)
    if for_processing:  # raw: linear in exposure, air brightest
        values = rng.uniform(0.02, 0.06) + rng.uniform(0.75, 0.9) * exposure / exposure.max()
    else:  # an S-shaped display curve centred on the breast: dense tissue bright, air dark
        log_e = -np.log(exposure)
        lo, hi = np.percentile(log_e[breast], [1, 99])
        z = (log_e - (lo + hi) / 2) / max((hi - lo) / rng.uniform(3.0, 5.0), 1e-6)
        values = rng.uniform(0.01, 0.05) + rng.uniform(0.8, 0.92) / (1.0 + np.exp(-z))
    return np.clip(np.round(values * maxval), 0, maxval).astype(np.uint16)
