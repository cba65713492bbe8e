"""One synthetic mammogram: anatomy + texture + lesions -> detector pixel values.

The image is composed in projected-attenuation units (fatty breast interior about 1),
then mapped to stored pixel values with a per-image random "vendor" response (gamma,
window, noise, detector blur), so a classifier cannot key on one fixed intensity law.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .anatomy import breast_anatomy, gland_envelope
from .lesions import LESION_KINDS, MODELS
from .texture import clustered_lumpy, power_law_noise


@dataclass
class Mammogram:
    pixels: np.ndarray            # uint16 stored values, canonical display orientation
    mask: np.ndarray              # bool lesion ground truth (all False if normal)
    breast: np.ndarray            # bool breast region
    laterality: str               # "L" or "R"
    view: str                     # "CC" or "MLO"
    spacing_mm: float
    # [(kind, row, col, contrast, scale)]: scale = contrast / the breast's tissue s.d.
    lesions: list = field(default_factory=list)
    beta: float = 3.0


def synthesize(
    shape: tuple[int, int],
    rng: np.random.Generator,
    laterality: str,
    view: str,
    n_lesions: int,
    spacing_mm: float,
    bits_stored: int = 12,
    for_processing: bool = False,
    lesion_kinds: tuple[str, ...] = LESION_KINDS,
) -> Mammogram:
    anatomy = breast_anatomy(shape, view, spacing_mm, rng)
    # Generated beta sits a little below 3: detector blur and the gland envelope
    # steepen the spectrum measured on the final image to about 3 (2.5-3.5 target).
    beta = rng.uniform(2.4, 2.8)
    tissue, gland = _parenchyma(shape, anatomy, beta, rng)
    attenuation = anatomy.thickness * (1.0 + tissue) + 0.25 * anatomy.skin + 0.45 * anatomy.pectoral
    mask = np.zeros(shape, bool)
    lesions = []
    # Lesion contrast is drawn relative to the local tissue fluctuation so that it
    # overlaps the background: detection is not a matter of finding bright pixels.
    tissue_std = float(tissue[anatomy.depth_mm > 15].std()) if (anatomy.depth_mm > 15).any() else 0.1
    for _ in range(n_lesions):
        kind = lesion_kinds[rng.integers(len(lesion_kinds))]
        placed = _place_lesion(kind, anatomy, spacing_mm, rng, mask)
        if placed is None:
            continue
        (r0, c0), profile, lmask = placed
        scale = rng.uniform(0.8, 2.5) if kind != "calcifications" else rng.uniform(2.5, 6.0)
        contrast = scale * tissue_std
        sl = (slice(r0, r0 + profile.shape[0]), slice(c0, c0 + profile.shape[1]))
        attenuation[sl] += contrast * profile * anatomy.thickness[sl]
        mask[sl] |= lmask
        lesions.append((kind, r0 + profile.shape[0] // 2, c0 + profile.shape[1] // 2, round(contrast, 4),
                        round(scale, 3)))
    pixels = _detector(attenuation, anatomy.breast, bits_stored, for_processing, rng)
    out = Mammogram(pixels, mask, anatomy.breast, laterality, view, spacing_mm, lesions, beta)
    if laterality == "R":  # chest wall on the right for a right breast
        out.pixels, out.mask, out.breast = out.pixels[:, ::-1].copy(), out.mask[:, ::-1].copy(), out.breast[:, ::-1].copy()
    return out


def _parenchyma(shape, anatomy, beta, rng):
    """Glandular fraction texture: power-law field plus, sometimes, clustered lumps."""
    field_ = power_law_noise(shape, beta, rng)
    if rng.random() < 0.5:
        rows = shape[0]
        lumps = clustered_lumpy(
            shape, rng, n_clusters=int(rng.integers(20, 60)), lumps_per_cluster=int(rng.integers(5, 20)),
            cluster_radius=rows * 0.02, lump_radius=rows * rng.uniform(0.002, 0.004),
        )
        field_ = (field_ + rng.uniform(0.15, 0.35) * lumps) / 1.05
    envelope = gland_envelope(anatomy, rng)
    density = rng.uniform(0.25, 0.8)   # breast density category, fatty to dense
    amplitude = rng.uniform(0.12, 0.25)
    # Texture is modulated by the square root of the envelope, so fatty regions keep
    # some structure and the envelope's large scale does not dominate the spectrum.
    gland = envelope * density + amplitude * np.sqrt(envelope) * field_
    return (0.6 * gland).astype(np.float32), gland


def _place_lesion(kind, anatomy, spacing_mm, rng, taken):
    profile, lmask = MODELS[kind](spacing_mm, rng)
    h, w = profile.shape
    rows, cols = anatomy.breast.shape
    # Candidate centres: deep enough inside the breast, away from the pectoral muscle.
    margin_mm = max(h, w) / 2 * spacing_mm + 3.0
    ok = (anatomy.depth_mm > margin_mm) & (anatomy.pectoral < 0.05)
    ok[: h // 2 + 1] = ok[rows - h // 2 - 1:] = False
    ok[:, : w // 2 + 1] = ok[:, cols - w // 2 - 1:] = False
    cand = np.flatnonzero(ok)
    for _ in range(20):
        if cand.size == 0:
            return None
        rc, cc = np.unravel_index(cand[rng.integers(cand.size)], ok.shape)
        r0, c0 = rc - h // 2, cc - w // 2
        region = (slice(r0, r0 + h), slice(c0, c0 + w))
        if anatomy.breast[region][lmask].all() and not taken[region][lmask].any():
            return (r0, c0), profile, lmask
    return None


def _detector(attenuation, breast, bits_stored, for_processing, rng):
    """Projected attenuation -> stored values through a random vendor-like response."""
    maxval = (1 << bits_stored) - 1
    blur = ndimage.gaussian_filter(attenuation, rng.uniform(0.4, 0.9))
    if for_processing:
        # Raw detector signal: linear in exposure, air brightest.
        signal = np.exp(-rng.uniform(1.2, 1.8) * blur)
        signal += rng.normal(0, 1, signal.shape) * rng.uniform(0.004, 0.01) * np.sqrt(signal)
        lo, hi = rng.uniform(0.02, 0.06), rng.uniform(0.85, 0.97)
        values = lo + (hi - lo) * signal
    else:
        # Processed, log-like display: dense tissue bright, air dark.
        gamma = rng.uniform(0.8, 1.25)
        norm = np.clip(blur / max(np.percentile(blur[breast], 99.5), 1e-6), 0, 1.2) ** gamma
        norm += rng.normal(0, 1, norm.shape) * rng.uniform(0.006, 0.015)
        lo, hi = rng.uniform(0.01, 0.05), rng.uniform(0.75, 0.92)
        values = lo + (hi - lo) * norm
    return np.clip(np.round(values * maxval), 0, maxval).astype(np.uint16)
