"""Driving OHIF (3.13) in the browser the way a user does, and reading its state.

OHIF exposes its services on the page (`window.services`, `window.commandsManager`);
everything read here goes through them. Series are opened as a user opens them: a
double-click on the series' thumbnail in the study browser (`[data-series=N]`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .browser import Chromium

VIEWPORT_ID = "default"     # the single viewport of the `viewer` mode's default layout

_SEGMENTATIONS_JS = """
const s = window.services && window.services.segmentationService;
if (!s) return null;
const reps = s.getSegmentationRepresentations(arguments[0]) || [];
return s.getSegmentations().map(g => {
  const rep = reps.find(r => r.segmentationId === g.segmentationId);
  return {
    id: g.segmentationId, label: g.label,
    segments: Object.values(g.segments || {}).filter(Boolean).map(x => ({index: x.segmentIndex, label: x.label})),
    representation: rep ? {type: rep.type, visible: rep.visible, active: rep.active,
                           segments: Object.fromEntries(Object.entries(rep.segments || {}).map(
                             ([k, v]) => [k, {visible: v.visible, color: v.color}]))} : null,
  };
});
"""

# Canvas pixel of image index (column, row) corners, from the Cornerstone viewport that
# shows the image: the affine map image -> viewport canvas.
_GEOMETRY_JS = """
const vp = window.services.cornerstoneViewportService.getCornerstoneViewport(arguments[0]);
if (!vp || !vp.getImageData || !vp.getImageData()) return null;
const data = vp.getImageData();
const rect = vp.canvas.getBoundingClientRect();
const sx = vp.canvas.width / rect.width, sy = vp.canvas.height / rect.height;
const toCanvas = (c, r) => {
  const p = vp.worldToCanvas(data.imageData.indexToWorld([c, r, 0]));
  return [p[0] * sx, p[1] * sy];
};
return {origin: toCanvas(0, 0), col: toCanvas(1, 0), row: toCanvas(0, 1),
        size: [vp.canvas.width, vp.canvas.height]};
"""


@dataclass
class Geometry:
    """Affine map from source image (row, column) to viewport canvas (y, x) pixels."""

    origin: np.ndarray      # (x, y) of the corner of image pixel (0, 0)
    per_col: np.ndarray     # (dx, dy) per column step
    per_row: np.ndarray     # (dx, dy) per row step
    size: tuple[int, int]   # canvas width, height
    rows: int
    columns: int

    def image_index(self, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) image coordinates (float) of canvas pixel centres."""
        m = np.array([[self.per_col[0], self.per_row[0]], [self.per_col[1], self.per_row[1]]])
        inv = np.linalg.inv(m)
        dx, dy = xs + 0.5 - self.origin[0], ys + 0.5 - self.origin[1]
        return inv[1, 0] * dx + inv[1, 1] * dy, inv[0, 0] * dx + inv[0, 1] * dy

    def project(self, mask: np.ndarray) -> np.ndarray:
        """`mask` (source grid) as laid out on the canvas; False outside the image."""
        width, height = self.size
        ys, xs = np.mgrid[0:height, 0:width]
        row, col = self.image_index(ys.astype(float), xs.astype(float))
        r, c = np.floor(row).astype(int), np.floor(col).astype(int)
        inside = (r >= 0) & (r < self.rows) & (c >= 0) & (c < self.columns)
        out = np.zeros(ys.shape, bool)
        out[inside] = mask[r[inside], c[inside]]
        return out

    @property
    def scale(self) -> float:
        """Canvas pixels per image pixel."""
        return float(np.hypot(*self.per_col))


class OverlayError(AssertionError):
    """OHIF did not load or show an overlay."""


