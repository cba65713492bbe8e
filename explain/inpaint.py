"""Inpainters: fill a hole in a preprocessed mammogram with healthy-looking tissue.

One interface for all of them::

    filled = inpainter(image, hole)   # image, hole: (B, 1, H, W); hole 1 = fill

`image` is float in [0, 1] (the classifier input, chest wall at column 0), `hole` is in
[0, 1] and is binarised at `threshold`; known pixels come back unchanged:
``out = (1 - b) * image + b * fill`` with ``b = hole > threshold``. Any H, W works.

- LearnedInpainter: the gated-convolution U-Net of inpaint_net.py, from a checkpoint;
  optionally with its texture matched to the tissue around the hole (match_ring_texture).
- TeleaInpainter, NavierStokesInpainter: OpenCV's cv2.inpaint (no gradients).
- BlurFill, NoiseFill: the perturbations of Fong & Vedaldi, for comparison only.

Pure torch / numpy / OpenCV; settings are plain arguments.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .inpaint_net import DEFAULT_WIDTHS, GatedUNet

CHECKPOINT_FORMAT = "cfia-inpainter/1"
KINDS = ("learned", "telea", "navier_stokes", "blur", "noise")


class InpainterError(ValueError):
    """Bad inpainter kind, path or checkpoint; the message names the bad value."""


class Inpainter:
    """Base class: checks shapes, binarises the hole, composes fill with known pixels."""

    def __init__(self, threshold: float = 0.5):
        self.threshold = float(threshold)

    def fill(self, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """The fill for the whole image (only hole pixels are used); hole is binary."""
        raise NotImplementedError

    def __call__(self, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        if image.ndim != 4 or image.shape[1] != 1:
            raise ValueError(f"image must be (B, 1, H, W), got {tuple(image.shape)}")
        if hole.shape != image.shape:
            raise ValueError(f"hole shape {tuple(hole.shape)} differs from image shape {tuple(image.shape)}")
        if not bool(torch.isfinite(image).all()):  # 0 x NaN: one NaN would spread over the known pixels
            raise ValueError("image contains NaN or infinite values")
        b = (hole > self.threshold).to(image.dtype)
        if not bool(b.any()):
            return image.clone()
        with torch.no_grad():  # float32 whatever the caller's dtype: the network's and OpenCV's
            fill = self.fill(image.detach().float(), b.float()).to(image.dtype).clamp(0.0, 1.0)
        return (1.0 - b) * image + b * fill


class LearnedInpainter(Inpainter):
    """The gated-convolution U-Net.

    path: a checkpoint written by `cfia train inpainter` ({"format", "arch",
    "state_dict"}) or a bare state dict of a GatedUNet with the default widths.
    seed: seeds the noise input, so the same image and hole give the same fill.
    noise_scale: multiplies the noise input (default 1, as trained: textured fill);
    0 gives the network's smooth, deterministic fill (higher SSIM, little texture).
    texture_match: rescale the fill's texture, band by band, to the tissue's around the
    hole (match_ring_texture; default off). The network learnt the texture of the tissue
    it was trained on; on other tissue its fill keeps a fraction of the hidden texture.
    Tried and left off: the fill keeps other tissues' texture, but cf localises worse.
    """

    def __init__(self, path: str | Path, device: str = "cpu", seed: int = 0, threshold: float = 0.5,
                 noise_scale: float = 1.0, texture_match: bool = False):
        self._setup(load_network(path), device, seed, threshold, noise_scale, texture_match)

    @classmethod
    def from_network(cls, net: GatedUNet, device: str = "cpu", seed: int = 0, threshold: float = 0.5,
                     noise_scale: float = 1.0, texture_match: bool = False):
        self = cls.__new__(cls)
        self._setup(net, device, seed, threshold, noise_scale, texture_match)
        return self

    def _setup(self, net: GatedUNet, device, seed, threshold, noise_scale, texture_match) -> None:
        Inpainter.__init__(self, threshold)
        self.device = torch.device(device)
        self.seed, self.noise_scale, self.texture_match = int(seed), float(noise_scale), bool(texture_match)
        self.net = net.to(self.device).eval()

    def fill(self, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        # One noise field for every image of a batch: an image's fill must not depend on
        # its place in the batch (the node fills one at a time; benches batch them).
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        field = torch.randn((1, 1, *image.shape[-2:]), generator=gen)
        noise = self.noise_scale * field.expand(image.shape[0], -1, -1, -1).to(self.device)
        fill = run_network(self.net, image.to(self.device), hole.to(self.device), noise).to(image.device)
        return match_ring_texture(image, hole, fill) if self.texture_match else fill


def _median_square(band: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1, 1): the median of band**2 over each image's `where` pixels (NaN where none).
    A median, not a mean: a ring that reaches the skin line or a vessel keeps its level."""
    out = torch.full((band.shape[0], 1, 1, 1), float("nan"), dtype=band.dtype, device=band.device)
    for i in range(band.shape[0]):
        v = band[i][where[i] > 0.5]
        if v.numel():
            out[i] = (v ** 2).median()
    return out


