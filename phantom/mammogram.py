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
from .lesions import ALL_MODELS, CONTRAST, LESION_KINDS
from .texture import clustered_lumpy, power_law_noise


@dataclass
class Mammogram:
    pixels: np.ndarray            # uint16 stored values, canonical display orientation
    mask: np.ndarray              # bool lesion ground truth (all False if normal)
    breast: np.ndarray            # bool breast region
    laterality: str               # "L" or "R"
    view: str                     # "CC" or "MLO"
    spacing_mm: float
    # [(kind, row, col, contrast, scale)]: scale = contrast / the breast's tissue s.d.; (row, col)
    # the lesion's centre in `pixels`' frame (displayed: mirrored for a right breast, as `mask`)
    lesions: list = field(default_factory=list)
    beta: float = 3.0
    # What the generator drew, in the canonical frame (chest wall left), for reference
    # observers (cfia.bench.ideal): "anatomy"; "mean_attenuation", the attenuation without
    # texture and lesions; "field_gain", attenuation per unit of the power-law field;
    # "lumps", clustered_lumpy's arguments and weight, or None; "tissue_std", the unit of
    # the lesions' contrast; "placed", [(kind, (r0, c0), profile, mask, contrast)];
    # "detector": its blur sigma, per-pixel gain (stored value / maxval per unit
    # attenuation) and noise s.d. (same units), and "to_attenuation", stored values -> the
    # blurred attenuation (its inverse, noise aside).
    draws: dict = field(default_factory=dict)


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
    lesion_gain: float = 1.0,
) -> Mammogram:
    """lesion_gain scales every lesion's contrast: 0 gives the same image without its lesions."""
    anatomy = breast_anatomy(shape, view, spacing_mm, rng)
    # Generated beta sits a little below 3: detector blur and the gland envelope
    # steepen the spectrum measured on the final image to about 3 (2.5-3.5 target).
    beta = rng.uniform(2.4, 2.8)
    tissue, texture = _parenchyma(shape, anatomy, beta, rng)
    attenuation = anatomy.thickness * (1.0 + tissue) + 0.25 * anatomy.skin + 0.45 * anatomy.pectoral
    mean_attenuation = anatomy.thickness * (1.0 + texture["mean"]) + 0.25 * anatomy.skin + 0.45 * anatomy.pectoral
    # Lesion contrast is drawn relative to the local tissue fluctuation so that it
    # overlaps the background: detection is not a matter of finding bright pixels.
    tissue_std = contrast_unit(tissue, anatomy.depth_mm)
    mask, lesions, drawn = add_lesions(attenuation, anatomy, n_lesions, lesion_kinds, tissue_std, spacing_mm, rng,
                                       lesion_gain)
    pixels, detector = _detector(attenuation, anatomy.breast, bits_stored, for_processing, rng)
    draws = {"anatomy": anatomy, "mean_attenuation": mean_attenuation, "field_gain": anatomy.thickness * texture["gain"],
             "lumps": texture["lumps"], "tissue_std": tissue_std, "placed": drawn, "detector": detector}
    return as_displayed(Mammogram(pixels, mask, anatomy.breast, laterality, view, spacing_mm, lesions, beta, draws))


def contrast_unit(tissue: np.ndarray, depth_mm: np.ndarray) -> float:
    """Every generator's unit of lesion contrast: the s.d. of the tissue deeper than 15 mm
    below the skin (0.1 in a breast with no tissue that deep)."""
    deep = depth_mm > 15
    return float(tissue[deep].std()) if deep.any() else 0.1


def add_lesions(attenuation, anatomy, n_lesions, lesion_kinds, tissue_std, spacing_mm, rng, lesion_gain=1.0):
    """Draw and place up to n_lesions lesions into `attenuation` (in place), each at a contrast
    drawn from CONTRAST in units of tissue_std. Returns (mask, lesions as Mammogram.lesions,
    drawn as Mammogram.draws["placed"])."""
    mask = np.zeros(attenuation.shape, bool)
    lesions, drawn = [], []
    for _ in range(n_lesions):
        kind = lesion_kinds[rng.integers(len(lesion_kinds))]
        placed = place_lesion(kind, anatomy, spacing_mm, rng, mask)
        if placed is None:
            continue
        (r0, c0), profile, lmask = placed
        scale = rng.uniform(*CONTRAST[kind])
        contrast = scale * tissue_std
        sl = (slice(r0, r0 + profile.shape[0]), slice(c0, c0 + profile.shape[1]))
        attenuation[sl] += lesion_gain * contrast * profile * anatomy.thickness[sl]
        mask[sl] |= lmask
        drawn.append((kind, (r0, c0), profile, lmask, contrast))
        lesions.append((kind, r0 + profile.shape[0] // 2, c0 + profile.shape[1] // 2, round(contrast, 4),
                        round(scale, 3)))
    return mask, lesions, drawn


