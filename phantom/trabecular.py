"""A third phantom generator, on other models than the first two, held out from all training.

The breast's outline is an ellipse with a few Fourier harmonics (an axillary tail in MLO);
its fibroglandular tissue is one irregular dense region with soft, scalloped edges and fat
lobules inside it, crossed by trabecular strands that converge on the nipple; Cooper's
ligaments arc through the subcutaneous fat. Its detector counts photons (Poisson noise)
and "processes" the image as vendors do for presentation: peripheral equalisation
(the thin edge brought up to the interior's level) and unsharp masking. Lesions: any of
the seven kinds (default all). It exists to test models trained on the first two
generators on a third they have never seen (docs/models.md, "A third generator").
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from .anatomy import Anatomy, depth_below_skin
from .lesions import ALL_KINDS
from .mammogram import Mammogram, add_lesions, as_displayed, contrast_unit


def synthesize(shape, rng, laterality, view, n_lesions, spacing_mm, bits_stored=12, for_processing=False,
               lesion_kinds=ALL_KINDS, lesion_gain=1.0) -> Mammogram:
    """The same interface as mammogram.synthesize; lesion_gain 0 draws the image without lesions."""
    breast, depth_mm, nipple = _outline(shape, view, spacing_mm, rng)
    # Compressed thickness: flat inside, falling off over the outer 6-15 mm.
    thickness = (np.clip(depth_mm / rng.uniform(6.0, 15.0), 0.0, 1.0) ** rng.uniform(0.4, 0.8)) * breast
    dense = _dense_region(breast, depth_mm, nipple, spacing_mm, rng)
    strands = _strands(breast.shape, nipple, spacing_mm, rng)
    tissue = dense * (rng.uniform(0.3, 0.6) + rng.uniform(0.03, 0.08) * strands)
    tissue += rng.uniform(0.008, 0.02) * strands + _ligaments(breast, depth_mm, spacing_mm, rng)
    skin = ndimage.gaussian_filter((breast & (depth_mm < rng.uniform(1.0, 2.5))).astype(np.float32), 0.8)
    pectoral = _pectoral(breast, spacing_mm, rng) if view == "MLO" else np.zeros(shape, np.float32)
    attenuation = thickness * (1.0 + tissue) + rng.uniform(0.1, 0.3) * skin + pectoral
    anatomy = Anatomy(breast, thickness, skin, pectoral, depth_mm, nipple)  # where lesions may go
    tissue_std = contrast_unit(thickness * tissue, depth_mm)
    mask, lesions, _ = add_lesions(attenuation, anatomy, n_lesions, lesion_kinds, tissue_std, spacing_mm, rng,
                                   lesion_gain)
    pixels = _detector(attenuation, breast, spacing_mm, bits_stored, for_processing, rng)
    return as_displayed(Mammogram(pixels, mask, breast, laterality, view, spacing_mm, lesions, beta=0.0))


def _outline(shape, view, spacing_mm, rng):
    """(breast, depth below the skin in mm, nipple): an ellipse centred on the chest wall
    (column 0) with harmonics on its radius; MLO adds an axillary tail up to the top edge."""
    rows, cols = shape
    r0 = rows * (rng.uniform(0.45, 0.55) if view == "CC" else rng.uniform(0.5, 0.62))
    a, b = cols * rng.uniform(0.55, 0.85), rows * rng.uniform(0.34, 0.46)  # half-axes: depth, height
    r = np.arange(rows, dtype=np.float32)[:, None] - r0
    c = np.arange(cols, dtype=np.float32)[None, :]
    phi = np.arctan2(r, c)
    radius = a * b / np.sqrt((b * np.cos(phi)) ** 2 + (a * np.sin(phi)) ** 2)
    for k in range(2, 6):
        radius *= 1.0 + rng.uniform(0.0, 0.04 / k * 2) * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    breast = np.hypot(r, c) < radius
    if view == "MLO":  # the axillary tail: a wedge along the chest wall to the top edge
        top = cols * rng.uniform(0.2, 0.35)
        breast |= (r < 0) & (c < top * (1.0 + 0.5 * r / max(r0, 1.0)))
    depth = depth_below_skin(breast)
    row = int(np.clip(r0, 0, rows - 1))
    nipple = (row, int(max(np.flatnonzero(breast[row]).max(initial=0), 0)))
    return breast, depth.astype(np.float32) * spacing_mm, nipple


def _dense_region(breast, depth_mm, nipple, spacing_mm, rng):
    """Fibroglandular density in [0, 1]: one irregular region behind the nipple, soft scalloped
    edges (a threshold of smooth noise through a sigmoid), fat lobules punched out inside."""
    rows, cols = breast.shape
    nr, nc = nipple
    r = (np.arange(rows, dtype=np.float32)[:, None] - nr) / (rows * rng.uniform(0.18, 0.32))
    c = (np.arange(cols, dtype=np.float32)[None, :] - nc * rng.uniform(0.35, 0.6)) / max(nc * rng.uniform(0.3, 0.5), 1)
    envelope = np.exp(-0.5 * (r ** 2 + c ** 2)) * np.clip(depth_mm / 8.0, 0.0, 1.0)
    lumpy = ndimage.gaussian_filter(rng.standard_normal(breast.shape).astype(np.float32), rng.uniform(3.0, 8.0) / spacing_mm)
    lumpy /= max(float(lumpy.std()), 1e-6)
    level = rng.uniform(0.15, 0.7)  # breast density: fatty to dense
    edge = rng.uniform(0.08, 0.2)
    dense = 1.0 / (1.0 + np.exp(-(envelope - (1.0 - level) + 0.25 * lumpy * envelope) / edge))
    fat = np.zeros(breast.shape, np.float32)
    inside = np.flatnonzero(dense > 0.5)
    n = int(inside.size * spacing_mm ** 2 / rng.uniform(150.0, 400.0)) if inside.size else 0
    for idx in rng.choice(inside, n) if n else ():
        y, x = np.unravel_index(idx, breast.shape)
        ax = (rng.uniform(0.8, 2.5) / spacing_mm, rng.uniform(0.8, 2.5) / spacing_mm)
        cv2.ellipse(fat, (int(x), int(y)), (max(int(ax[0]), 1), max(int(ax[1]), 1)), rng.uniform(0, 180), 0, 360,
                    1.0, -1, cv2.LINE_AA)
    fat = ndimage.gaussian_filter(fat, 0.4 / spacing_mm)
    return (dense * (1.0 - rng.uniform(0.4, 0.8) * np.clip(fat, 0, 1)) * breast).astype(np.float32)


def _strands(shape, nipple, spacing_mm, rng):
    """Zero-mean trabecular strands converging on the nipple: noise smoothed long along the
    radius and short across it, in polar coordinates about the nipple, at two scales."""
    rows, cols = shape
    nr, nc = nipple
    y = np.arange(rows, dtype=np.float32)[:, None] - nr
    x = np.arange(cols, dtype=np.float32)[None, :] - nc
    rho, theta = np.hypot(y, x), np.arctan2(y, -x)  # theta 0: toward the chest wall
    ref = 0.5 * cols  # the radius at which a strand's width is as drawn (wider further out)
    out = np.zeros(shape, np.float32)
    for length_mm, width_mm, weight in ((rng.uniform(3, 8), rng.uniform(0.3, 0.7), 0.6),
                                        (rng.uniform(10, 25), rng.uniform(1.2, 2.5), 1.0)):
        step_r, step_t = length_mm / spacing_mm / 4, width_mm / spacing_mm / 2  # polar grid, pixels
        grid = rng.standard_normal((int(rho.max() / step_r) + 3, int(2 * np.pi * ref / step_t) + 3)).astype(np.float32)
        grid = ndimage.gaussian_filter(grid, (4.0, 2.0), mode="wrap")
        map_r = (rho / step_r).astype(np.float32)
        map_t = ((theta + np.pi) * ref / step_t).astype(np.float32)
        part = cv2.remap(grid, map_t, map_r, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        out += weight * part / max(float(part.std()), 1e-6)
    return out / np.sqrt(1.0 + 0.6 ** 2)


def _ligaments(breast, depth_mm, spacing_mm, rng):
    """Cooper's ligaments: thin bright arcs in the subcutaneous fat, 3-15 mm below the skin."""
    arcs = np.zeros(breast.shape, np.float32)
    band = np.flatnonzero(breast & (depth_mm > 3) & (depth_mm < 15))
    for idx in rng.choice(band, int(rng.integers(8, 25))) if band.size else ():
        y, x = np.unravel_index(idx, breast.shape)
        size = int(rng.uniform(4, 12) / spacing_mm)
        start = rng.uniform(0, 360)
        cv2.ellipse(arcs, (int(x), int(y)), (size, max(size // 3, 1)), rng.uniform(0, 180), start,
                    start + rng.uniform(60, 150), 1.0, max(int(0.3 / spacing_mm), 1), cv2.LINE_AA)
    return rng.uniform(0.05, 0.12) * ndimage.gaussian_filter(arcs, 0.25 / spacing_mm) * breast


def _pectoral(breast, spacing_mm, rng):
    """The muscle in the upper chest-wall corner, a straight edge, fibres along it."""
    rows, cols = breast.shape
    h, w = rows * rng.uniform(0.3, 0.55), cols * rng.uniform(0.15, 0.35)
    r = np.arange(rows, dtype=np.float32)[:, None]
    c = np.arange(cols, dtype=np.float32)[None, :]
    inside = ((c / w + r / h) < 1.0) & breast
    fibres = ndimage.gaussian_filter(rng.standard_normal(breast.shape).astype(np.float32),
                                     (3.0 / spacing_mm, 0.5 / spacing_mm))
    fibres /= max(float(fibres.std()), 1e-6)
    muscle = ndimage.gaussian_filter(inside.astype(np.float32), 0.6 / spacing_mm)
    return (rng.uniform(0.25, 0.5) + 0.03 * fibres) * muscle


def _detector(attenuation, breast, spacing_mm, bits_stored, for_processing, rng):
    """Photon counts (Poisson) -> raw values, or, for presentation, a processed log image:
    peripheral equalisation, unsharp masking, a window and a gamma."""
    maxval = (1 << bits_stored) - 1
    exposure = np.exp(-rng.uniform(0.9, 1.4) * ndimage.gaussian_filter(attenuation, rng.uniform(0.4, 0.9)))
    photons = rng.uniform(2e3, 2e4)
    exposure = np.maximum(rng.poisson(exposure * photons).astype(np.float32), 1.0) / photons
    if for_processing:  # raw: linear in exposure, air brightest
        return np.clip(np.round((rng.uniform(0.02, 0.06) + rng.uniform(0.75, 0.9) * exposure / exposure.max())
                                * maxval), 0, maxval).astype(np.uint16)
    log_e = -np.log(exposure)
    weight = ndimage.gaussian_filter(breast.astype(np.float32), 8.0 / spacing_mm)
    low = ndimage.gaussian_filter(log_e * breast, 8.0 / spacing_mm) / np.maximum(weight, 1e-3)
    lift = rng.uniform(0.4, 0.8) * np.maximum(np.percentile(low[breast], 90) - low, 0.0) * breast
    v = log_e + ndimage.gaussian_filter(lift, 1.0 / spacing_mm)
    sharp = rng.uniform(2.0, 6.0) / spacing_mm
    v = v + rng.uniform(0.3, 1.2) * (v - ndimage.gaussian_filter(v, sharp))
    lo, hi = np.percentile(v[breast], [0.5, 99.7])
    z = np.clip((v - lo) / max(hi - lo, 1e-6), 0.0, 1.0) ** rng.uniform(0.6, 1.2)
    values = rng.uniform(0.01, 0.04) + rng.uniform(0.85, 0.95) * z
    return np.clip(np.round(values * maxval), 0, maxval).astype(np.uint16)