# The Gaussian sigmas (px) whose differences split texture into bands 0-1, 1-2, 2-4, 4-8 px:
# match_ring_texture's bands, and the inpainter bench's energy per band.
TEXTURE_BAND_SIGMAS = (1.0, 2.0, 4.0, 8.0)


def match_ring_texture(image: torch.Tensor, hole: torch.Tensor, fill: torch.Tensor, ring: int = 12,
                       sigmas: tuple[float, ...] = TEXTURE_BAND_SIGMAS,
                       gain: tuple[float, float] = (0.5, 4.0)) -> torch.Tensor:
    """The fill with each band's texture energy in the hole set to the tissue's in a ring.

    Bands are differences of Gaussians (0-1, 1-2, 2-4, 4-8 px). Each band's gain is
    sqrt(median band**2 over the known tissue within `ring` px of the hole / the same
    over the hole), clipped to `gain`, and is applied coarse to fine on the image with
    the fill in place, each band measured after the coarser ones were scaled: scaling
    a coarse band leaves a seam whose fine energy the finer bands then count. The match
    is approximate (the bands overlap, and the seam counts in the hole's medians): the
    inpainter bench's energy per band (`--texture-match`) measures it against the hidden
    tissue; docs/models.md, "Texture matched to the ring". Tissue = known pixels above
    1e-4 (air is 0 after preprocessing)."""
    comp = (1.0 - hole) * image + hole * fill.clamp(0.0, 1.0)
    k = 2 * ring + 1
    near = (F.max_pool2d(hole, k, 1, ring) > 0).to(image.dtype) * (1.0 - hole) * (image > 1e-4).to(image.dtype)
    edges = (0.0,) + tuple(sigmas)
    for fine, coarse in list(zip(edges[:-1], edges[1:]))[::-1]:
        band = gaussian_blur(comp, fine) - gaussian_blur(comp, coarse)
        g = (_median_square(band, near) / _median_square(band, hole).clamp_min(1e-12)).sqrt()
        g = torch.nan_to_num(g, nan=1.0).clamp(*gain)
        comp = comp + hole * (g - 1.0) * band
    return comp


