"""Fibroglandular texture: power-law noise and clustered lumpy backgrounds.

Mammographic parenchyma has a power spectrum P(f) ~ 1/f^beta with beta about 3
(2.5-3.5 measured; Burgess 2003, Chen et al. 2012). Clustered lumpy backgrounds
(Bochud et al. 1999) add the blob-like structure of glandular lobules.
"""
from __future__ import annotations

import numpy as np


def power_law_noise(shape: tuple[int, int], beta: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-variance noise with radial power spectrum ~ 1/f^beta."""
    rows, cols = shape
    fy = np.fft.fftfreq(rows)[:, None]
    fx = np.fft.rfftfreq(cols)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0  # the DC term is zeroed below; avoid dividing by zero
    amplitude = f ** (-beta / 2.0)
    amplitude[0, 0] = 0.0
    spectrum = (rng.standard_normal(amplitude.shape) + 1j * rng.standard_normal(amplitude.shape)) * amplitude
    field = np.fft.irfft2(spectrum, s=shape)
    return ((field - field.mean()) / (field.std() + 1e-12)).astype(np.float32)


def clustered_lumpy(
    shape: tuple[int, int],
    rng: np.random.Generator,
    n_clusters: int,
    lumps_per_cluster: int,
    cluster_radius: float,
    lump_radius: float,
) -> np.ndarray:
    """Bochud-style clustered lumpy background, normalised to unit variance.

    Cluster centres are uniform; lumps scatter around each centre with a Gaussian
    spread; each lump is an elongated Gaussian with a random orientation. The sum is
    rendered by splatting lump centres into an image and convolving per orientation
    bin in the Fourier domain, so cost does not grow with the number of lumps.
    """
    rows, cols = shape
    n_orient = 4
    acc = np.zeros(shape, np.float32)
    centres = rng.uniform((0, 0), (rows, cols), size=(n_clusters, 2))
    fy = np.fft.fftfreq(rows)[:, None]
    fx = np.fft.rfftfreq(cols)[None, :]
    for k in range(n_orient):
        theta = np.pi * k / n_orient
        splat = np.zeros(shape, np.float32)
        pts = centres[:, None, :] + rng.normal(0, cluster_radius, (n_clusters, lumps_per_cluster, 2))
        pts = pts.reshape(-1, 2)
        keep = (pts[:, 0] >= 0) & (pts[:, 0] < rows) & (pts[:, 1] >= 0) & (pts[:, 1] < cols)
        pts = pts[keep].astype(int)
        np.add.at(splat, (pts[:, 0], pts[:, 1]), 1.0)
        # Anisotropic Gaussian lump (2:1 axes) in the frequency domain.
        u = fx * np.cos(theta) + fy * np.sin(theta)
        v = -fx * np.sin(theta) + fy * np.cos(theta)
        s_long, s_short = 2.0 * lump_radius, lump_radius
        kernel = np.exp(-2 * np.pi**2 * ((u * s_long) ** 2 + (v * s_short) ** 2))
        acc += np.fft.irfft2(np.fft.rfft2(splat) * kernel, s=shape).astype(np.float32)
    return ((acc - acc.mean()) / (acc.std() + 1e-12)).astype(np.float32)


def detrend(patch: np.ndarray) -> np.ndarray:
    """Remove a least-squares quadratic surface: the thickness fall-off, not texture."""
    yy, xx = np.mgrid[: patch.shape[0], : patch.shape[1]].astype(np.float64)
    yy, xx = yy / patch.shape[0], xx / patch.shape[1]
    basis = np.stack([np.ones_like(yy), yy, xx, yy * yy, xx * xx, yy * xx], -1).reshape(-1, 6)
    coef, *_ = np.linalg.lstsq(basis, patch.reshape(-1).astype(np.float64), rcond=None)
    return patch - (basis @ coef).reshape(patch.shape)


def radial_power_spectrum(patch: np.ndarray, n_bins: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of a square patch (detrended, Hann-windowed)."""
    n = patch.shape[0]
    win = np.hanning(n)[:, None] * np.hanning(patch.shape[1])[None, :]
    p = np.abs(np.fft.fftshift(np.fft.fft2(detrend(patch) * win))) ** 2
    fy = np.fft.fftshift(np.fft.fftfreq(patch.shape[0]))[:, None]
    fx = np.fft.fftshift(np.fft.fftfreq(patch.shape[1]))[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    edges = np.logspace(np.log10(1.0 / n), np.log10(0.5), n_bins + 1)
    idx = np.digitize(f.ravel(), edges) - 1
    ok = (idx >= 0) & (idx < n_bins)
    power = np.bincount(idx[ok], p.ravel()[ok], n_bins) / np.maximum(np.bincount(idx[ok], minlength=n_bins), 1)
    centres = np.sqrt(edges[:-1] * edges[1:])
    return centres, power


def spectral_slope(patch: np.ndarray, f_lo: float = 0.02, f_hi: float = 0.15) -> float:
    """beta of a 1/f^beta fit to the patch's radial spectrum between f_lo and f_hi (cycles/pixel)."""
    f, p = radial_power_spectrum(patch)
    sel = (f >= f_lo) & (f <= f_hi) & (p > 0)
    slope, _ = np.polyfit(np.log(f[sel]), np.log(p[sel]), 1)
    return float(-slope)
