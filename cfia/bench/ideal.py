"""Informed searching observers for the phantom's masses, beside the classifier.

The classifier misses faint masses (docs/models.md, "What limits the AUC"). Is the
information there? This observer is told what `cfia phantom` drew for an image except
the tissue texture's realisation, the detector noise and where the mass is: the anatomy
and gland envelope (so the image's smooth part), the texture's power spectrum (power-law
field and, where drawn, clustered lumps), the detector's response, blur and noise level,
and the mass's exact profile and contrast. On the image's pixels (its detector response
inverted, the smooth part subtracted) it computes, at every place the phantom could
have put the mass, the prewhitened matched filter's likelihood ratio for a Gaussian
texture of that spectrum (places grouped by the local texture and noise levels, each
group prewhitened with its own), and scores the image by the mean ratio over places:
the ideal observer's statistic for a known signal at an unknown place in Gaussian
texture. It is not the ideal observer here (the lumps are not Gaussian, the levels vary
within a group), so its AUC is one that can be reached when the mass's shape is known.
With --bank N, a second observer is not told the shape or contrast: it averages the ratio
over N masses drawn from the phantom's own mass models and 5 contrasts across their range.

Each single-mass positive is paired with the same image drawn without its mass
(`make_one(..., lesion_gain=0)`: same anatomy, texture and noise), and both the observer
and the classifier score the pairs, so they answer the same question: mass or no mass
in this breast. The classifier is also given against the folder's own normals, as in
its report.

The images are drawn again from --seed and --size, with the folder's header options
(bits stored, For Processing, photometric interpretation); every one must be the
folder's file: its label, its mask (or none) and its stored pixels, else the command
stops naming the first that is not (a folder made with another --positive-fraction,
--generator or --lesion-kinds). The classifier reads the folder's own files, and each
twin stored as its image is.

    python -m cfia.bench.ideal --data /work/data-cls/heldout --seed 2000 --size 512x416 --bank 32 --model models/classifier.ts
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from scipy.special import logsumexp

from phantom.dicom import to_dataset
from phantom.generate import FIELD_OF_VIEW_MM, PhantomOptions, make_one
from phantom.lesions import MODELS
from phantom.mammogram import lesion_centres
from phantom.texture import clustered_lumpy, power_law_noise

from ..cli import _size
from ..dicom_io import from_dataset, read_file
from ..manifest import read_manifest
from ..training.classifier import CONTRAST_EDGES, contrast_bins, roc_auc
from . import check_output, finish_report, refuse


@dataclass
class ImageModel:
    """One image's texture and noise as the observer models them (Fourier domain, numpy's
    fft2). The places a mass could take fall into groups by the local texture gain and
    noise level; each group has its own prewhitening."""
    mg: object              # the Mammogram (its draws)
    blur: np.ndarray        # the detector blur's transfer function
    spectra: list           # per group: E|R_f|^2 of the residual without a mass, texture in units of 1
    scales: list            # per group: the texture's gain (attenuation per unit of the field)
    group_of: np.ndarray    # per pixel: its group, -1 where no mass can be centred


def mean_power(draw, draws: int = 32) -> np.ndarray:
    """E|FFT|^2 of a random field, from `draws` of it."""
    return np.mean([np.abs(np.fft.fft2(draw())) ** 2 for _ in range(draws)], axis=0)


def blur_transfer(shape, sigma: float) -> np.ndarray:
    """The transfer function of scipy's Gaussian filter (as the detector applies it), periodic."""
    delta = np.zeros(shape)
    delta[0, 0] = 1.0
    return np.fft.fft2(ndimage.gaussian_filter(delta, sigma, mode="wrap")).real


def texture_draw(shape, beta: float, lumps: dict | None, rng: np.random.Generator) -> np.ndarray:
    """A draw of the phantom's texture in units of its power-law field (lumps added if drawn)."""
    field_ = power_law_noise(shape, beta, rng).astype(np.float64)
    if lumps:
        field_ += lumps["weight"] * clustered_lumpy(shape, rng, **{k: v for k, v in lumps.items() if k != "weight"})
    return field_


def canonical(mg, pixels: np.ndarray) -> np.ndarray:
    """Stored pixels back in the generator's frame (chest wall on the left)."""
    return pixels[:, ::-1] if mg.laterality == "R" else pixels


