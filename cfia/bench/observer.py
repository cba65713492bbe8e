"""How visible are a phantom folder's masses to an observer told each lesion's shape?

A reference for the classifier's AUC by lesion contrast (docs/models.md), not a bound on
it. Each positive's own lesion mask is the template; the observer's response at a place is
the mean intensity under the template minus the mean of a ring around it (local contrast:
the breast's thickness fall-off cancels), on the images as the node normalises them.

- known location: the response at the lesion's true place against the same template at
  every place inside the normal breasts (where to look is given);
- scan: the largest response anywhere in the breast, in the positive image and in each
  normal one (where to look must be found, as the classifier must).

With --prewhiten, two more observers: the same two tasks with the prewhitening matched
filter (the ideal linear observer for a signal in stationary Gaussian texture): the image
is filtered by 1 / P(f), P the breast texture's radial power spectrum measured on the
normals, and correlated with the lesion's own mask (smoothed, 1 px). Parenchyma is
1/f^3-like, so prewhitening weighs a mass's edge against the low-frequency lumps that
hide it (docs/models.md: at a known place it finds even the faintest masses; its scan
stays below the classifier, so neither scan bounds the classifier).

Each positive's AUC is taken against all normals, then averaged per contrast bin.
Masses only: a calcification cluster's mask is its hull, a poor template for its specks.

    python -m cfia.bench.observer --data /work/data-cls/heldout
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from scipy import ndimage

from phantom.texture import radial_power_spectrum

from ..manifest import DataError, read_manifest
from ..training.classifier import CONTRAST_EDGES, contrast_bins
from ..training.mammo_io import load_record
from . import check_output, finish_report, refuse


def ring_kernel(lesion: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(zero-sum kernel: mean inside the lesion minus mean of a ring around it, its footprint,
    the image position of the kernel's top-left corner when it sits on the lesion)."""
    rows, cols = np.nonzero(lesion)
    width = max(2, int(round(0.5 * np.sqrt(lesion.sum() / np.pi))))  # half the equivalent radius
    crop = np.pad(lesion[rows.min():rows.max() + 1, cols.min():cols.max() + 1], width)
    ring = ndimage.binary_dilation(crop, iterations=width) & ~crop
    kernel = crop / crop.sum() - ring / ring.sum()
    return kernel.astype(np.float64), (crop | ring), (int(rows.min()) - width, int(cols.min()) - width)


class Correlator:
    """Template responses at every place where the footprint lies inside the breast."""

    def __init__(self, image: np.ndarray, breast: np.ndarray, pad: int):
        self.shape = (image.shape[0] + pad, image.shape[1] + pad)
        self.image_f = np.fft.rfft2(image, self.shape)
        self.breast_f = np.fft.rfft2(breast.astype(np.float64), self.shape)
        self.valid_shape = image.shape

    def responses(self, kernel_f: np.ndarray, footprint_f: np.ndarray, kshape, area: float) -> np.ndarray:
        # Convolution with the flipped kernel = correlation; the 'valid' part starts at kshape - 1.
        valid = tuple(slice(k - 1, n) for k, n in zip(kshape, self.valid_shape))
        r = np.fft.irfft2(self.image_f * kernel_f, self.shape)[valid]
        inside = np.fft.irfft2(self.breast_f * footprint_f, self.shape)[valid]
        return r[inside > area - 0.5]


def crop_at(a: np.ndarray, shape, corner: tuple[int, int]) -> np.ndarray:
    """a's window of `shape` whose top-left pixel is `corner` (zero padding past a's edges)."""
    k = max(shape)
    r, c = corner[0] + k, corner[1] + k
    return np.pad(a, k)[r:r + shape[0], c:c + shape[1]]


def lesion_response(image: np.ndarray, kernel: np.ndarray, corner: tuple[int, int]) -> float:
    """The response with the template exactly on the lesion (zero padding past the image edge)."""
    return float((crop_at(image, kernel.shape, corner) * kernel).sum())


