"""overlay.png: the mammogram with the saliency as a colour overlay and the region outlined,
square pixels in mm, and optionally a caption strip below it saying what the picture shows."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from dicom_out.model import probability_text

MAX_SIDE = 1600  # overlays are for looking at: keep them about a megabyte
CYAN, GREEN = (0, 255, 255), (0, 255, 0)


def _colormap(v: np.ndarray) -> np.ndarray:
    """Black-red-yellow for v in [0,1], ending in saturated yellow: a scale that ended in white
    (the old 'hot' map) blended its strongest saliency into bright, colourless tissue."""
    r = np.clip(2 * v, 0, 1)
    g = np.clip(2 * v - 1, 0, 1)
    return np.stack([r, g, np.zeros_like(r)], -1)


def render(image: np.ndarray, saliency: np.ndarray, region: np.ndarray, alpha: float = 0.55,
           lesion: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8: image (float [0,1], display polarity) blended with the saliency; a known lesion's
    edge (evaluation only) in green, then the region's edge in cyan over it, so a region on a
    small lesion stays visible."""
    if image.shape != saliency.shape or image.shape != region.shape:
        raise ValueError(f"image {image.shape}, saliency {saliency.shape} and region {region.shape} differ in shape")
    saliency = np.clip(saliency, 0, 1).astype(np.float32)
    grey = np.repeat(np.clip(image, 0, 1).astype(np.float32)[..., None], 3, -1)
    weight = alpha * saliency[..., None]
    rgb = (1 - weight) * grey + weight * _colormap(saliency)
    width = max(1, int(round(max(image.shape) / 600)))
    if lesion is not None:
        rgb[lesion & ~ndimage.binary_erosion(lesion, iterations=width)] = np.divide(GREEN, 255)
    rgb[region & ~ndimage.binary_erosion(region, iterations=width)] = np.divide(CYAN, 255)
    return (rgb * 255).round().astype(np.uint8)


def picture_size(shape: tuple, max_side: int = MAX_SIDE, aspect: float = 1.0,
                 height: int | None = None) -> tuple[int, int]:
    """(rows, columns) of a picture of a `shape` image whose pixels are `aspect` (column / row
    size) wide, with square pixels: at most `max_side` on its long side without sampling finer
    than the source's finer direction, or exactly `height` rows (a thumbnail)."""
    rows, cols = shape[0] / min(1.0, aspect), shape[1] * aspect / min(1.0, aspect)
    scale = height / rows if height else min(1.0, max_side / max(rows, cols))
    return max(1, round(rows * scale)), max(1, round(cols * scale))


def shrink(image: np.ndarray, saliency: np.ndarray, region: np.ndarray, lesion: np.ndarray | None,
           max_side: int, aspect: float = 1.0, height: int | None = None) -> tuple:
    """The inputs resampled to picture_size (square pixels in mm), by area averages; a region or
    lesion keeps every pixel it touches, so a small one stays visible. Rendering at the source size
    first took 1.1 GB more than the explanation itself and 7 s for a 4096x3328 mammogram."""
    rows, cols = picture_size(image.shape, max_side, aspect, height)
    if (rows, cols) == image.shape[:2]:
        return image, saliency, region, lesion

    def area(a):
        return cv2.resize(np.asarray(a, np.float32), (cols, rows), interpolation=cv2.INTER_AREA)
    return area(image), area(saliency), area(region) > 0, None if lesion is None else area(lesion) > 0


def caption(method: str, score: float, score_after: float | None = None, withheld: str = "",
            log_odds: tuple[float, float] | None = None, caveat: str = "") -> str:
    """What an overlay shows: the method, p before and, for a region shown (`score_after` given),
    p after replacing it; else why no region is shown (a map peaks at 1 whatever the score).
    Where p reads the same before and after (saturated), `log_odds` (before, after) says the change.
    A caveat on the call (pipeline.CAVEAT_IMPLANT) ends it."""
    text = _caption(method, score, score_after, withheld, log_odds)
    return f"{text}; caution: {caveat}" if caveat else text


def _caption(method, score, score_after, withheld, log_odds) -> str:
    before = probability_text(score)
    text = f"{method}: classifier p {before}"
    if withheld:
        return f"{text}; no region shown: {withheld}"
    if score_after is None:
        return f"{text}; no region shown"
    after = probability_text(score_after)
    text += f", p {after} after replacing the cyan region with healthy tissue"
    if before == after and log_odds and all(map(math.isfinite, log_odds)):
        text += f" (log-odds {log_odds[0]:.2f} -> {log_odds[1]:.2f})"
    return text