def run_network(net: GatedUNet, image: torch.Tensor, hole: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Pad to a multiple of net.stride (replicate), run, crop back. Returns the raw fill."""
    h, w = image.shape[-2:]
    s = net.stride
    ph, pw = (-h) % s, (-w) % s
    masked = image * (1.0 - hole)
    if ph or pw:
        pad = (0, pw, 0, ph)
        masked = F.pad(masked, pad, mode="replicate")
        hole = F.pad(hole, pad, mode="replicate")
        noise = F.pad(noise, pad, mode="constant", value=0.0)
    was_training = net.training
    try:
        net.eval()
        out = net(masked, hole, noise)
    finally:
        net.train(was_training)
    return out[..., :h, :w]


def load_network(path: str | Path) -> GatedUNet:
    path = Path(path)
    if not path.is_file():
        raise InpainterError(f"learned inpainter checkpoint {str(path)!r} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise InpainterError(f"cannot read learned inpainter checkpoint {str(path)!r}: {exc}") from None
    if isinstance(blob, dict) and "state_dict" in blob:
        if "optimizer" in blob and "format" not in blob:  # what `cfia train inpainter` saves each epoch
            raise InpainterError(f"{str(path)!r} is a training run's checkpoint (epoch {blob.get('epoch')}), not an "
                                 "inpainter: give the inpainter.pt the run writes when it ends (an interrupted "
                                 "run: the same command with --resume ends it)")
        if blob.get("format") != CHECKPOINT_FORMAT:
            raise InpainterError(f"{str(path)!r}: format {blob.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
        widths, state = tuple(blob.get("arch", {}).get("widths", DEFAULT_WIDTHS)), blob["state_dict"]
    else:
        widths, state = DEFAULT_WIDTHS, blob
    net = GatedUNet(widths)
    try:
        net.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001
        raise InpainterError(f"{str(path)!r} does not hold a GatedUNet{widths} state dict: {_briefly(exc)}") from None
    return net


def _briefly(exc: Exception, limit: int = 300) -> str:
    """torch's load_state_dict error lists every key: a classifier's file gave 3.7 kB of them."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + " ..."


class _OpenCVInpainter(Inpainter):
    flag = None

    def __init__(self, radius: int = 5, threshold: float = 0.5):
        super().__init__(threshold)
        self.radius = int(radius)

    def fill(self, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        import cv2

        out = torch.empty_like(image)
        for i in range(image.shape[0]):
            # uint16, not float32: OpenCV's Telea overshoots wildly on float input.
            img = np.round(image[i, 0].float().clamp(0, 1).cpu().numpy() * 65535).astype(np.uint16)
            mask = hole[i, 0].cpu().numpy().astype(np.uint8)
            if mask.all():  # no known pixel to march from: OpenCV would return the hidden image
                out[i, 0] = 0.0
                continue
            filled = cv2.inpaint(img, mask, self.radius, self.flag).astype(np.float32) / 65535.0
            out[i, 0] = torch.from_numpy(filled)
        return out


class TeleaInpainter(_OpenCVInpainter):
    """OpenCV fast marching (Telea 2004); radius: neighbourhood in pixels (default 5)."""

    flag = 1  # cv2.INPAINT_TELEA


class NavierStokesInpainter(_OpenCVInpainter):
    """OpenCV Navier-Stokes (Bertalmio 2001); radius: neighbourhood in pixels (default 5)."""

    flag = 0  # cv2.INPAINT_NS


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W), reflect padding, truncated at 3 sigma."""
    if sigma <= 0:
        return x
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    mode = "reflect" if min(x.shape[-2:]) > r else "replicate"
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


class BlurFill(Inpainter):
    """Fong & Vedaldi's blur perturbation: the hole shows the image blurred with `sigma`
    (default 10 px). It sees the hidden pixels, so it is a perturbation, not an inpainting."""

    def __init__(self, sigma: float = 10.0, threshold: float = 0.5):
        super().__init__(threshold)
        self.sigma = float(sigma)

    def fill(self, image, hole):
        return gaussian_blur(image, self.sigma)


class NoiseFill(Inpainter):
    """Gaussian noise with the mean and standard deviation of the known pixels in a
    ring of `ring` pixels (default 8) around the hole; `seed` fixes the noise."""

    def __init__(self, ring: int = 8, seed: int = 0, threshold: float = 0.5):
        super().__init__(threshold)
        self.ring, self.seed = int(ring), int(seed)

    def fill(self, image, hole):
        k = 2 * self.ring + 1
        near = (F.max_pool2d(hole, k, 1, self.ring) > 0).to(image.dtype) * (1 - hole)
        n = near.sum((1, 2, 3), keepdim=True).clamp_min(1)
        mean = (image * near).sum((1, 2, 3), keepdim=True) / n
        std = (((image - mean) ** 2 * near).sum((1, 2, 3), keepdim=True) / n).sqrt()
        gen = torch.Generator(device="cpu").manual_seed(self.seed)  # one field for the batch, as fill() alone gets
        field = torch.randn((1, 1, *image.shape[-2:]), generator=gen).expand(image.shape[0], -1, -1, -1)
        return mean + std * field.to(image.device, image.dtype)


def make_inpainter(kind: str, path: str | Path | None = None, device: str = "cpu", **options) -> Inpainter:
    """The inpainter named `kind` (learned, telea, navier_stokes; blur and noise for
    comparison). `path` is the checkpoint, required for learned only; `options` go to
    the constructor (radius, sigma, seed, threshold; noise_scale, texture_match for learned)."""
    if kind == "learned":
        if path is None:
            raise InpainterError("the learned inpainter needs a checkpoint path (models.inpainter.path)")
        return LearnedInpainter(path, device=device, **options)
    classes = {"telea": TeleaInpainter, "navier_stokes": NavierStokesInpainter, "blur": BlurFill, "noise": NoiseFill}
    if kind not in classes:
        raise InpainterError(f"unknown inpainter kind {kind!r}; allowed: {', '.join(KINDS)}")
    return classes[kind](**options)
