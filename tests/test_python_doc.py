"""docs/python.md's examples run as written: every ```python block, in order, in one
namespace, in a temporary folder holding what the page reads (config.yaml, mammogram.dcm,
mammogram.npy, made here from a small phantom), and what they produce is checked, so the
page cannot fall behind the API it shows."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
import yaml

from cfia.config import load
from cfia.install import SHIPPED_CONFIG
from explain.perturbation import InpaintPerturbation
from phantom.dicom import to_dataset
from phantom.generate import PhantomOptions, make_one

pytestmark = pytest.mark.pipeline

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "python.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)
# Few passes and one tile grid, for time: set in the config the page loads and, in the page's code,
# as the bare explainer's arguments (the only changes made to it; each must show config.yaml's value).
PASSES = 4
EDITS = {"max_passes=50": f"max_passes={PASSES}", "tilings=5": "tilings=1"}
OBJECTS = ("fractional_seg", "binary_seg", "parametric_map", "sr", "gsps")


def blocks(text: str) -> list[tuple[int, str]]:
    """(first line in the page, code) of each ```python block."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in BLOCK.finditer(text)]


def edited(text: str, edits: dict) -> str:
    for old, new in edits.items():
        assert text.count(old) == 1, f"docs/python.md: expected {old!r} once, found it {text.count(old)} times"
        text = text.replace(old, new)
    return text


def run_blocks(text: str) -> dict:
    """Exec the blocks in order in one namespace; a failure names its block's line in the page
    (each block compiled at its own line numbers, so tracebacks point into the page)."""
    namespace: dict = {"__name__": "python_doc"}
    for line, code in blocks(text):
        try:
            exec(compile("\n" * (line - 1) + code, str(PAGE), "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"docs/python.md: the block at line {line} fails: "
                                 f"{type(exc).__name__}: {exc}") from exc
    return namespace


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """What the page reads: a positive 256x208 phantom as DICOM and as a bare array, and the
    shipped config with absolute model paths, a budget of PASSES and one tile grid."""
    out = tmp_path_factory.mktemp("python-doc")
    mg = make_one(31, 3, PhantomOptions(size=(256, 208), positive_fraction=1.0, lesion_kinds=("circumscribed",)))
    to_dataset(mg, "doc:3", 3).save_as(out / "mammogram.dcm", enforce_file_format=True)
    np.save(out / "mammogram.npy", mg.pixels)
    raw = yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8"))
    for key in ("classifier", "inpainter"):
        raw["models"][key]["path"] = str(SHIPPED_CONFIG.parent / raw["models"][key]["path"])
    raw["explainer"].update(max_passes=PASSES, tilings=1)
    (out / "config.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def ran(folder) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        return run_blocks(edited(PAGE.read_text(encoding="utf-8"), EDITS))


def test_the_page_has_its_blocks():
    assert len(blocks(PAGE.read_text(encoding="utf-8"))) >= 5


def test_the_pipeline_example_explains_on_the_source_grid(ran, folder):
    source = pydicom.dcmread(folder / "mammogram.dcm")
    for result in (ran["result"], ran["shown"]):
        _check_map(result.saliency, (source.Rows, source.Columns))
        assert result.region.shape == (source.Rows, source.Columns) and result.region.dtype == bool
        assert 1 <= result.passes <= PASSES and result.seconds > 0
        assert 0 <= result.score <= 1 and 0 <= result.score_after_deletion <= 1
    assert ran["result"].method == "cf"


def test_the_pipeline_example_writes_what_cfia_explain_writes(ran, folder):
    source = pydicom.dcmread(folder / "mammogram.dcm")
    assert np.array_equal(np.load(folder / "out" / "saliency.npy"), ran["shown"].saliency)
    assert (folder / "out" / "overlay.png").stat().st_size > 1000
    assert set(ran["objects"]) == set(OBJECTS)
    for kind in OBJECTS:
        written = pydicom.dcmread(folder / "out" / f"{kind}.dcm")
        assert written.StudyInstanceUID == source.StudyInstanceUID
        assert written.SOPInstanceUID == ran["objects"][kind].SOPInstanceUID


def test_the_bare_explainer_example_maps_back_to_the_image(ran):
    found, pixels = ran["found"], ran["pixels"]
    assert found.mask.shape == found.saliency.shape == (512, 352)
    assert 1 <= found.passes <= PASSES and 0 <= found.score <= 1
    _check_map(ran["saliency"], pixels.shape)
    assert ran["region"].shape == pixels.shape and ran["region"].dtype == bool


def test_the_bare_explainers_arguments_are_config_yamls(ran):
    """The page says the bare explainer it builds is config.yaml's: compare it with the pipeline's
    (the test's config differs from the shipped one in EDITS alone) and its score functions."""
    shipped = load(SHIPPED_CONFIG).explainer
    assert set(EDITS) == {f"max_passes={shipped.max_passes}", f"tilings={shipped.tilings}"}
    bare, configured = ran["explainer"], ran["configured"]
    differ = {"score_fn", "report_fn", "perturbation", "score_region"}
    assert {k: v for k, v in vars(bare).items() if k not in differ} == \
        {k: v for k, v in vars(configured).items() if k not in differ}
    assert {k: v for k, v in vars(bare.perturbation).items() if k != "inpainter"} == \
        {k: v for k, v in vars(configured.perturbation).items() if k != "inpainter"}
    x = ran["x"].to(ran["pipeline"].device)
    for ours, theirs in ((bare.score_fn, configured.score_fn), (bare.report_fn, configured.report_fn)):
        assert torch.allclose(ours(x.cpu()).cpu(), theirs(x).cpu(), atol=1e-5)
    assert configured.score_region is False
    own, page = inspect.signature(InpaintPerturbation).parameters, PAGE.read_text(encoding="utf-8")
    assert all(f"{k}={own[k].default}" in page for k in ("tile", "tilings", "refresh_every"))  # the page's claim


def test_a_broken_block_fails_and_names_its_line(folder, monkeypatch):
    """The harness itself: a misspelt call fails the run (here at once, in the first block)."""
    text = PAGE.read_text(encoding="utf-8")
    first = blocks(text)[0][0]
    monkeypatch.chdir(folder)
    with pytest.raises(AssertionError, match=rf"block at line {first} fails: AttributeError"):
        run_blocks(text.replace("config.load(", "config.lod(", 1))


def _check_map(saliency, shape) -> None:
    assert saliency.shape == tuple(shape) and saliency.dtype == np.float32
    assert np.isfinite(saliency).all() and saliency.min() >= 0 and saliency.max() <= 1