def as_displayed(mg: Mammogram) -> Mammogram:
    """The canonical frame (chest wall left) mirrored for a right breast, chest wall on the right."""
    if mg.laterality == "R":
        mg.pixels, mg.mask, mg.breast = mg.pixels[:, ::-1].copy(), mg.mask[:, ::-1].copy(), mg.breast[:, ::-1].copy()
        cols = mg.pixels.shape[1]
        mg.lesions = [(kind, row, cols - 1 - col, *rest) for kind, row, col, *rest in mg.lesions]
    return mg


def _parenchyma(shape, anatomy, beta, rng):
    """(tissue texture, its parts): the power-law field plus, sometimes, clustered lumps.
    Parts: "mean" (the texture's deterministic part), "gain" (the texture per unit of the
    field), "lumps" (clustered_lumpy's arguments and their weight per unit of the field, or None)."""
    field_ = power_law_noise(shape, beta, rng)
    share, drawn = 1.0, None  # share: of the power-law field in field_
    if rng.random() < 0.5:
        rows = shape[0]
        drawn = dict(n_clusters=int(rng.integers(20, 60)), lumps_per_cluster=int(rng.integers(5, 20)),
                     cluster_radius=rows * 0.02, lump_radius=rows * rng.uniform(0.002, 0.004))
        lumps = clustered_lumpy(shape, rng, **drawn)
        drawn["weight"] = rng.uniform(0.15, 0.35)
        field_ = (field_ + drawn["weight"] * lumps) / 1.05
        share = 1.0 / 1.05
    envelope = gland_envelope(anatomy, rng)
    density = rng.uniform(0.25, 0.8)   # breast density category, fatty to dense
    amplitude = rng.uniform(0.12, 0.25)
    # Texture is modulated by the square root of the envelope, so fatty regions keep
    # some structure and the envelope's large scale does not dominate the spectrum.
    gland = envelope * density + amplitude * np.sqrt(envelope) * field_
    parts = {"mean": 0.6 * envelope * density, "gain": 0.6 * amplitude * np.sqrt(envelope) * share, "lumps": drawn}
    return (0.6 * gland).astype(np.float32), parts


def lesion_centres(anatomy, patch_shape: tuple[int, int], spacing_mm: float) -> np.ndarray:
    """Where a lesion patch's centre may go: deep enough inside the breast, away from the
    pectoral muscle and the image edge (bool, canonical frame)."""
    h, w = patch_shape
    rows, cols = anatomy.breast.shape
    margin_mm = max(h, w) / 2 * spacing_mm + 3.0
    ok = (anatomy.depth_mm > margin_mm) & (anatomy.pectoral < 0.05)
    ok[: h // 2 + 1] = ok[rows - h // 2 - 1:] = False
    ok[:, : w // 2 + 1] = ok[:, cols - w // 2 - 1:] = False
    return ok


def place_lesion(kind, anatomy, spacing_mm, rng, taken):
    """((r0, c0), profile, mask) of a `kind` lesion drawn at a random free place; or None."""
    profile, lmask = ALL_MODELS[kind](spacing_mm, rng)
    h, w = profile.shape
    ok = lesion_centres(anatomy, (h, w), spacing_mm)
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
    """Projected attenuation -> (stored values through a random vendor-like response, its draws)."""
    maxval = (1 << bits_stored) - 1
    sigma = rng.uniform(0.4, 0.9)
    blur = ndimage.gaussian_filter(attenuation, sigma)
    if for_processing:
        # Raw detector signal: linear in exposure, air brightest.
        mu = rng.uniform(1.2, 1.8)
        clean = np.exp(-mu * blur)
        white = rng.normal(0, 1, clean.shape)  # drawn before its s.d.: the order fixes the images
        sd = rng.uniform(0.004, 0.01)
        noise = sd * np.sqrt(clean)
        signal = clean.copy()
        signal += white * sd * np.sqrt(clean)  # in place and in this order: the same images as before
        lo, hi = rng.uniform(0.02, 0.06), rng.uniform(0.85, 0.97)
        values = lo + (hi - lo) * signal
        gain = mu * clean  # |d signal / d attenuation|

        def to_attenuation(v):
            return -np.log(np.clip((v / maxval - lo) / (hi - lo), 1e-6, None)) / mu
    else:
        # Processed, log-like display: dense tissue bright, air dark.
        gamma = rng.uniform(0.8, 1.25)
        scale = max(np.percentile(blur[breast], 99.5), 1e-6)
        norm = np.clip(blur / scale, 0, 1.2) ** gamma
        white = rng.normal(0, 1, norm.shape)  # drawn before its s.d.: the order fixes the images
        noise = rng.uniform(0.006, 0.015)
        norm += white * noise
        lo, hi = rng.uniform(0.01, 0.05), rng.uniform(0.75, 0.92)
        values = lo + (hi - lo) * norm
        gain = gamma / scale * np.clip(blur / scale, 1e-6, 1.2) ** (gamma - 1)

        def to_attenuation(v):
            return scale * np.clip((v / maxval - lo) / (hi - lo), 0, None) ** (1 / gamma)
    pixels = np.clip(np.round(values * maxval), 0, maxval).astype(np.uint16)
    return pixels, {"blur_sigma": sigma, "gain": (hi - lo) * gain, "noise": (hi - lo) * np.broadcast_to(noise, blur.shape),
                    "to_attenuation": to_attenuation}