def texture_spectrum(normals: list, size: int = 128, per_image: int = 4, seed: int = 0):
    """(frequency centres, mean radial power) of patches wholly inside the normal breasts."""
    rng = np.random.default_rng(seed)
    spectra = []
    for m in normals:
        inside = ndimage.binary_erosion(m.breast, iterations=size // 2 + 1)
        rows, cols = np.nonzero(inside)
        for i in rng.choice(rows.size, min(per_image, rows.size), replace=False) if rows.size else []:
            r, c = rows[i] - size // 2, cols[i] - size // 2
            f, power = radial_power_spectrum(m.image[r:r + size, c:c + size])
            spectra.append(power)
    if not spectra:
        raise SystemExit(f"no {size}x{size} patch lies inside any normal breast: images too small")
    return f, np.mean(spectra, axis=0)


def inverse_spectrum_filter(image: np.ndarray, breast: np.ndarray, spectrum) -> np.ndarray:
    """The image filtered by 1 / P(f): outside the breast set to the breast mean first, so its
    edge does not ring; the filter is P's radial profile interpolated in log-log, 0 at f = 0."""
    f_c, power = spectrum
    f_c, power = f_c[power > 0], power[power > 0]  # log-spaced bins below 1 / size hold no frequency
    filled = np.where(breast, image, image[breast].mean()).astype(np.float64)
    filled -= filled.mean()
    fy = np.fft.fftfreq(image.shape[0])[:, None]
    fx = np.fft.rfftfreq(image.shape[1])[None, :]
    f = np.hypot(fy, fx)
    log_p = np.interp(np.log(np.maximum(f, f_c[0])), np.log(f_c), np.log(power))
    inverse = np.where(f > 0, np.exp(-log_p), 0.0)
    return np.fft.irfft2(np.fft.rfft2(filled) * inverse / inverse.max(), image.shape)


def mask_template(lesion: np.ndarray, ring: np.ndarray, corner) -> np.ndarray:
    """The lesion's mask, smoothed by 1 px, on the ring kernel's crop (same corner, same shape)."""
    return ndimage.gaussian_filter(crop_at(lesion.astype(np.float64), ring.shape, corner), 1.0)


def auc_against(score: float, negatives: np.ndarray) -> float:
    return float((negatives < score).mean() + 0.5 * (negatives == score).mean())


def observe(data: str, limit_normals: int = 0, prewhitened: bool = False) -> dict:
    records = read_manifest(data)
    normals = [r for r in records if not r.label]
    masses = [r for r in records if r.label and r.mask is not None and r.contrast is not None
              and "calcifications" not in r.kind]
    if not normals or not masses:
        raise SystemExit(f"{data}: needs normals and mass positives with mask and contrast in manifest.csv")
    normals = normals[:limit_normals] if limit_normals else normals
    loaded = [(rec, load_record(rec)) for rec in masses]
    kernels = [ring_kernel(m.lesion) for _, m in loaded]
    pad = max(max(kernel.shape) for kernel, _, _ in kernels)  # FFT padding against wrap-around
    normal_images = [load_record(r) for r in normals]
    observers = {"": (lambda m: m.image, lambda lesion, kernel, corner: kernel)}
    if prewhitened:
        spectrum = texture_spectrum(normal_images)
        observers["_prewhitened"] = (lambda m: inverse_spectrum_filter(m.image, m.breast, spectrum), mask_template)
    rows = [{"file": rec.path.name, "contrast": rec.contrast, "kind": rec.kind} for rec, _ in loaded]
    for suffix, (view, template) in observers.items():
        correlators = [Correlator(view(m), m.breast, pad) for m in normal_images]
        for row, (_, m), (kernel, footprint, corner) in zip(rows, loaded, kernels):
            row.update({k + suffix: v for k, v in observe_one(
                view(m), m.breast, template(m.lesion, kernel, corner), footprint, corner, pad,
                correlators).items()})
    return {"n_normals": len(normals), "n_masses": len(rows), "by_contrast": by_contrast(rows), "cases": rows}


def observe_one(image, breast, kernel, footprint, corner, pad, correlators) -> dict:
    """One mass's two AUCs against the normals' correlators: known location and scan."""
    shape = correlators[0].shape
    kernel_f = np.fft.rfft2(kernel[::-1, ::-1], shape)
    footprint_f = np.fft.rfft2(footprint[::-1, ::-1].astype(np.float64), shape)
    area = float(footprint.sum())
    own = Correlator(image, breast, pad).responses(kernel_f, footprint_f, kernel.shape, area)
    at_lesion = lesion_response(image, kernel, corner)
    neg = [c.responses(kernel_f, footprint_f, kernel.shape, area) for c in correlators]
    # A normal breast with no place wholly inside for this template (a large one) has
    # nothing to scan and is left out of the scan's comparison.
    peaks = np.array([n.max() for n in neg if n.size])
    return {"known_location": auc_against(at_lesion, np.concatenate(neg)),
            "scan": auc_against(max(float(own.max()) if own.size else at_lesion, at_lesion), peaks)}


def by_contrast(rows: list[dict]) -> dict:
    """Mean AUCs per contrast bin of the masses (the classifier report's bins up to 2.5)."""
    out = {}
    edges = [e for e in CONTRAST_EDGES if e <= 2.5]
    for name, inside in contrast_bins([r["contrast"] for r in rows], edges):
        sel = [r for r, keep in zip(rows, inside) if keep]
        if sel:
            keys = [k for k in sel[0] if k.startswith(("known_location", "scan"))]
            out[name] = {"n": len(sel), **{k: round(float(np.mean([r[k] for r in sel])), 3) for k in keys}}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a cfia phantom folder (manifest with mask, kind, contrast)")
    ap.add_argument("--limit-normals", type=int, default=0, help="use only the first N normals (0: all)")
    ap.add_argument("--prewhiten", action="store_true",
                    help="also the prewhitening matched filter (known location and scan)")
    ap.add_argument("--out", help="write the full report (per case) as JSON here")
    args = ap.parse_args(argv)
    check_output(args.out)
    t0 = time.time()
    try:
        result = observe(args.data, limit_normals=args.limit_normals, prewhitened=args.prewhiten)
    except DataError as exc:  # no or a malformed manifest.csv, a missing file
        return refuse(exc)
    return finish_report(result, "cfia.bench.observer", argv, args.out, t0)


if __name__ == "__main__":
    sys.exit(main())