def residual(mg, pixels: np.ndarray) -> np.ndarray:
    """Attenuation (the detector response inverted) minus its smooth, known part: texture,
    mass and noise remain."""
    draws = mg.draws
    attenuation = draws["detector"]["to_attenuation"](canonical(mg, pixels).astype(np.float64))
    return attenuation - ndimage.gaussian_filter(draws["mean_attenuation"], draws["detector"]["blur_sigma"])


def image_model(mg, rng: np.random.Generator, groups: int = 8) -> ImageModel:
    """The observer's model of `mg` (a Mammogram from phantom.generate.make_one)."""
    draws = mg.draws
    anatomy, field_gain, detector = draws["anatomy"], draws["field_gain"], draws["detector"]
    shape = anatomy.breast.shape
    flat = np.flatnonzero(lesion_centres(anatomy, (1, 1), mg.spacing_mm) & (field_gain > 1e-6))
    gain = field_gain.ravel()[flat]
    noise = (detector["noise"] / detector["gain"]).ravel()[flat]  # attenuation units
    split = np.array_split(np.argsort(noise / gain), groups)
    group_of = np.full(shape, -1)
    for g, i in enumerate(split):
        group_of.ravel()[flat[i]] = g
    blur = blur_transfer(shape, detector["blur_sigma"])
    texture = blur ** 2 * mean_power(lambda: texture_draw(shape, mg.beta, draws["lumps"], rng))
    scales = [float(np.median(gain[i])) for i in split]
    # White noise of s.d. s has E|N_f|^2 = N s^2 at every frequency.
    spectra = [texture + (np.median(noise[i]) / m) ** 2 * np.prod(shape) for i, m in zip(split, scales)]
    for spectrum in spectra:  # the image's mean: the texture has none, so it holds only how well
        spectrum[0, 0] = np.inf  # the smooth part was subtracted; ignored
    return ImageModel(mg, blur, spectra, scales, group_of)


