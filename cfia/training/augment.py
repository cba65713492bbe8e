"""The classifier's batched training augmentation (torch, on whatever device the batch is on;
the inpainter's crops have their own, cfia/training/crops.py).

Aimed at robustness to mammograms from other sources rather than at the phantom's
quirks: vertical flips (the chest wall stays left, canonical), small affine
(rotation, scale, translation), gamma / contrast / brightness (vendor processing),
Gaussian blur (detector MTF) and Gaussian noise (dose), white or, for a chosen fraction
of the samples, spatially correlated (a detector's noise is not white, and resizing a
mammogram to the input colours it further); optionally extra tissue texture of kinds
the phantom does not draw, for both labels alike. Each sample draws its own
parameters from the given torch.Generator, so a seed fixes the augmentation.
Batched torch, not MONAI's random transforms, which draw per sample from their own
random state: one affine grid for the whole batch on its device, and the stream the
shipped weights were trained with (docs/models.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from explain.inpaint import gaussian_blur


@dataclass(frozen=True)
class AugmentOptions:
    p_vflip: float = 0.5
    max_rotate_deg: float = 10.0
    scale: tuple[float, float] = (0.88, 1.12)
    max_translate: float = 0.05      # fraction of the image size
    gamma: tuple[float, float] = (0.7, 1.4)
    contrast: tuple[float, float] = (0.8, 1.2)
    brightness: float = 0.05
    p_blur: float = 0.3
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    noise_std: tuple[float, float] = (0.0, 0.03)
    p_noise_corr: float = 0.0        # fraction of samples whose noise is correlated
    noise_corr_sigma: tuple[float, float] = (0.5, 2.0)  # its Gaussian filter, input pixels
    p_markers: float = 0.0           # fraction of samples given radiopaque skin markers
    p_texture: float = 0.0           # fraction of samples given extra tissue texture
    p_implant: float = 0.0           # fraction of samples given a breast implant behind the tissue
    p_clips: float = 0.0             # fraction of samples given metal clips inside the breast
    texture_amplitude: tuple[float, float] = (0.06, 0.35)  # its s.d., x the breast's pixel s.d.


def _uniform(n, lo, hi, gen, device):
    return lo + (hi - lo) * torch.rand(n, generator=gen).to(device)


def augment(x: torch.Tensor, gen: torch.Generator, opts: AugmentOptions = AugmentOptions(),
            masks: Optional[torch.Tensor] = None):
    """x: (B, 1, H, W) in [0, 1] -> augmented copy in [0, 1]. gen lives on the CPU.

    With masks (B, 1, h, w), any resolution, returns (x, masks): the masks get the
    same geometric transform (theta is in normalised coordinates)."""
    b, dev = x.shape[0], x.device
    # Geometry: one affine per sample, vertical flip folded in.
    flip = torch.where(torch.rand(b, generator=gen) < opts.p_vflip, -1.0, 1.0).to(dev)
    ang = _uniform(b, -opts.max_rotate_deg, opts.max_rotate_deg, gen, dev) * math.pi / 180
    s = _uniform(b, opts.scale[0], opts.scale[1], gen, dev)
    tx = _uniform(b, -opts.max_translate, opts.max_translate, gen, dev) * 2
    ty = _uniform(b, -opts.max_translate, opts.max_translate, gen, dev) * 2
    cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
    theta = torch.stack([torch.stack([cos, -sin * flip, tx], 1), torch.stack([sin, cos * flip, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if masks is not None:
        mgrid = F.affine_grid(theta, list(masks.shape), align_corners=False)
        masks = F.grid_sample(masks, mgrid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if opts.p_texture > 0:  # draws from `gen` only when on: the default stream is unchanged
        x = _tissue_texture(x, gen, opts)
    if opts.p_implant > 0:  # draws from `gen` only when on: the default stream is unchanged
        x = _implants(x, gen, opts.p_implant)
    # Intensity: gamma, contrast about the mean, brightness.
    g = torch.exp(_uniform(b, math.log(opts.gamma[0]), math.log(opts.gamma[1]), gen, dev)).view(b, 1, 1, 1)
    x = x.clamp(0, 1) ** g
    c = _uniform(b, opts.contrast[0], opts.contrast[1], gen, dev).view(b, 1, 1, 1)
    mean = x.mean(dim=(2, 3), keepdim=True)
    x = (x - mean) * c + mean + _uniform(b, -opts.brightness, opts.brightness, gen, dev).view(b, 1, 1, 1)
    # Blur a random subset with one sigma per batch.
    sel = (torch.rand(b, generator=gen) < opts.p_blur).to(dev)
    sigma = float(_uniform(1, *opts.blur_sigma, gen, "cpu"))
    if bool(sel.any()):
        x = torch.where(sel.view(b, 1, 1, 1), gaussian_blur(x, sigma), x)
    std = _uniform(b, *opts.noise_std, gen, dev).view(b, 1, 1, 1)
    # Noise from a generator on the batch's device, seeded from `gen`: fast and reproducible.
    noise_gen = torch.Generator(dev).manual_seed(int(torch.randint(2 ** 62, (1,), generator=gen)))
    noise = torch.randn(x.shape, generator=noise_gen, device=dev)
    if opts.p_noise_corr > 0:  # draws from `gen` only when on: the default stream is unchanged
        noise = _correlate(noise, gen, opts)
    x = (x + std * noise).clamp(0, 1)
    if opts.p_markers > 0:  # draws from `gen` only when on: the default stream is unchanged
        x = _skin_markers(x, gen, opts.p_markers)
    if opts.p_clips > 0:  # draws from `gen` only when on: the default stream is unchanged
        x = _clips(x, gen, opts.p_clips)
    return x if masks is None else (x, masks)


def _tissue_texture(x: torch.Tensor, gen: torch.Generator, opts: AugmentOptions) -> torch.Tensor:
    """Extra texture inside the breast of a random subset of the samples, whatever their
    label: a power-law field of random slope, or glandular islands (smooth noise through a
    steep sigmoid) of random size and density. A classifier that knows only one
    generator's normal tissue reads any other tissue as a lesion; texture alone must be no
    evidence (docs/models.md, "Texture augmentation")."""
    b, _, h, w = x.shape
    out = x.clone()
    for i in torch.nonzero(torch.rand(b, generator=gen) < opts.p_texture).flatten().tolist():
        breast = out[i, 0] > 0.02
        if int(breast.sum()) < 16:
            continue
        field = texture_field(h, w, gen).to(x.device)
        field = (field - field[breast].mean()) / field[breast].std().clamp(min=1e-6)
        amp = float(_uniform(1, *opts.texture_amplitude, gen, "cpu")) * float(out[i, 0][breast].std())
        out[i, 0] = torch.where(breast, out[i, 0] + amp * field, out[i, 0])
    return out.clamp(0, 1)


def texture_field(h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """One draw of tissue-like texture, (h, w), not normalised: half the time a power-law
    field of random slope 2-4, otherwise glandular islands."""
    if float(torch.rand(1, generator=gen)) < 0.5:
        return _power_law_field(h, w, float(_uniform(1, 2.0, 4.0, gen, "cpu")), gen)
    return _islands(h, w, gen)


def _power_law_field(h: int, w: int, beta: float, gen: torch.Generator) -> torch.Tensor:
    """Gaussian noise whose power falls as 1/f^beta (parenchyma-like for beta 2.5-3.5)."""
    fy = torch.fft.fftfreq(h).view(-1, 1)
    fx = torch.fft.rfftfreq(w).view(1, -1)
    f = torch.sqrt(fy ** 2 + fx ** 2)
    f[0, 0] = 1.0
    spectrum = torch.fft.rfft2(torch.randn(h, w, generator=gen)) * f ** (-beta / 2)
    spectrum[0, 0] = 0
    return torch.fft.irfft2(spectrum, s=(h, w))


def _islands(h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """Islands of dense tissue: noise smoothed over 3-10 pixels, through a steep sigmoid
    at a random level (from a few islands to mostly dense), edges soft or sharp."""
    sigma = float(_uniform(1, 3.0, 10.0, gen, "cpu"))
    g = gaussian_blur(torch.randn(1, 1, h, w, generator=gen), sigma)[0, 0]
    g = g / g.std().clamp(min=1e-12)
    level, edge = float(_uniform(1, -0.5, 1.2, gen, "cpu")), float(_uniform(1, 0.05, 0.4, gen, "cpu"))
    return torch.sigmoid((g - level) / edge)


def _skin_markers(x: torch.Tensor, gen: torch.Generator, p: float) -> torch.Tensor:
    """Radiopaque markers on the skin line of a random subset of the samples: lead
    letters, BBs and scar lines, saturated (1.0), 1-3 per image. Real mammograms carry
    them and a classifier that never saw one reads it as a lesion."""
    import cv2
    import numpy as np

    def rim(breast):
        return np.argwhere(breast.astype(bool) & ~cv2.erode(breast, np.ones((3, 3), np.uint8)).astype(bool))
    return _stamped(x, gen, p, rim, _draw_marker, lambda gen: 1.0)


def _stamped(x: torch.Tensor, gen: torch.Generator, p: float, places, draw, value) -> torch.Tensor:
    """1-3 objects drawn by `draw` at places picked among `places(breast)` (the breast as a
    uint8 mask) on a random subset of the samples, all at `value(gen)`."""
    import numpy as np

    out = x.clone()
    for i in torch.nonzero(torch.rand(x.shape[0], generator=gen) < p).flatten().tolist():
        breast = (out[i, 0] > 0.05).cpu().numpy().astype(np.uint8)
        where = places(breast)
        if len(where) == 0:
            continue
        canvas = np.zeros(breast.shape, np.uint8)
        for _ in range(int(torch.randint(1, 4, (1,), generator=gen))):
            r, c = (int(v) for v in where[int(torch.randint(len(where), (1,), generator=gen))])
            draw(canvas, r, c, gen, scale=breast.shape[0] / 512)
        out[i, 0] = torch.where(torch.from_numpy(canvas > 0).to(x.device), torch.full((), value(gen), device=x.device),
                                out[i, 0])
    return out


def _draw_marker(canvas, r: int, c: int, gen: torch.Generator, scale: float) -> None:
    """One marker centred on (r, c): a BB, a letter or a scar line, 0.5-1.5 x its size."""
    import cv2

    kind, size = int(torch.randint(3, (1,), generator=gen)), float(_uniform(1, 0.5, 1.5, gen, "cpu")) * scale
    if kind == 0:    # a BB
        cv2.circle(canvas, (c, r), max(1, round(3 * size)), 255, -1)
    elif kind == 1:  # a letter
        letter = "LRCM"[int(torch.randint(4, (1,), generator=gen))]
        cv2.putText(canvas, letter, (c - round(6 * size), r + round(6 * size)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.6 * size, 255, max(1, round(2 * size)))
    else:            # a scar line
        a = float(_uniform(1, 0, math.pi, gen, "cpu"))
        dx, dy = math.cos(a) * 20 * size, math.sin(a) * 20 * size
        cv2.line(canvas, (round(c - dx), round(r - dy)), (round(c + dx), round(r + dy)), 255, max(1, round(2 * size)))


def _implants(x: torch.Tensor, gen: torch.Generator, p: float) -> torch.Tensor:
    """A breast implant behind the tissue of a random subset of the samples, whatever their
    label: a rounded shape against the chest wall (the left edge, canonical) of random size,
    squareness, tilt and edge, near the top of the range, the tissue over it keeping a
    random fraction of its contrast; the rest of the breast darkened, as the implant takes
    the top of the percentile scaling. A classifier that never saw one calls half of them
    positive (docs/models.md, "A breast implant and a biopsy clip")."""
    b, _, h, w = x.shape
    out = x.clone()
    yy, xx = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
    yy, xx = yy.to(x.device), xx.to(x.device)
    for i in torch.nonzero(torch.rand(b, generator=gen) < p).flatten().tolist():
        breast = out[i, 0] > 0.02
        rows, cols = torch.nonzero(breast.any(1)).flatten(), torch.nonzero(breast.any(0)).flatten()
        if rows.numel() < 8 or cols.numel() < 8:
            continue
        u = [float(v) for v in torch.rand(9, generator=gen)]
        top, height = float(rows.min()), float(rows.max() - rows.min() + 1)
        left, depth = float(cols.min()), float(cols.max() - cols.min() + 1)
        cy, cx = top + height * (0.3 + 0.4 * u[0]), left + depth * (-0.1 + 0.2 * u[1])
        ay, ax = height * (0.15 + 0.2 * u[2]), depth * (0.25 + 0.3 * u[3])
        tilt, power = (u[4] - 0.5) * 0.7, 2.0 + u[5]
        dy, dx = yy - cy, xx - cx
        ry = (dy * math.cos(tilt) - dx * math.sin(tilt)).abs() / ay
        rx = (dy * math.sin(tilt) + dx * math.cos(tilt)).abs() / ax
        radius = (ry ** power + rx ** power) ** (1 / power)
        profile = torch.sigmoid((1 - radius) / (0.01 + 0.05 * u[6])) * breast
        tissue = out[i, 0] * (0.5 + 0.5 * u[7])
        under = profile > 0.5
        mean = tissue[under].mean() if bool(under.any()) else tissue[breast].mean()
        over = 0.85 + 0.15 * u[8] + (0.05 + 0.35 * float(torch.rand(1, generator=gen))) * (tissue - mean)
        out[i, 0] = torch.where(breast, tissue * (1 - profile) + over * profile, out[i, 0])
    return out.clamp(0, 1)


def _clips(x: torch.Tensor, gen: torch.Generator, p: float) -> torch.Tensor:
    """Metal inside the breast of a random subset of the samples, whatever their label:
    1-3 biopsy marker or surgical clips (bars, bent bars, rings, barbells) 2.5-8 mm long at a
    0.5 mm pixel, near saturation, anywhere well inside the breast. Real screening images
    carry them after a biopsy; a classifier that never saw one calls four in ten positive."""
    import cv2
    import numpy as np

    def inner(breast):
        return np.argwhere(cv2.erode(breast, np.ones((3, 3), np.uint8), iterations=max(1, breast.shape[0] // 40)))
    return _stamped(x, gen, p, inner, _draw_clip, lambda gen: 0.9 + 0.1 * float(torch.rand(1, generator=gen)))


def _draw_clip(canvas, r: int, c: int, gen: torch.Generator, scale: float) -> None:
    """One clip centred on (r, c): a bar, a bent bar, a ring or a barbell, 5-16 pixels (2.5-8 mm)
    at 512 rows. Not smaller: a 1-mm bar or bead is a calcification's size. Even so, drawn clips
    cost the calcification clusters (held-out AUC 0.966 without, 0.830 with these, 0.807 with clips
    from 1 mm; docs/models.md, "Implants and clips in training")."""
    import cv2

    kind = int(torch.randint(4, (1,), generator=gen))
    half = max(1.0, float(_uniform(1, 2.5, 8.0, gen, "cpu")) * scale)
    a = float(_uniform(1, 0, math.pi, gen, "cpu"))
    thick = max(1, round(float(_uniform(1, 1.0, 2.5, gen, "cpu")) * scale))
    dx, dy = math.cos(a) * half, math.sin(a) * half
    ends = (round(c - dx), round(r - dy)), (round(c + dx), round(r + dy))
    if kind == 0:    # a bar
        cv2.line(canvas, *ends, 255, thick)
    elif kind == 1:  # a bent bar: two arms from the centre
        b = a + float(_uniform(1, 0.6, 2.4, gen, "cpu"))
        cv2.line(canvas, (c, r), ends[0], 255, thick)
        cv2.line(canvas, (c, r), (round(c + math.cos(b) * half), round(r + math.sin(b) * half)), 255, thick)
    elif kind == 2:  # a ring (a coil seen end on)
        cv2.circle(canvas, (c, r), max(2, round(half * 0.6)), 255, thick)
    else:            # a barbell: two beads and the wire between them
        cv2.line(canvas, *ends, 255, max(1, thick - 1))
        for end in ends:
            cv2.circle(canvas, end, max(1, thick), 255, -1)


def _correlate(noise: torch.Tensor, gen: torch.Generator, opts: AugmentOptions) -> torch.Tensor:
    """White noise of a random subset of the samples Gaussian-filtered (one sigma per batch)
    and rescaled to unit s.d., so `noise_std` means the same for both kinds."""
    b = noise.shape[0]
    sel = (torch.rand(b, generator=gen) < opts.p_noise_corr).to(noise.device)
    sigma = float(_uniform(1, *opts.noise_corr_sigma, gen, "cpu"))
    if not bool(sel.any()):
        return noise
    smooth = gaussian_blur(noise, sigma)
    smooth = smooth / smooth.std(dim=(2, 3), keepdim=True).clamp(min=1e-12)
    return torch.where(sel.view(b, 1, 1, 1), smooth, noise)