def described(result) -> str:
    """The caption for a pipeline Result as shown (pipeline.presented): p after only where a region
    is drawn, since an empty region's "after" is the score itself."""
    after = result.score_after_deletion if result.region.any() else None
    return caption(result.method, result.score, after, result.withheld, (result.logit, result.logit_after),
                   result.caveat)


def save(path: Path, image: np.ndarray, saliency: np.ndarray, region: np.ndarray,
         lesion: np.ndarray | None = None, caption: str | None = None, aspect: float = 1.0) -> Path:
    """overlay.png at most MAX_SIDE on its long side, square pixels in mm (`aspect`: the source's
    column / row pixel size, SourceImage.pixel_aspect); with a `caption`, a strip below it says what it shows."""
    image, saliency, region, lesion = shrink(image, saliency, region, lesion, MAX_SIDE, aspect)
    rgb = render(image, saliency, region, lesion=lesion)
    if caption is not None:
        rgb = captioned(rgb, caption, region=bool(region.any()), lesion=lesion is not None and bool(lesion.any()))
    # zlib's default level: optimize=True made the file 19 % smaller and took 3.4 s at 1600 px
    Image.fromarray(rgb).save(path)
    return path


def captioned(rgb: np.ndarray, text: str, region: bool, lesion: bool) -> np.ndarray:
    """`rgb` above a black strip: `text` wrapped to its width, then a colour bar of the saliency
    (as blended over mid-grey tissue) and a key to the outlines drawn; type scaled to the width."""
    width = rgb.shape[1]
    font = _font(max(12, width // 50))
    line = _line_height(font)
    pad = line // 2
    lines = _wrap(text, font, width - 2 * pad)
    key = [("saliency 0 .. 1", (255, 255, 255))] + [(t, c) for t, c, drawn in
                                                   (("cyan: salient region", CYAN, region),
                                                    ("green: true lesion", GREEN, lesion)) if drawn]
    bar = _colour_bar(4 * line, line * 2 // 3)
    places = _flow([bar.width + pad + _text_width(font, key[0][0])] + [_text_width(font, t) for t, _ in key[1:]],
                   width - 2 * pad, 2 * pad)
    strip = Image.new("RGB", (width, 2 * pad + line * (len(lines) + places[-1][1] + 1)))
    draw = ImageDraw.Draw(strip)
    for i, t in enumerate(lines):
        draw.text((pad, pad + i * line), t, fill=(255, 255, 255), font=font)
    top = pad + len(lines) * line
    for i, ((t, colour), (x, row)) in enumerate(zip(key, places)):
        y = top + row * line
        if i == 0:  # the colour bar's label: the bar goes before it
            strip.paste(bar, (pad + x, y + (line - bar.height) // 2))
            x += bar.width + pad
        draw.text((pad + x, y), t, fill=colour, font=font)
    return np.concatenate([rgb, np.asarray(strip)], axis=0)


def _font(size: int):
    """Pillow's default font at `size` px (a TrueType face since Pillow 10.1 with FreeType), else its
    fixed bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _line_height(font) -> int:
    top, bottom = font.getbbox("Hgy|")[1::2]
    return math.ceil(1.4 * max(bottom, bottom - top))


def _text_width(font, text: str) -> int:
    return math.ceil(font.getlength(text))


def _wrap(text: str, font, width: int) -> list[str]:
    """`text` in lines at most `width` px wide, broken between words (a longer word stays whole)."""
    lines: list[str] = []
    for word in text.split():
        if lines and _text_width(font, f"{lines[-1]} {word}") <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def _flow(widths: list[int], width: int, gap: int) -> list[tuple[int, int]]:
    """(x, line) of items `widths` wide laid left to right, `gap` apart, a new line where one
    would pass `width`."""
    places, x, row = [], 0, 0
    for w in widths:
        if x and x + w > width:
            x, row = 0, row + 1
        places.append((x, row))
        x += w + gap
    return places


def _colour_bar(width: int, height: int) -> Image.Image:
    """The saliency 0 .. 1, left to right, as render blends it over mid-grey."""
    ramp = np.tile(np.linspace(0, 1, width, dtype=np.float32), (height, 1))
    return Image.fromarray(render(np.full_like(ramp, 0.5), ramp, np.zeros(ramp.shape, bool)))