class OhifPage:
    def __init__(self, browser: Chromium):
        self.browser = browser
        self.driver = browser.driver

    def open_study(self, url: str, n_display_sets: int, timeout: float = 120, fail_on_console: bool = True) -> int:
        """Load the viewer route and wait until the study's display sets are known and the
        first image has been rendered in the viewport. Returns a console mark taken
        before loading; with `fail_on_console`, a console error ends the wait at once."""
        mark = self.browser.console_mark()
        self.driver.get(url)
        deadline = time.monotonic() + timeout
        ready = """const s = window.services;
            if (!s || s.displaySetService.getActiveDisplaySets().length < arguments[0]) return false;
            const vp = s.cornerstoneViewportService.getCornerstoneViewport(arguments[1]);
            return !!vp && vp.viewportStatus === 'rendered' && !!vp.getImageData && !!vp.getImageData();"""
        while not self.driver.execute_script(ready, n_display_sets, VIEWPORT_ID):
            errors = self.errors_since(mark) if fail_on_console else []
            if errors:
                raise OverlayError(f"console errors while opening the study: {errors}")
            if time.monotonic() >= deadline:
                raise OverlayError(f"study not displayed within {timeout:g} s; console errors: {self.errors_since(mark)}")
            time.sleep(0.25)
        return mark

    def wait_rendered(self, timeout: float = 60) -> None:
        self.browser.wait_js(
            """const vp = window.services.cornerstoneViewportService.getCornerstoneViewport(arguments[0]);
               return !!vp && vp.viewportStatus === 'rendered' && !!vp.getImageData && !!vp.getImageData()""",
            timeout, 0.25, "viewport rendered", VIEWPORT_ID)

    def display_sets(self) -> list[dict]:
        return self.driver.execute_script("""
            return window.services.displaySetService.getActiveDisplaySets().map(d => ({
              uid: d.displaySetInstanceUID, modality: d.Modality, series: d.SeriesInstanceUID,
              seriesNumber: d.SeriesNumber, description: d.SeriesDescription,
              handler: d.SOPClassHandlerId, overlay: !!d.isOverlayDisplaySet,
              referenced: d.referencedDisplaySetInstanceUID || null, unsupported: d.unsupported || false}));""")

    def open_series(self, series_number: int) -> None:
        """Double-click the series' entry in the study browser (as a user opens it)."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By

        element = self.driver.find_element(By.CSS_SELECTOR, f'[data-series="{series_number}"]')
        ActionChains(self.driver).double_click(element).perform()

    def notifications(self) -> list[str]:
        """Texts of the toasts OHIF shows now."""
        return self.driver.execute_script("""
            return Array.from(document.querySelectorAll('[data-sonner-toast]')).map(t => t.innerText);""")

    def errors_since(self, mark: int) -> list[str]:
        """Console errors (level SEVERE: console.error, uncaught exceptions, failed
        requests) logged after `mark` (from browser.console_mark())."""
        return [e["message"] for e in self.browser.console()[mark:] if e["level"] == "SEVERE"]

    def viewport_actors(self) -> list[str]:
        """What the viewport renders: the referenced id of each actor (image volume, overlays)."""
        return self.driver.execute_script("""
            const vp = window.services.cornerstoneViewportService.getCornerstoneViewport(arguments[0]);
            return vp ? vp.getActors().map(a => String(a.referencedId || a.uid)) : [];""", VIEWPORT_ID)

    def viewport_display_sets(self) -> list[str]:
        return self.driver.execute_script("""
            const v = window.services.viewportGridService.getState().viewports.get(arguments[0]);
            return v ? v.displaySetInstanceUIDs : [];""", VIEWPORT_ID)

    def measurements(self) -> list[dict]:
        return self.driver.execute_script("""
            return window.services.measurementService.getMeasurements().map(m => ({
              label: m.label, toolName: m.toolName, displaySetInstanceUID: m.displaySetInstanceUID}));""")

    def segmentations(self) -> list[dict]:
        return self.driver.execute_script(_SEGMENTATIONS_JS, VIEWPORT_ID) or []

    def wait_segmentation(self, label: str, timeout: float = 60, console_mark: int | None = None) -> dict:
        """The segmentation named `label` once it is loaded and its representation in the
        viewport is visible; OverlayError (with OHIF's state) otherwise. With
        `console_mark`, a console error logged after it ends the wait at once
        (OHIF shows "Loading SEG..." forever when a SEG fails to load)."""
        deadline = time.monotonic() + timeout
        while True:
            if console_mark is not None:
                errors = self.errors_since(console_mark)
                if errors:
                    raise OverlayError(f"console errors while loading {label!r}: {errors}")
            found = [s for s in self.segmentations() if s["label"] == label]
            if found and found[0]["representation"] and found[0]["representation"]["visible"]:
                return found[0]
            if time.monotonic() >= deadline:
                raise OverlayError(f"segmentation {label!r} not visible within {timeout:g} s; "
                                   f"OHIF has {self.segmentations()!r}")
            time.sleep(0.25)

    def geometry(self, rows: int, columns: int) -> Geometry:
        g = self.driver.execute_script(_GEOMETRY_JS, VIEWPORT_ID)
        if g is None:
            raise RuntimeError("no image in the viewport")
        origin = np.array(g["origin"], float)
        return Geometry(origin=origin, per_col=np.array(g["col"], float) - origin,
                        per_row=np.array(g["row"], float) - origin,
                        size=(int(g["size"][0]), int(g["size"][1])), rows=rows, columns=columns)

    def max_3d_texture_size(self) -> int:
        """WebGL2 MAX_3D_TEXTURE_SIZE of this browser: OHIF renders fusions (Parametric Map
        over the image) as volumes, which must fit in a 3D texture."""
        return int(self.driver.execute_script("""
            const gl = document.createElement('canvas').getContext('webgl2');
            return gl ? gl.getParameter(gl.MAX_3D_TEXTURE_SIZE) : 0;"""))

    def wait_pixels(self, accept, timeout: float = 30, interval: float = 0.5):
        """Poll the rendered viewport until `accept(pixels)` returns something truthy (Cornerstone
        may report 'rendered' before the canvas shows the image); returns the last
        (pixels, result), accepted or not when `timeout` ran out."""
        deadline = time.monotonic() + timeout
        while True:
            pixels = self.viewport_pixels()
            result = accept(pixels)
            if result or time.monotonic() >= deadline:
                return pixels, result
            time.sleep(interval)

    def viewport_pixels(self) -> np.ndarray:
        """What the viewport renders (image and overlays, without OHIF's HTML annotations,
        toasts or borders): its canvas read back as RGB."""
        import base64
        import io

        from PIL import Image

        url = self.driver.execute_script("""
            const vp = window.services.cornerstoneViewportService.getCornerstoneViewport(arguments[0]);
            return vp ? vp.canvas.toDataURL('image/png') : null;""", VIEWPORT_ID)
        if not url:
            raise RuntimeError("no viewport canvas")
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))
