"""Source mammogram pixels -> classifier input, and the exact way back.

numpy, torch and MONAI transforms: the caller (cfia/dicom_io.py) reads the DICOM and
passes plain values. Steps, in order:

1. polarity: MONOCHROME1 is negated so dense tissue is bright; a For Processing
   (raw, linear-in-exposure) image is log-transformed first (-log), which also makes
   dense tissue bright.
2. breast mask: Otsu threshold on a downsampled copy without its collimated (flat,
   bright, unexposed) edge strips, largest connected component, holes filled. Labels,
   markers and detector edges outside it are ignored.
3. intensity: robust percentile scaling inside the breast to [0, 1] (clipped);
   everything beyond the mask grown past the skin line is set to 0 (air), so
   labels and markers do not reach the classifier.
4. canonical orientation: horizontal flip so the chest wall is on the left
   (decided from the image: the side the breast touches; laterality as a fallback).
5. crop: bounding box of the breast plus a margin, widened where the whole breast (its
   fatty periphery included) reaches beyond it.
6. resize: aspect-preserving (one physical scale for both axes, non-square pixels
   included) so lesion shapes are not distorted, then zero padding (= air) to `input_size`:
   the chest wall stays flush left, so on the right; the breast is vertically centred, so
   above and below.

`Geometry` records every step so a map computed on the input grid goes back to the
source grid (`to_source`) and a source-grid mask comes to the input grid
(`to_input`), the flip, crop and padding each way as MONAI transforms (Flip,
SpatialCrop, BorderPad). Two steps are cfia's own: the resize (torch's antialiased
bilinear, whose pixel-centre convention `points_to_input` follows; MONAI's Resize
smooths with its own Gaussian) and the intensity scaling (percentiles of the breast
alone, where MONAI's scale their whole image). The geometric mapping is exact (pixel centres, half-pixel
convention of `align_corners=False`); downsampling of course loses detail finer than
one input pixel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from monai.transforms import BorderPad, Flip, SpatialCrop

__all__ = ["Geometry", "Preprocessed", "preprocess", "breast_mask", "breast_masks", "collimated_edges",
           "normalise_intensity", "display_values"]


# Pixels of breast_mask's working copy (about 1/512 of the long side) kept beyond the
# Otsu mask: the skin line's faint fringe lies within 5 of it on the phantoms.
SKIN_LINE_GROW = 8


@dataclass(frozen=True)
class Geometry:
    """How the input grid relates to the source grid (all integers but the scales).

    source_shape: (rows, cols) of the stored pixel array.
    flipped: the source was mirrored left-right to put the chest wall on the left.
    crop: (r0, r1, c0, c1), half-open box in the flipped source grid.
    resized: (rows, cols) of the crop after resizing, before padding.
    pad: (top, left) offset of the resized crop inside the input grid.
    input_size: (rows, cols) of the classifier input.
    """

    source_shape: tuple[int, int]
    flipped: bool
    crop: tuple[int, int, int, int]
    resized: tuple[int, int]
    pad: tuple[int, int]
    input_size: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        """Input pixels per source pixel, per axis (rows, cols)."""
        r0, r1, c0, c1 = self.crop
        return self.resized[0] / (r1 - r0), self.resized[1] / (c1 - c0)

    # -- points -------------------------------------------------------------------
    def points_to_input(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) source (row, col) pixel coordinates -> input grid coordinates."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2).copy()
        if self.flipped:
            p[:, 1] = self.source_shape[1] - 1 - p[:, 1]
        sy, sx = self.scale
        p[:, 0] = (p[:, 0] - self.crop[0] + 0.5) * sy - 0.5 + self.pad[0]
        p[:, 1] = (p[:, 1] - self.crop[2] + 0.5) * sx - 0.5 + self.pad[1]
        return p

    def points_to_source(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) input grid (row, col) coordinates -> source pixel coordinates."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2).copy()
        sy, sx = self.scale
        p[:, 0] = (p[:, 0] - self.pad[0] + 0.5) / sy - 0.5 + self.crop[0]
        p[:, 1] = (p[:, 1] - self.pad[1] + 0.5) / sx - 0.5 + self.crop[2]
        if self.flipped:
            p[:, 1] = self.source_shape[1] - 1 - p[:, 1]
        return p

    # -- arrays -------------------------------------------------------------------
    def to_input(self, array, mode: str = "area") -> np.ndarray:
        """A source-grid array (H, W) -> float32 array on the input grid.

        mode "area" (antialiased bilinear: a binary mask becomes its coverage
        fraction), "bilinear" (no antialiasing) or "nearest". Padding is 0.
        """
        src = _as_float(array)
        if src.shape != tuple(self.source_shape):
            raise ValueError(f"expected an array of the source shape {self.source_shape}, got {src.shape}")
        r0, r1, c0, c1 = self.crop
        (pt, pl), (rh, rw) = self.pad, self.resized
        rows, cols = self.input_size
        x = Flip(spatial_axis=1)(src[None]) if self.flipped else src[None]  # channel first
        part = _resize(torch.as_tensor(SpatialCrop(roi_start=(r0, c0), roi_end=(r1, c1))(x))[0], self.resized, mode)
        out = BorderPad(spatial_border=(pt, rows - pt - rh, pl, cols - pl - rw))(part[None])
        return torch.as_tensor(out)[0].numpy()

    def to_source(self, array, mode: str = "bilinear", fill: float = 0.0) -> np.ndarray:
        """An input-grid map (h, w) -> float32 array on the source grid.

        Undoes padding, resize, crop and flip; outside the crop is `fill`.
        mode "bilinear" (smooth maps) or "nearest" (label maps).
        """
        m = _as_float(array)
        if m.shape != tuple(self.input_size):
            raise ValueError(f"expected an array of the input size {self.input_size}, got {tuple(m.shape)}")
        (pt, pl), (rh, rw) = self.pad, self.resized
        r0, r1, c0, c1 = self.crop
        rows, cols = self.source_shape
        part = torch.as_tensor(SpatialCrop(roi_start=(pt, pl), roi_end=(pt + rh, pl + rw))(m[None]))[0]
        part = _resize(part, (r1 - r0, c1 - c0), "bilinear" if mode == "area" else mode)
        out = BorderPad(spatial_border=(r0, rows - r1, c0, cols - c1), value=float(fill))(part[None])
        out = Flip(spatial_axis=1)(out) if self.flipped else out
        return torch.as_tensor(out)[0].numpy()


@dataclass
class Preprocessed:
    image: torch.Tensor      # (1, rows, cols) float32 in [0, 1], the classifier input
    breast: torch.Tensor     # (1, rows, cols) float32 breast coverage on the input grid
    geometry: Geometry


def _as_float(array) -> torch.Tensor:
    t = array if isinstance(array, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(array))
    t = t.detach().to("cpu", torch.float32)
    if t.ndim != 2:
        t = t.squeeze()
    if t.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {tuple(array.shape)}")
    return t


def _resize(t: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(t.shape) == tuple(size):
        return t.clone()
    x = t[None, None]
    if mode == "nearest":
        # "nearest-exact" uses the same half-pixel centres as the bilinear modes.
        y = F.interpolate(x, size=size, mode="nearest-exact")
    elif mode in ("area", "bilinear"):
        down = size[0] < t.shape[0] or size[1] < t.shape[1]
        y = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=(mode == "area" and down))
    else:
        raise ValueError(f"mode must be area, bilinear or nearest, got {mode!r}")
    return y[0, 0]


def display_values(pixels: np.ndarray, photometric: str, for_processing: bool) -> np.ndarray:
    """Stored values -> float32 where dense tissue is bright."""
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"photometric must be MONOCHROME1 or MONOCHROME2, got {photometric!r}")
    if pixels.ndim != 2:
        raise ValueError(f"expected a single-frame 2-D pixel array, got shape {pixels.shape}")
    v = pixels.astype(np.float32)
    if photometric == "MONOCHROME1":
        v = float(v.max()) - v
    if for_processing:
        # Raw detector signal is linear in exposure (air brightest): -log gives
        # something linear in attenuation, dense tissue bright.
        v = -np.log(np.maximum(v, 0) + 1.0)
    return v


def breast_mask(values: np.ndarray, work_size: int = 512, grow: int = 0) -> np.ndarray:
    """Bool breast mask of a display-polarity image (dense bright, air dark).

    Otsu threshold on a copy downsampled to about `work_size` on its long side, with
    collimated edges taken out (`collimated_edges`), largest connected component, holes
    filled, grown by `grow` pixels of that copy (never into the collimated edges), then
    upsampled back (nearest).
    """
    return breast_masks(values, (grow,), work_size)[0]


def breast_masks(values: np.ndarray, grows: tuple[int, ...], work_size: int = 512,
                 whole: bool = False) -> list[np.ndarray]:
    """`breast_mask` for each of `grows`, segmenting once. grow 0 is Otsu's mask; a grown
    mask starts from the whole breast (`_above_air`: its fatty periphery included).
    whole=True appends the whole breast, not grown: what the crop must keep."""
    from skimage.filters import threshold_otsu

    rows, cols = values.shape
    step = max(1, int(np.ceil(max(rows, cols) / work_size)))
    # Each block's centre (the last, partial block's last pixel at most): the mask upsampled
    # by repetition below then lies on the breast; a block's first pixel put it (step - 1) / 2
    # source pixels down and right (3.5 at 4096x3328).
    centres = [np.minimum(np.arange(0, n, step) + step // 2, n - 1) for n in (rows, cols)]
    small = values[np.ix_(*centres)]
    count = len(grows) + int(whole)
    if float(small.max()) <= float(small.min()):
        return [np.ones(values.shape, bool) for _ in range(count)]
    edges = collimated_edges(small, threshold_otsu(small))
    small = np.where(edges, small.min(), small)
    fg = ndimage.binary_opening(small > threshold_otsu(small), iterations=1)
    labels, n = ndimage.label(fg)
    if n == 0:
        return [np.ones(values.shape, bool) for _ in range(count)]
    sizes = ndimage.sum_labels(fg, labels, index=np.arange(1, n + 1))
    fg = ndimage.binary_fill_holes(labels == (1 + int(np.argmax(sizes))))
    inclusive = _above_air(small, fg, edges) if whole or any(grows) else fg
    masks = [ndimage.binary_dilation(inclusive, iterations=grow) & ~edges if grow else fg for grow in grows]
    masks += [inclusive] if whole else []
    return [np.repeat(np.repeat(m, step, axis=0), step, axis=1)[:rows, :cols] for m in masks]


def _above_air(small: np.ndarray, fg: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The Otsu mask `fg` plus what joins it clearly above the air's level.

    In a dense breast Otsu's threshold can fall between fat and gland, so fat at the thin
    periphery lies below it though it is breast, not air; grown masks start from this one
    so that such fat is not blanked as air (measured on the second generator's fatty
    peripheries: 6.5 % of the breast lost on average without it; docs/models.md).
    """
    air = small[~ndimage.binary_dilation(fg, iterations=3) & ~edges]
    if air.size < 100:
        return fg
    level = float(np.median(air))
    spread = 1.4826 * float(np.median(np.abs(air - level)))
    lo, hi = np.percentile(small, (0.5, 99.5))
    above = (small > level + max(6.0 * spread, 0.02 * float(hi - lo))) & ~edges
    return ndimage.binary_fill_holes(ndimage.binary_propagation(fg, mask=above | fg))


