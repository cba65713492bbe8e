"""Lesion models: circumscribed masses, spiculated masses, microcalcification clusters.

Each model returns (profile, mask) on a local patch: profile is the added projected
attenuation with peak 1 (scaled by the caller's contrast), mask the ground-truth
lesion pixels. Sizes are drawn in millimetres so they scale with the pixel spacing.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from . import lesions_second

LESION_KINDS = ("circumscribed", "spiculated", "calcifications")


def _grid(radius_px: int):
    ax = np.arange(-radius_px, radius_px + 1, dtype=np.float32)
    return ax[:, None], ax[None, :]


def _irregular_radius(theta: np.ndarray, r0: float, rng: np.random.Generator, roughness: float) -> np.ndarray:
    """A smooth star-shaped boundary: r0 times 1 + a few random low harmonics."""
    out = np.ones_like(theta)
    for k in range(2, 6):
        out += roughness / k * rng.standard_normal() * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return r0 * np.clip(out, 0.6, 1.4)


def circumscribed_mass(spacing_mm: float, rng: np.random.Generator):
    diameter_mm = rng.uniform(6.0, 22.0)
    r0 = max(diameter_mm / 2 / spacing_mm, 3.0)
    half = int(np.ceil(r0 * 1.5)) + 2
    y, x = _grid(half)
    aspect = rng.uniform(0.7, 1.0)
    angle = rng.uniform(0, np.pi)
    yr = (y * np.cos(angle) - x * np.sin(angle)) / aspect
    xr = y * np.sin(angle) + x * np.cos(angle)
    rho = np.hypot(yr, xr)
    radius = _irregular_radius(np.arctan2(yr, xr), r0, rng, roughness=rng.uniform(0.05, 0.25))
    # Projected sphere-like thickness, with a soft (partly obscured) margin.
    t = np.clip(1.0 - (rho / radius) ** 2, 0.0, 1.0)
    profile = np.sqrt(t)
    blur = rng.uniform(0.5, 2.5) * max(1.0, 0.4 / spacing_mm)
    profile = ndimage.gaussian_filter(profile, blur)
    return profile / profile.max(), rho <= radius


def spiculated_mass(spacing_mm: float, rng: np.random.Generator):
    diameter_mm = rng.uniform(5.0, 16.0)
    r0 = max(diameter_mm / 2 / spacing_mm, 3.0)
    n_spic = rng.integers(8, 24)
    lengths = r0 * rng.uniform(1.3, 2.8, n_spic)
    half = int(np.ceil(lengths.max())) + 4
    y, x = _grid(half)
    rho = np.hypot(y, x)
    radius = _irregular_radius(np.arctan2(y, x), r0, rng, roughness=0.35)
    core = np.sqrt(np.clip(1.0 - (rho / radius) ** 2, 0.0, 1.0))
    spikes = np.zeros_like(core)
    width_px = max(1, int(round(rng.uniform(0.3, 0.8) / spacing_mm)))
    for theta, length in zip(rng.uniform(0, 2 * np.pi, n_spic), lengths):
        end = (int(round(half + length * np.cos(theta))), int(round(half + length * np.sin(theta))))
        line = np.zeros_like(core)
        cv2.line(line, (half, half), end, 1.0, thickness=width_px, lineType=cv2.LINE_AA)
        # Spicules fade with distance from the core.
        spikes = np.maximum(spikes, line * np.clip(1.2 - rho / length, 0.0, 1.0))
    profile = np.maximum(core, rng.uniform(0.35, 0.7) * spikes)
    profile = ndimage.gaussian_filter(profile, max(0.6, 0.2 / spacing_mm))
    mask = (rho <= radius) | (spikes > 0.25)
    return profile / profile.max(), mask


def calcification_cluster(spacing_mm: float, rng: np.random.Generator):
    cluster_mm = rng.uniform(4.0, 12.0)
    cr = cluster_mm / 2 / spacing_mm
    n = rng.integers(6, 26)
    half = int(np.ceil(cr * 1.3)) + 6
    profile = np.zeros((2 * half + 1,) * 2, np.float32)
    pts = rng.normal(0, cr / 2, (n, 2)).clip(-cr, cr)
    for (py, px) in pts:
        rad = max(rng.uniform(0.15, 0.5) / spacing_mm, 0.8)
        amp = rng.uniform(0.5, 1.0)
        cv2.circle(profile, (int(round(half + px)), int(round(half + py))), int(round(rad)), amp, -1, cv2.LINE_AA)
    profile = ndimage.gaussian_filter(profile, 0.6)
    # Ground truth for a cluster: the convex hull of its calcifications, grown by 1 mm.
    hull = cv2.convexHull((pts[:, ::-1] + half).astype(np.float32))
    mask = np.zeros(profile.shape, np.uint8)
    cv2.fillConvexPoly(mask, hull.astype(np.int32), 1)
    mask = ndimage.binary_dilation(mask.astype(bool), iterations=max(1, int(round(1.0 / spacing_mm))))
    return profile / max(profile.max(), 1e-6), mask


MODELS = {
    "circumscribed": circumscribed_mass,
    "spiculated": spiculated_mass,
    "calcifications": calcification_cluster,
}

# Every kind any generator can draw (the second generator's: lesions_second.py), and
# its contrast range in units of the breast's tissue s.d.
ALL_MODELS = {**MODELS, **lesions_second.MODELS}
ALL_KINDS = tuple(ALL_MODELS)
CONTRAST = {"circumscribed": (0.8, 2.5), "spiculated": (0.8, 2.5), "calcifications": (2.5, 6.0),
            **lesions_second.CONTRAST}
