"""overlay.png's caption: a strip below the picture (never over the breast) saying the method, p
before and after replacing the region shown, or why no region is shown, with a colour bar and a
key to the outlines drawn; legible at 416 and 1600 px wide, and written by `cfia explain`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from PIL import Image

from cfia import overlay
from cfia.pipeline import WITHHELD_NEGATIVE, WITHHELD_NOT_LOWER
from phantom.dicom import to_dataset
from phantom.generate import PhantomOptions, make_one

ROOT = Path(__file__).resolve().parent.parent


def _picture(rows=512, cols=416, lesion=True):
    image = np.tile(np.linspace(0.2, 0.8, cols, dtype=np.float32), (rows, 1))
    saliency = np.zeros((rows, cols), np.float32)
    saliency[rows // 3:rows // 2, cols // 3:cols // 2] = 1.0
    region = saliency > 0.5
    return image, saliency, region, (region.copy() if lesion else None)


def _read(path) -> np.ndarray:
    with Image.open(path) as png:
        return np.asarray(png.convert("RGB"))


def _has(rgb, colour) -> bool:
    return bool((rgb == colour).all(-1).any())


def test_the_caption_says_what_is_shown_and_what_is_not():
    assert overlay.caption("cf", 0.934, 0.118) == ("cf: classifier p 0.93, p 0.12 after replacing the cyan region "
                                                   "with healthy tissue")
    negative = overlay.caption("gradcam", 0.19, None, WITHHELD_NEGATIVE)
    assert negative == "gradcam: classifier p 0.19; no region shown: the classifier's call is negative"
    assert "no region shown: replacing the region did not lower" in overlay.caption("cf", 0.9, None,
                                                                                    WITHHELD_NOT_LOWER)


@pytest.mark.parametrize("p, text", [(0.934, "0.93"), (0.005, "0.01"), (0.9997, "0.99970"), (0.99512, "0.9951"),
                                     (0.0042, "0.0042"), (1.0, "> 0.999999"), (0.0, "< 0.000001"),
                                     # a negative call must not round up to the threshold
                                     (0.4996, "0.49960"), (0.4951, "0.4951"), (0.49999999, "0.499999"),
                                     (0.5, "0.50"), (0.5004, "0.50"), (0.494, "0.49")])
def test_p_keeps_the_digits_that_tell_it_from_0_or_1_and_from_the_threshold(p, text):
    from dicom_out.model import probability_text

    assert probability_text(p) == text


def test_one_call_threshold():
    from cfia.config import CALL_THRESHOLD
    from dicom_out.model import CALL_THRESHOLD as SAID

    assert CALL_THRESHOLD == SAID


def test_a_sure_call_that_fell_does_not_read_as_unchanged():
    text = overlay.caption("cf", 0.99973, 0.99512)
    assert "p 0.99973, p 0.9951 after" in text


def test_a_saturated_p_that_reads_the_same_after_says_how_the_log_odds_fell():
    region = np.ones((2, 2), bool)
    sure = SimpleNamespace(method="cf", score=1.0, score_after_deletion=1.0, region=region, withheld="",
                           logit=19.0, logit_after=16.5, caveat="")
    assert overlay.described(sure).endswith("p > 0.999999 after replacing the cyan region with healthy tissue "
                                            "(log-odds 19.00 -> 16.50)")
    assert "log-odds" not in overlay.caption("cf", 0.9, 0.2, log_odds=(2.2, -1.4))  # p says it already


def test_a_p_that_is_not_a_number_is_written_not_a_crash():
    assert overlay.caption("cf", float("nan")) == "cf: classifier p nan; no region shown"


def test_the_caption_of_a_result_shows_p_after_only_for_a_region_drawn():
    region = np.zeros((4, 4), bool)
    region[1, 1] = True
    drawn = SimpleNamespace(method="cf", score=0.9, score_after_deletion=0.2, region=region, withheld="",
                            logit=2.2, logit_after=-1.4, caveat="")
    assert overlay.described(drawn) == overlay.caption("cf", 0.9, 0.2)
    empty = SimpleNamespace(method="cf", score=0.9, score_after_deletion=0.2, region=region & False, withheld="",
                            logit=2.2, logit_after=-1.4, caveat="")
    assert overlay.described(empty) == "cf: classifier p 0.90; no region shown"
    withheld = SimpleNamespace(method="cf", score=0.3, score_after_deletion=0.3, region=region & False,
                               withheld=WITHHELD_NEGATIVE, logit=-0.8, logit_after=-0.8, caveat="")
    assert overlay.described(withheld) == overlay.caption("cf", 0.3, None, WITHHELD_NEGATIVE)


@pytest.mark.parametrize("rows, cols", [(512, 416), (1600, 1300)])
def test_the_strip_is_below_the_picture_and_keys_what_is_drawn(tmp_path, rows, cols):
    parts = _picture(rows, cols)
    plain = _read(overlay.save(tmp_path / "plain.png", *parts))
    rgb = _read(overlay.save(tmp_path / "captioned.png", *parts, caption=overlay.caption("cf", 0.93, 0.12)))
    assert rgb.shape[1] == cols and np.array_equal(rgb[:rows], plain)   # the picture as it was
    strip = rgb[rows:]
    assert 2 * (cols // 50) < strip.shape[0] < rows / 3                # type scaled to the width
    assert _has(strip, overlay.CYAN) and _has(strip, overlay.GREEN)    # the key, in the outlines' colours
    bar = (strip[..., 0].astype(int) - strip[..., 2] > 100) & (strip[..., 1] > 150)
    assert bar.any()                                                     # the colour bar reaches yellow
    assert not strip[:, -2:].any() and not strip[-2:].any()             # nothing runs off the edge


def test_a_withheld_region_has_no_key_to_outlines(tmp_path):
    image, saliency, region, _ = _picture(lesion=False)
    text = overlay.caption("cf", 0.19, None, WITHHELD_NEGATIVE)
    rgb = _read(overlay.save(tmp_path / "o.png", image, saliency, np.zeros_like(region), caption=text))
    strip = rgb[512:]
    assert strip.any() and not _has(strip, overlay.CYAN) and not _has(strip, overlay.GREEN)


def test_a_long_caption_wraps_at_416_px():
    rgb = overlay.captioned(np.zeros((512, 416, 3), np.uint8), "cf: " + "withheld " * 30, region=True, lesion=True)
    assert rgb.shape[0] > 512 + 5 * 12 and not rgb[512:, -2:].any()


@pytest.mark.pipeline
def test_explain_writes_a_captioned_overlay(tmp_path):
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["explainer"]["max_passes"] = 5
    for key in ("classifier", "inpainter"):
        raw["models"][key]["path"] = str(ROOT / raw["models"][key]["path"])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    ds = to_dataset(make_one(31, 3, PhantomOptions(size=(512, 416), positive_fraction=1.0)), "t:3", 3)
    ds.save_as(tmp_path / "mg.dcm", enforce_file_format=True)
    run = subprocess.run([sys.executable, "-m", "cfia.cli", "explain", str(tmp_path / "mg.dcm"), "--out",
                          str(tmp_path / "out"), "--config", str(tmp_path / "config.yaml")],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr
    json.loads(run.stdout.strip().splitlines()[-1])
    rgb = _read(tmp_path / "out" / "overlay.png")
    assert rgb.shape[1] == 416 and rgb.shape[0] > 512 and rgb[512:].any() and not rgb[512:, -2:].any()