def collimated_edges(small: np.ndarray, threshold: float, flat: float = 0.02) -> np.ndarray:
    """Bool mask of the image's edge rows and columns that the collimator kept unexposed.

    Such a strip is bright in display polarity (above `threshold`) and flat: its spread
    is detector noise alone, below `flat` of the image's range, where a line through
    tissue has texture. Walked in from each edge, at most a quarter of the image. Left
    in, a strip joins the breast's component (or frames it, and the filled mask is the
    whole image), so the crop and the intensity scaling would follow the strip.
    """
    lo, hi = np.percentile(small, (0.5, 99.5))
    limit = flat * max(float(hi - lo), 1e-6)
    out = np.zeros(small.shape, bool)
    for axis in (0, 1):
        lines = small if axis == 0 else small.T
        unexposed = (np.median(lines, axis=1) > threshold) & (lines.std(axis=1) < limit)
        n = len(unexposed)
        first, last = _leading(unexposed[: n // 4]), _leading(unexposed[::-1][: n // 4])
        view = out if axis == 0 else out.T
        view[:first] = True
        view[n - last:] = True
    return out


def _leading(flags: np.ndarray) -> int:
    """How many of `flags` are True before the first False."""
    return len(flags) if flags.all() else int(np.argmin(flags))


def normalise_intensity(values: np.ndarray, mask: np.ndarray, percentiles=(1.0, 99.8)) -> np.ndarray:
    """Scale so the breast's `percentiles` map to 0 and 1; clipped to [0, 1]."""
    inside = values[mask] if mask.any() else values.ravel()
    lo, hi = np.percentile(inside[:: max(1, inside.size // 500_000)], percentiles)
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _chest_wall_on_right(mask: np.ndarray, laterality: str | None) -> bool:
    """The breast is tall along the chest wall and narrows to the nipple: compare the breast
    in the first and last twentieth of its own width (of its bounding box, not the image's,
    so air around the breast, as some exports add, does not hide which side it is)."""
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size:
        mask = mask[:, cols[0]: cols[-1] + 1]
    left = int(mask[:, 0].sum()) + int(mask[:, : max(1, mask.shape[1] // 20)].sum())
    right = int(mask[:, -1].sum()) + int(mask[:, -max(1, mask.shape[1] // 20):].sum())
    if max(left, right) > 0 and (left > 1.5 * right or right > 1.5 * left):
        return right > left
    return (laterality or "").upper() == "R"


def _breast_box(mask: np.ndarray, margin: float, whole: np.ndarray | None = None) -> tuple[int, int, int, int]:
    """(r0, r1, c0, c1) half-open: the breast's bounding box grown by `margin` x its long
    side on every side but the chest wall's (the left), where the breast is cut by the
    detector, and further where needed to hold `whole` (the breast with its fatty
    periphery). It may reach beyond the image: how much air an export leaves around the
    breast must not change the classifier's input. No breast: the whole image."""
    rr, cc = np.nonzero(mask)
    if not rr.size:
        return 0, mask.shape[0], 0, mask.shape[1]
    r0, r1, c0, c1 = int(rr.min()), int(rr.max()) + 1, int(cc.min()), int(cc.max()) + 1
    m = int(round(margin * max(r1 - r0, c1 - c0)))
    box = r0 - m, r1 + m, c0, c1 + m
    if whole is None:
        return box
    # The margin covers a thin fringe beyond Otsu's mask; a wider fatty periphery
    # (a dense breast) widens the box to keep it.
    wr, wc = np.nonzero(whole)
    return (min(box[0], int(wr.min())), max(box[1], int(wr.max()) + 1),
            min(box[2], int(wc.min())), max(box[3], int(wc.max()) + 1))


def _fit(box: tuple[int, int, int, int], shape: tuple[int, int], input_size: tuple[int, int],
         pixel_aspect: float = 1.0):
    """The box resized into the input with its physical aspect kept (a column is
    `pixel_aspect` times as wide as a row is high), centred vertically, against the left
    edge; what of it lies outside the image becomes zero padding. Returns the Geometry's
    crop (inside the image), resized and pad."""
    (vr0, vr1, vc0, vc1), (H, W), (rows_in, cols_in) = box, shape, input_size
    s = min(rows_in / (vr1 - vr0), cols_in / ((vc1 - vc0) * pixel_aspect))
    sc = s * pixel_aspect
    r0, r1, c0, c1 = max(0, vr0), min(H, vr1), max(0, vc0), min(W, vc1)
    top = (rows_in - int(round((vr1 - vr0) * s))) // 2 + int(round((r0 - vr0) * s))
    left = int(round((c0 - vc0) * sc))
    top, left = min(max(0, top), rows_in - 1), min(max(0, left), cols_in - 1)
    rh = max(1, min(rows_in - top, int(round((r1 - r0) * s))))
    rw = max(1, min(cols_in - left, int(round((c1 - c0) * sc))))
    return (r0, r1, c0, c1), (rh, rw), (top, left)


def preprocess(
    pixels: np.ndarray,
    input_size: tuple[int, int],
    photometric: str = "MONOCHROME2",
    laterality: str | None = None,
    for_processing: bool = False,
    margin: float = 0.02,
    percentiles: tuple[float, float] = (1.0, 99.8),
    orientation: str = "auto",
    pixel_aspect: float = 1.0,
) -> Preprocessed:
    """Map a stored pixel array to the classifier input plus its Geometry.

    pixels: (rows, cols) stored values (any integer or float dtype), up to 4096x3328.
    input_size: (rows, cols) the classifier expects.
    photometric: MONOCHROME1 (inverted) or MONOCHROME2.
    laterality: "L" / "R" / None; only used when the image itself does not say
        which side the chest wall is on (orientation="auto"), or always with
        orientation="laterality" (R -> flipped).
    for_processing: raw detector values (log-transformed first).
    margin: crop margin as a fraction of the breast's long side (`_breast_box`).
    percentiles: breast intensity percentiles mapped to 0 and 1.
    pixel_aspect: column spacing / row spacing (1 for square pixels): the resize keeps
        the breast's physical shape.
    """
    if orientation not in ("auto", "laterality"):
        raise ValueError(f"orientation must be auto or laterality, got {orientation!r}")
    if not (np.isfinite(pixel_aspect) and pixel_aspect > 0):
        raise ValueError(f"pixel_aspect must be a positive number, got {pixel_aspect!r}")
    rows_in, cols_in = (int(v) for v in input_size)
    pixels = np.asarray(pixels)
    values = display_values(pixels, photometric, for_processing)
    if orientation == "auto":
        flipped = _chest_wall_on_right(breast_mask(values), laterality)
    else:
        flipped = (laterality or "").upper() == "R"
    if flipped:
        values = np.ascontiguousarray(Flip(spatial_axis=1)(values[None])[0].numpy())
    # Segment in the canonical orientation, so a mirrored image gives the same input.
    # The crop keeps the whole breast: in a dense breast Otsu's mask leaves out the fatty
    # periphery, and a lesion there would be cut off (`_breast_box`).
    mask, surround, whole = breast_masks(values, (0, SKIN_LINE_GROW), whole=True)
    norm = normalise_intensity(values, mask, percentiles)
    # Air beyond the breast's skin line: burned-in labels and markers would otherwise
    # reach the classifier as bright objects it never saw in training.
    norm[~surround] = 0.0
    H, W = norm.shape
    crop, resized, pad = _fit(_breast_box(mask, margin, whole), (H, W), (rows_in, cols_in), pixel_aspect)
    geom = Geometry((H, W), bool(flipped), crop, resized, pad, (rows_in, cols_in))
    # Resample the already flipped image: reuse Geometry with flipped=False on it.
    same = Geometry((H, W), False, geom.crop, geom.resized, geom.pad, geom.input_size)
    image = torch.from_numpy(same.to_input(np.ascontiguousarray(norm), mode="area")).clamp_(0, 1)
    breast = torch.from_numpy(same.to_input(np.ascontiguousarray(mask), mode="area"))
    return Preprocessed(image[None], breast[None], geom)
