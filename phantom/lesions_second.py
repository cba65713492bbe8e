"""The second generator's lesion models: lobulated and ill-defined masses, architectural
distortions, linear (segmental) calcifications.

As in lesions.py, each returns (profile, mask) on a local patch: profile the added
projected attenuation with peak 1, mask the ground-truth lesion pixels; sizes in mm.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

KINDS = ("lobulated", "ill-defined", "distortion", "linear-calcifications")
# Each kind's contrast range, in units of the breast's tissue s.d.
CONTRAST = {"lobulated": (0.6, 1.8), "ill-defined": (0.8, 2.2), "distortion": (1.0, 2.5),
            "linear-calcifications": (2.0, 5.0)}


def _grid(half):
    ax = np.arange(-half, half + 1, dtype=np.float32)
    return ax[:, None], ax[None, :]


def _ellipse_rho(y, x, cy, cx, ry, rx, angle):
    yr = (y - cy) * np.cos(angle) - (x - cx) * np.sin(angle)
    xr = (y - cy) * np.sin(angle) + (x - cx) * np.cos(angle)
    return np.hypot(yr / ry, xr / rx)


def lobulated_mass(spacing_mm, rng):
    """2-4 overlapping ellipsoids: a mass with a lobulated outline."""
    r = rng.uniform(3.0, 8.0) / spacing_mm
    half = int(np.ceil(2.2 * r)) + 3
    y, x = _grid(half)
    profile = np.zeros(y.shape[0:1] + x.shape[1:], np.float32)
    for _ in range(rng.integers(2, 5)):
        cy, cx = rng.uniform(-0.6, 0.6, 2) * r
        rho = _ellipse_rho(y, x, cy, cx, r * rng.uniform(0.5, 0.9), r * rng.uniform(0.5, 0.9), rng.uniform(0, np.pi))
        profile = np.maximum(profile, np.sqrt(np.clip(1.0 - rho ** 2, 0.0, 1.0)))
    mask = profile > 0
    profile = ndimage.gaussian_filter(profile, max(rng.uniform(0.2, 0.8) / spacing_mm, 0.5))
    return profile / profile.max(), mask


def ill_defined_mass(spacing_mm, rng):
    """A Gaussian density with a lumpy, indistinct margin; the mask where it is above 0.4."""
    s = rng.uniform(2.5, 6.0) / spacing_mm
    half = int(np.ceil(3 * s)) + 2
    y, x = _grid(half)
    rho = _ellipse_rho(y, x, 0, 0, s, s * rng.uniform(0.6, 1.0), rng.uniform(0, np.pi))
    lumps = ndimage.gaussian_filter(rng.standard_normal(rho.shape).astype(np.float32), s / 3)
    profile = np.exp(-0.5 * rho ** 2) * (1.0 + 0.3 * lumps / max(float(lumps.std()), 1e-6))
    profile = np.clip(profile, 0.0, None) / profile.max()
    return profile, profile > 0.4


def architectural_distortion(spacing_mm, rng):
    """Straight, tapering lines radiating from a point, with a faint centre or none."""
    length = rng.uniform(6.0, 18.0) / spacing_mm
    half = int(np.ceil(length)) + 3
    lines = np.zeros((2 * half + 1,) * 2, np.float32)
    width = max(int(round(rng.uniform(0.2, 0.5) / spacing_mm)), 1)
    for theta in rng.uniform(0, 2 * np.pi, rng.integers(10, 25)):
        reach = length * rng.uniform(0.5, 1.0)
        for t0, t1 in zip(np.linspace(0, 1, 6)[:-1], np.linspace(0, 1, 6)[1:]):  # tapering in 5 pieces
            a = (int(round(half + t0 * reach * np.cos(theta))), int(round(half + t0 * reach * np.sin(theta))))
            b = (int(round(half + t1 * reach * np.cos(theta))), int(round(half + t1 * reach * np.sin(theta))))
            cv2.line(lines, a, b, float(1.0 - t0), thickness=width, lineType=cv2.LINE_AA)
    y, x = _grid(half)
    core = rng.uniform(0.0, 0.4) * np.exp(-0.5 * (np.hypot(y, x) / (rng.uniform(0.8, 2.0) / spacing_mm)) ** 2)
    profile = ndimage.gaussian_filter(np.maximum(lines, core), max(0.2 / spacing_mm, 0.5))
    mask = ndimage.binary_dilation(profile > 0.2 * profile.max(), iterations=max(1, int(round(1.0 / spacing_mm))))
    return profile / profile.max(), mask


def linear_calcifications(spacing_mm, rng):
    """Elongated specks along 1-3 branching lines (a segmental, ductal pattern)."""
    length = rng.uniform(5.0, 15.0) / spacing_mm
    half = int(np.ceil(length)) + 6
    profile = np.zeros((2 * half + 1,) * 2, np.float32)
    centres = []
    for _ in range(rng.integers(1, 4)):
        angle, (py, px) = rng.uniform(0, 2 * np.pi), rng.uniform(-0.3, 0.3, 2) * length
        for _ in range(rng.integers(3, 10)):
            step = length / 10 * rng.uniform(0.6, 1.4)
            py, px = np.clip((py + step * np.sin(angle), px + step * np.cos(angle)), -length, length)
            axes = (max(rng.uniform(0.25, 0.6) / spacing_mm, 1.0), max(rng.uniform(0.1, 0.25) / spacing_mm, 0.6))
            cv2.ellipse(profile, (int(round(half + px)), int(round(half + py))),
                        (int(round(axes[0])), int(round(axes[1]))), float(np.degrees(angle)), 0, 360,
                        float(rng.uniform(0.6, 1.0)), -1, cv2.LINE_AA)
            centres.append((px + half, py + half))
            angle += rng.normal(0, 0.3)
    profile = ndimage.gaussian_filter(profile, 0.6)
    # Ground truth, as for the first generator's clusters: the hull grown by 1 mm.
    hull = cv2.convexHull(np.asarray(centres, np.float32)).astype(np.int32)
    mask = np.zeros(profile.shape, np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    mask = ndimage.binary_dilation(mask.astype(bool) | (profile > 0.1), iterations=max(1, int(round(1.0 / spacing_mm))))
    return profile / max(profile.max(), 1e-6), mask


MODELS = {"lobulated": lobulated_mass, "ill-defined": ill_defined_mass, "distortion": architectural_distortion,
          "linear-calcifications": linear_calcifications}