def centred_transform(profile: np.ndarray, shape) -> np.ndarray:
    """FFT of `profile` placed with its centre pixel at (0, 0) of an image of `shape`."""
    out = np.zeros(shape)
    h, w = profile.shape
    out[:h, :w] = profile
    return np.fft.fft2(np.roll(out, (-(h // 2), -(w // 2)), axis=(0, 1)))


def log_likelihood_ratios(model: ImageModel, residuals: list, profiles: list, contrasts) -> list:
    """Per residual, log of the mean likelihood ratio "this mass here" vs "no mass" over the
    masses (profiles x contrasts, a prior of equal weights) and the places each could take.
    The templates and their places are built once for all the residuals."""
    mg = model.mg
    anatomy = mg.draws["anatomy"]
    transforms = [np.fft.fft2(res) for res in residuals]
    shape = residuals[0].shape
    thickness = anatomy.thickness.ravel()
    terms = [[] for _ in residuals]
    for profile in profiles:
        template = model.blur * centred_transform(profile, shape)
        centres = lesion_centres(anatomy, profile.shape, mg.spacing_mm)
        for g, (spectrum, scale) in enumerate(zip(model.spectra, model.scales)):
            places = np.flatnonzero(centres & (model.group_of == g))
            if not places.size:
                continue
            energy = float(np.sum(np.abs(template) ** 2 / spectrum))
            amps = np.outer(contrasts, thickness[places]) / scale
            for out, res_f in zip(terms, transforms):
                response = (res_f.size * np.fft.ifft2(np.conj(template) * res_f / spectrum)).real.ravel()[places] / scale
                out.append((amps * response - 0.5 * amps ** 2 * energy).ravel())
    return [float(logsumexp(np.concatenate(t)) - np.log(sum(x.size for x in t))) for t in terms]


def d_prime(model: ImageModel, profile: np.ndarray, contrast: float, centre: tuple[int, int]) -> float:
    """The mass's detectability at its own place, told where it is."""
    g = model.group_of[centre]
    template = model.blur * centred_transform(profile, model.group_of.shape)
    amp = contrast * model.mg.draws["anatomy"].thickness[centre] / model.scales[g]
    return float(amp * np.sqrt(np.sum(np.abs(template) ** 2 / model.spectra[g])))


def mass_bank(count: int, spacing_mm: float, seed: int = 0) -> list:
    """`count` mass profiles drawn from the phantom's own models, circumscribed and spiculated
    in turn: the prior an observer not told the shape searches with."""
    rng = np.random.default_rng(seed)
    return [MODELS[("circumscribed", "spiculated")[i % 2]](spacing_mm, rng)[0] for i in range(count)]


def classifier(model: str, input_size):
    from explain.classifier import load_classifier

    clf = load_classifier("torchscript", model, input_size=input_size)

    def probability(src) -> float:
        """`src`: a cfia.dicom_io.SourceImage, read through the run-time path."""
        pre = src.to_input(input_size)
        with torch.no_grad():
            return float(clf.probability(pre.image[None])[0])
    return probability


def header_options(path, size) -> PhantomOptions:
    """The `cfia phantom` options a file's header tells (bits stored, For Processing,
    photometric interpretation), at `size`; the others at their defaults."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return PhantomOptions(size=size, bits_stored=int(ds.BitsStored),
                          for_processing=str(ds.get("PresentationIntentType", "")).upper() == "FOR PROCESSING",
                          photometric=str(ds.PhotometricInterpretation).strip())


def stored(mg, opts: PhantomOptions):
    """`mg` as `cfia phantom` with `opts` stores it, read back (a cfia.dicom_io.SourceImage)."""
    return from_dataset(to_dataset(mg, "cfia-bench-ideal", 0, opts.bits_stored, opts.for_processing,
                                   opts.photometric), "regenerated")


def regenerate(rec, seed: int, size):
    """(index, image, options, the folder's file read) for a manifest record, once the image drawn
    again is the folder's file: its label, its mask or none, its stored pixels; else
    SystemExit naming the file and the first difference."""
    try:
        index = int(rec.path.stem[3:])
    except ValueError:
        raise SystemExit(f"{rec.path.name}: not a `cfia phantom` file name (imgNNNNN.dcm)") from None
    opts = header_options(rec.path, size)
    mg = make_one(seed, index, opts)
    drawn = int(mg.mask.any())
    if rec.label != drawn:
        why = f"its label is {rec.label}, drawn again it is {drawn}"
    elif (rec.mask is not None) != bool(drawn):
        why = "it has a lesion and no mask" if drawn else "it has a mask and no lesion"
    elif drawn and not np.array_equal(mg.mask, np.load(rec.mask) > 0):
        why = "its mask differs"
    else:
        src = read_file(rec.path)
        if src.pixels.shape == mg.pixels.shape and np.array_equal(src.pixels, stored(mg, opts).pixels):
            return index, mg, opts, src
        why = "its pixels differ"
    flags = ("" if opts.bits_stored == 12 else f" --bits {opts.bits_stored}") + \
        (" --for-processing" if opts.for_processing else "") + \
        ("" if opts.photometric == "MONOCHROME2" else f" --photometric {opts.photometric}")
    raise SystemExit(f"{rec.path.name}: not image {index} of `cfia phantom --seed {seed} --size {size[0]}x{size[1]}"
                     f"{flags}` ({why}): the observer draws each image again, so the folder must have been made "
                     "with this --seed and --size and the default --positive-fraction, --generator and "
                     "--lesion-kinds")


def observe(data: str, seed: int, size, model: str | None, input_size, groups: int = 8, bank: int = 0,
            limit: int = 0, progress=print) -> dict:
    records = read_manifest(data)[:limit or None]
    rng = np.random.default_rng(0)
    probability = classifier(model, input_size) if model else None
    profiles = mass_bank(bank, FIELD_OF_VIEW_MM / size[0]) if bank else []
    cases, normals = [], []
    for rec in records:
        index, mg, opts, src = regenerate(rec, seed, size)
        if not rec.label:
            normals.append(probability(src) if probability else None)
            continue
        if len(mg.draws["placed"]) != 1 or mg.draws["placed"][0][0] == "calcifications":
            continue
        twin = make_one(seed, index, opts, lesion_gain=0.0)
        scored = (src, stored(twin, opts)) if probability else None
        cases.append(observe_pair(mg, twin, image_model(mg, rng, groups), profiles, probability, scored))
        cases[-1].update(file=rec.path.name, kind=rec.kind, contrast=rec.contrast)
        progress(f"{rec.path.name} contrast {rec.contrast:.2f}: " + ", ".join(
            f"{k} {v[0]:.3g} / {v[1]:.3g}" for k, v in cases[-1].items() if isinstance(v, list)))
    return {"n_normals": len(normals), "single_masses": len(cases), "groups": groups, "bank": bank,
            "by_contrast": summarise(cases, normals if probability else None), "cases": cases}


def observe_pair(mg, twin, model: ImageModel, profiles: list, probability, stored_pair=None) -> dict:
    """Scores [with the mass, without it] by each observer (and the classifier, if given,
    on `stored_pair`: the two as SourceImages; default: `stored` with the default options)."""
    _, (r0, c0), profile, _, contrast = mg.draws["placed"][0]
    residuals = [residual(mg, mg.pixels), residual(twin, twin.pixels)]  # each through its own display scaling
    out = {"d_prime": round(d_prime(model, profile, contrast, (r0 + profile.shape[0] // 2,
                                                              c0 + profile.shape[1] // 2)), 2),
           "observer_told": log_likelihood_ratios(model, residuals, [profile], [contrast])}
    if profiles:
        contrasts = np.linspace(0.8, 2.5, 5) * mg.draws["tissue_std"]  # the phantom's range for masses
        out["observer_bank"] = log_likelihood_ratios(model, residuals, profiles, contrasts)
    if probability:
        pair = stored_pair or (stored(mg, PhantomOptions()), stored(twin, PhantomOptions()))
        out["classifier"] = [probability(pair[0]), probability(pair[1])]
    return out


def auc_of(pos: list, neg: list) -> float:
    return roc_auc(pos + neg, [1] * len(pos) + [0] * len(neg))


def paired_auc(cases, key: str) -> float:
    """AUC of the images with their mass against the same images without it."""
    return auc_of([c[key][0] for c in cases], [c[key][1] for c in cases])


def summarise(cases, normals) -> dict:
    out = {}
    edges = [e for e in CONTRAST_EDGES if e <= 2.5]
    for name, inside in contrast_bins([c["contrast"] for c in cases], edges):
        sel = [c for c, keep in zip(cases, inside) if keep]
        if not sel:
            continue
        row = {"n": len(sel), "d_prime_median": round(float(np.median([c["d_prime"] for c in sel])), 2)}
        row.update({f"{k}_paired": round(paired_auc(sel, k), 3) for k, v in sel[0].items() if isinstance(v, list)})
        if normals is not None:
            pos = [c["classifier"][0] for c in sel]
            row["classifier_vs_normals"] = round(auc_of(pos, normals), 3)
        out[name] = row
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cfia.bench.ideal", description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a cfia phantom folder (manifest with mask, kind, contrast)")
    ap.add_argument("--seed", type=int, required=True, help="the --seed the folder was made with")
    ap.add_argument("--size", type=_size, required=True, help="the --size the folder was made with, ROWSxCOLS")
    ap.add_argument("--model", help="also score the pairs and the normals with this TorchScript classifier")
    ap.add_argument("--input-size", type=_size, default=(512, 352), help="the classifier's input (default 512x352)")
    ap.add_argument("--groups", type=int, default=8, help="groups of places by texture and noise level (default 8)")
    ap.add_argument("--bank", type=int, default=0,
                    help="also an observer not told the shape: it searches with N masses drawn from the phantom's "
                         "models and 5 contrasts across their range (default 0: not run)")
    ap.add_argument("--limit", type=int, default=0, help="the folder's first N images only (default: all)")
    ap.add_argument("--out", help="write the full report (per case) as JSON here")
    args = ap.parse_args(argv)
    check_output(args.out)
    try:  # a bad folder or classifier file stops the command now, not minutes in
        read_manifest(args.data)
        if args.model:
            classifier(args.model, args.input_size)
    except ValueError as exc:  # DataError; a classifier file missing or unreadable
        return refuse(exc)
    torch.set_num_threads(2)
    t0 = time.time()
    result = observe(args.data, args.seed, args.size, args.model, args.input_size, args.groups, args.bank, args.limit,
                     progress=lambda line: print(line, file=sys.stderr, flush=True))
    return finish_report(result, "cfia.bench.ideal", argv, args.out, t0)


if __name__ == "__main__":
    sys.exit(main())
