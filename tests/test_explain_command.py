"""`cfia explain` and `cfia evaluate` with the shipped models, end to end on phantoms."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
import yaml

from cfia.cli import load_config, main
from cfia.dicom_io import from_dataset
from cfia.pipeline import Pipeline
from explain import metrics
from explain.region import sufficient_region
from phantom.dicom import to_dataset
from phantom.generate import PhantomOptions, make_one

ROOT = Path(__file__).resolve().parent.parent
MASSES = PhantomOptions(size=(512, 416), positive_fraction=1.0, lesion_kinds=("circumscribed",))


@pytest.fixture(scope="module")
def pipeline():
    cfg = load_config(None)
    return Pipeline(replace(cfg, explainer=replace(cfg.explainer, max_passes=20)))


@pytest.fixture(scope="module")
def default_pipeline():
    return Pipeline(load_config(None))


@pytest.mark.parametrize("index", [3, 7])
def test_saliency_lands_on_a_right_breast_lesion_in_source_pixels(pipeline, index):
    """Right breasts are flipped, cropped and resized for the classifier; the map must
    come back onto the lesion's own source pixels, the same for MONOCHROME1 and 2."""
    mg = make_one(31, index, MASSES)
    assert mg.laterality == "R"
    maps = []
    for photometric in ("MONOCHROME2", "MONOCHROME1"):
        res = pipeline.explain(from_dataset(to_dataset(mg, f"t:{index}", index, photometric=photometric)), "cf")
        assert res.saliency.shape == mg.pixels.shape and res.saliency.dtype == np.float32
        assert metrics.pointing_game(res.saliency, mg.mask, tolerance_px=4, smooth_px=4)
        assert metrics.energy_inside(res.saliency, mg.mask) > 10 * mg.mask.mean()
        assert res.score > 0.5 and res.score_after_deletion < res.score
        assert res.passes <= 20
        maps.append(res.saliency)
    assert np.array_equal(maps[0], maps[1])


@pytest.mark.parametrize("index", [7, 3])  # 3 fell short (p 0.65 after) until the breast's own crop box
def test_the_region_takes_the_call_away_at_the_default_budget(default_pipeline, index):
    """The salient region holds the evidence: replacing it ends the positive call."""
    res = default_pipeline.explain(
        from_dataset(to_dataset(make_one(31, index, MASSES), f"t:{index}", index)), "cf")
    assert res.score > 0.5 > res.score_after_deletion


@pytest.mark.parametrize("score", ["logit", "cross_entropy"])
def test_scores_are_reported_as_probabilities_whatever_the_optimiser_drives_down(pipeline, score):
    e = replace(pipeline.cfg.explainer, score=score)
    other = Pipeline(replace(pipeline.cfg, explainer=e))
    src = from_dataset(to_dataset(make_one(31, 7, MASSES), "t:7", 7))
    res = other.explain(src, "cf")
    assert res.score == pytest.approx(pipeline.explain(src, "cf").score)
    assert 0.0 <= res.score_after_deletion <= 1.0
    assert res.score > 0.5 > res.score_after_deletion


def test_inpainter_options_from_config_reach_the_inpainter_and_cf_still_finds_the_lesion(pipeline):
    cfg = pipeline.cfg
    inp = replace(cfg.models.inpainter, texture_match=True, noise_scale=0.5)
    matched = Pipeline(replace(cfg, models=replace(cfg.models, inpainter=inp)))
    assert matched.inpainter.texture_match and not pipeline.inpainter.texture_match
    assert (matched.inpainter.noise_scale, pipeline.inpainter.noise_scale) == (0.5, 1.0)
    reseeded = Pipeline(replace(cfg, explainer=replace(cfg.explainer, seed=3)))
    assert (reseeded.inpainter.seed, pipeline.inpainter.seed) == (3, 0)  # explainer.seed drives the fill's noise
    mg = make_one(31, 7, MASSES)
    res = matched.explain(from_dataset(to_dataset(mg, "t:7", 7)), "cf")
    assert metrics.pointing_game(res.saliency, mg.mask, tolerance_px=4, smooth_px=4)
    assert res.score > 0.5 > res.score_after_deletion


@pytest.mark.parametrize("method", ["cf", "blur"])
def test_the_change_map_is_reported_with_its_own_region(pipeline, method):
    """explainer.saliency: the same optimisation (passes) whichever map is reported; the
    change map is another map, on the lesion, with more of its energy inside it on this
    image, and its region (the map above change_region_threshold) takes the call away."""
    other = {m: Pipeline(replace(pipeline.cfg, explainer=replace(pipeline.cfg.explainer, saliency=m)))
             for m in ("mask", "change")}
    mg = make_one(31, 7, MASSES)
    src = from_dataset(to_dataset(mg, "t:7", 7))
    plain, changed = (other[m].explain(src, method) for m in ("mask", "change"))
    assert plain.passes == changed.passes
    # Normalised to 1 on the input grid; resampled onto the source, the peak may fall between samples.
    assert not np.array_equal(plain.saliency, changed.saliency) and changed.saliency.max() > 0.95
    assert metrics.pointing_game(changed.saliency, mg.mask, tolerance_px=4, smooth_px=4)
    assert metrics.energy_inside(changed.saliency, mg.mask) > metrics.energy_inside(plain.saliency, mg.mask)
    threshold = other["change"].cfg.explainer.change_region_threshold
    assert not (changed.region & (changed.saliency <= threshold)).any()
    assert changed.region.any() and changed.score_after_deletion < 0.5 < changed.score


@pytest.mark.parametrize("method", ["cf", "blur", "gradcam"])
def test_every_method_reports_its_region_replaced_by_inpainted_tissue(pipeline, method):
    """score_after_deletion is one measure whatever the method, so the methods compare:
    not blur's own deletion (a blurred region), nor cf's optimisation's."""
    src = from_dataset(to_dataset(make_one(31, 7, MASSES), "t:7", 7))
    res = pipeline.explain(src, method)
    assert res.region.any()
    assert res.score_after_deletion == pytest.approx(pipeline.score_without(src, res.region), abs=1e-6)


def _healthy_patch(mg) -> np.ndarray:
    """The lesion's mask moved 120 rows away from it, onto healthy tissue of its size."""
    rows = np.flatnonzero(mg.mask.any(axis=1))
    return np.roll(mg.mask, 120 if rows.mean() < mg.mask.shape[0] / 2 else -120, axis=0)


def test_replacing_the_lesion_ends_the_call_and_healthy_tissue_of_its_size_does_not(pipeline):
    mg = make_one(31, 7, MASSES)
    src = from_dataset(to_dataset(mg, "t:7", 7))
    elsewhere = _healthy_patch(mg)
    assert not (elsewhere & mg.mask).any() and (elsewhere <= mg.breast).all()
    score = pipeline.score_without(src, np.zeros_like(mg.mask))
    assert score > 0.5 > pipeline.score_without(src, mg.mask)
    assert pipeline.score_without(src, elsewhere) > 0.5


def test_the_sufficient_region_drops_tissue_the_call_does_not_need(pipeline):
    """The lesion and a patch of healthy tissue as one region: only the lesion is kept, and
    the explainer's reported region, so chosen, is the one its score after deletion measures."""
    mg = make_one(31, 7, MASSES)
    src = from_dataset(to_dataset(mg, "t:7", 7))
    both = mg.mask | _healthy_patch(mg)

    def without(region):
        return pipeline.score_without(src, region)

    kept = sufficient_region(both, without(both), without)
    assert kept.region.any() and not (kept.region & ~mg.mask).any()  # the lesion's (two components), no patch
    assert kept.forwards >= 3 and kept.score_after < 0.5
    cfg = pipeline.cfg
    off = Pipeline(replace(cfg, explainer=replace(cfg.explainer, sufficient_region=False)))
    res, whole = pipeline.explain(src, "gradcam"), off.explain(src, "gradcam")  # any method: one pass
    assert res.region.any() and not (res.region & ~whole.region).any()
    assert res.score_after_deletion == pytest.approx(pipeline.score_without(src, res.region), abs=1e-6)


def test_explanations_are_deterministic(pipeline):
    src = from_dataset(to_dataset(make_one(31, 4, MASSES), "t:4", 4))
    a, b = pipeline.explain(src, "cf"), pipeline.explain(src, "cf")
    assert np.array_equal(a.saliency, b.saliency) and a.passes == b.passes


@pytest.fixture(scope="module")
def small_config(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cfg")
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["explainer"]["max_passes"] = 5
    for key in ("classifier", "inpainter"):
        raw["models"][key]["path"] = str(ROOT / raw["models"][key]["path"])
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _explain(src: Path, out_dir: Path, config: Path):
    """`cfia explain` in a subprocess that must succeed: (the completed process, its JSON line)."""
    out = subprocess.run([sys.executable, "-m", "cfia.cli", "explain", str(src), "--out", str(out_dir),
                          "--config", str(config)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr
    return out, json.loads(out.stdout.strip().splitlines()[-1])


def test_explain_command_writes_every_output(tmp_path, small_config):
    ds = to_dataset(make_one(31, 3, MASSES), "t:3", 3)
    ds.PatientName = "SECRET NAME"  # no caret: highdicom warns, quoting it
    src = tmp_path / "mg.dcm"
    ds.save_as(src, enforce_file_format=True)
    run, line = _explain(src, tmp_path / "out", small_config)
    assert "SECRET" not in run.stderr + run.stdout and "text withheld" in run.stderr
    assert {"method", "score", "score_after_deletion", "passes", "seconds", "outputs"} <= set(line)
    assert line["method"] == "cf" and line["passes"] <= 5
    assert line["region_pixels"] > 0
    assert line["call_survives_deletion"] == (min(line["score"], line["score_after_deletion"]) >= 0.5)
    saliency = np.load(tmp_path / "out" / "saliency.npy")
    assert saliency.shape == (ds.Rows, ds.Columns) and saliency.dtype == np.float32
    assert (tmp_path / "out" / "overlay.png").stat().st_size > 1000
    for kind in ("fractional_seg", "binary_seg", "parametric_map", "sr", "gsps"):
        obj = pydicom.dcmread(tmp_path / "out" / f"{kind}.dcm")
        assert obj.StudyInstanceUID == ds.StudyInstanceUID


def test_explain_says_when_the_call_survives_the_regions_deletion(tmp_path, small_config):
    """On the second generator's tissue the shipped classifier's call rests on no region
    (docs/models.md, "A second generator"): the JSON line and a warning say so."""
    src = tmp_path / "mg.dcm"
    opts = PhantomOptions(size=(512, 416), positive_fraction=1.0, generator="compartments")
    to_dataset(make_one(5000, 2, opts), "t:c2", 2).save_as(src, enforce_file_format=True)
    out, line = _explain(src, tmp_path / "out", small_config)
    assert line["score"] > 0.5 and line["score_after_deletion"] > 0.5 and line["call_survives_deletion"] is True
    assert "still called positive" in out.stderr and "mg.dcm" in out.stderr


def _secondary_capture(mg) -> pydicom.Dataset:
    """The mammogram's pixels as a Secondary Capture without laterality or pixel spacing, as
    public sets (CBIS-DDSM) store them."""
    sc = pydicom.Dataset()
    sc.file_meta = pydicom.dataset.FileMetaDataset()
    sc.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    sc.SOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality", "Rows", "Columns",
                    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
                    "PhotometricInterpretation", "PixelData"):
        setattr(sc, keyword, getattr(mg, keyword))
    return sc


def test_explain_a_secondary_capture_mammogram_writes_the_maps_and_says_why_no_objects(tmp_path, small_config):
    """Public sets such as CBIS-DDSM store mammograms as Secondary Capture without laterality
    or pixel spacing: the maps are written, the DICOM result objects are skipped with a reason."""
    mg = to_dataset(make_one(31, 3, MASSES), "t:3", 3)
    sc = _secondary_capture(mg)
    src = tmp_path / "sc.dcm"
    sc.save_as(src, enforce_file_format=True)
    out, line = _explain(src, tmp_path / "out", small_config)
    assert "not a digital mammogram" in line["dicom_objects_skipped"]
    assert sorted(Path(p).name for p in line["outputs"]) == ["overlay.png", "saliency.npy"]
    assert np.load(tmp_path / "out" / "saliency.npy").shape == (mg.Rows, mg.Columns)
    assert sum("no DICOM result objects" in ln for ln in out.stderr.strip().splitlines()) == 1
    assert not list((tmp_path / "out").glob("*.dcm"))


def test_explain_refuses_a_file_that_is_not_a_mammogram(tmp_path):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all")
    out = subprocess.run([sys.executable, "-m", "cfia.cli", "explain", str(junk), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "junk.dcm" in out.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("case", ["truncated", "out_is_a_file"])
def test_explain_refuses_a_cut_short_file_or_an_out_that_is_a_file_before_explaining(tmp_path, case):
    """A transfer cut short inside an element's header; --out naming a file: one line, exit 2."""
    assert main(["phantom", "--out", str(tmp_path / "ph"), "--count", "1", "--seed", "3", "--size", "256x208",
                 "--quiet"]) == 0
    source, out = tmp_path / "ph" / "img00000.dcm", tmp_path / "o"
    if case == "truncated":
        cut = tmp_path / "cut.dcm"
        cut.write_bytes(_cut_where_pydicom_raises_struct_error(source.read_bytes()))
        source = cut
    else:
        out.write_text("a file, not a folder")
    run = subprocess.run([sys.executable, "-m", "cfia.cli", "explain", str(source), "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 2, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
    assert ("cut.dcm: not a readable DICOM file" if case == "truncated" else "is a file, not a folder") \
        in run.stderr


def _without_write_permission(argv: list[str]) -> list[str]:
    """As root (CI), folder permissions do not stop writes: drop the capability that
    overrides them for the command."""
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *argv] if os.geteuid() == 0 else argv


def test_explain_refuses_an_out_it_cannot_write_before_explaining(tmp_path):
    """The folder exists but cannot be written: one line and exit 2 before any model is
    loaded, not a traceback once the explanation is done."""
    assert main(["phantom", "--out", str(tmp_path / "ph"), "--count", "1", "--seed", "3", "--size", "256x208",
                 "--quiet"]) == 0
    out = tmp_path / "o"
    out.mkdir(mode=0o555)
    argv = [sys.executable, "-m", "cfia.cli", "explain", str(tmp_path / "ph" / "img00000.dcm"), "--out", str(out)]
    run = subprocess.run(_without_write_permission(argv), capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines() == [f"cfia: error: --out {out}: cannot write in the output folder "
                                                "(Permission denied)"]


def test_an_output_name_taken_by_a_folder_is_one_line_and_exit_2(tmp_path, small_config):
    assert main(["phantom", "--out", str(tmp_path / "ph"), "--count", "1", "--seed", "3", "--size", "256x208",
                 "--quiet"]) == 0
    (tmp_path / "o" / "saliency.npy").mkdir(parents=True)
    run = subprocess.run([sys.executable, "-m", "cfia.cli", "explain", str(tmp_path / "ph" / "img00000.dcm"),
                          "--out", str(tmp_path / "o"), "--config", str(small_config), "--method", "gradcam"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and "cannot write" in run.stderr and "saliency.npy" in run.stderr


@pytest.mark.parametrize("key, value, method", [
    ("occlusion_size", 353, "occlusion"),  # the input is 512x352
    ("tile", 177, "cf"),  # a hole pattern's period past the input: one hole was most of the image
])
def test_a_patch_or_tile_too_large_for_the_input_is_refused_before_any_image(tmp_path, small_config, key, value,
                                                                             method):
    raw = yaml.safe_load(small_config.read_text())
    raw["explainer"][key] = value
    config = tmp_path / "occ.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["phantom", "--out", str(tmp_path / "ph"), "--count", "1", "--seed", "3", "--size", "256x208",
                 "--quiet"]) == 0
    run = subprocess.run([sys.executable, "-m", "cfia.cli", "explain", str(tmp_path / "ph" / "img00000.dcm"),
                          "--out", str(tmp_path / "o"), "--config", str(config), "--method", method],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 2, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and f"explainer.{key}" in run.stderr


def _cut_where_pydicom_raises_struct_error(data: bytes) -> bytes:
    """The file cut inside a 4-byte length field, where pydicom 3 raises struct.error."""
    import io
    import struct
    import warnings

    import pydicom

    for n in range(132, len(data)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pydicom.dcmread(io.BytesIO(data[:n]))
        except struct.error:
            return data[:n]
        except Exception:
            continue
    raise AssertionError("no cut of this file makes pydicom raise struct.error")


def test_evaluate_command_reports_every_method(tmp_path, small_config):
    data = tmp_path / "data"
    assert main(["phantom", "--out", str(data), "--count", "6", "--seed", "31", "--size", "512x416",
                 "--positive-fraction", "1", "--quiet"]) == 0
    report = tmp_path / "report.json"
    assert main(["evaluate", "--data", str(data), "--methods", "cf,gradcam,ig,cf@8", "--limit", "1",
                 "--out", str(report), "--config", str(small_config)]) == 0
    got = json.loads(report.read_text())
    assert got["n_positive_called"] == 1 and set(got["summary"]) == {"cf", "gradcam", "ig", "cf@8"}
    for m in ("pointing_game", "energy_inside", "iou", "pixel_ap", "passes", "seconds"):
        assert m in got["summary"]["cf"]
    assert got["summary"]["cf@8"]["passes"] <= 8
    assert report.with_suffix(".png").stat().st_size > 1000
    # The phantom's manifest names lesion kinds: the case carries its kind and the
    # report repeats the summary per kind.
    kind = got["cases"][0]["kind"]
    assert kind and set(got["summary_by_kind"]) == {kind}
    assert got["summary_by_kind"][kind]["n"] == 1
    assert got["summary_by_kind"][kind]["cf"]["iou"] == got["summary"]["cf"]["iou"]
    # cf against each other method on the same image: the difference of the case's scores.
    case = got["cases"][0]["methods"]
    assert set(got["paired"]) == {"gradcam", "ig", "cf@8"}
    assert got["paired"]["ig"]["iou"]["mean"] == case["cf"]["iou"] - case["ig"]["iou"]
    # The shipped inpainter's fill of this clear lesion takes the call away (the counterfactual
    # bench's test checks the same on these phantoms), so the call rests on the lesion.
    first = got["cases"][0]
    assert 0.0 <= first["score_lesion_inpainted"] < 0.5 <= first["score"]
    assert got["called_without_lesion"] == []


def test_an_evaluation_stopped_before_its_first_case_leaves_no_earlier_report(tmp_path, small_config):
    """The report is written as each case is done: one stopped before the first case must not
    leave an earlier run's report standing for this one (the command also drops its figure)."""
    from cfia import config as config_mod
    from cfia import evaluate as ev
    from cfia.pipeline import Pipeline

    data = tmp_path / "data"
    assert main(["phantom", "--out", str(data), "--count", "2", "--seed", "31", "--size", "256x208",
                 "--positive-fraction", "1", "--quiet"]) == 0
    out = tmp_path / "report.json"
    out.write_text(json.dumps({"complete": True, "cases": [{"file": "from an earlier run"}]}))

    def stop(name, p):
        raise KeyboardInterrupt

    pipeline = Pipeline(config_mod.load(small_config))
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate(pipeline, data, ["gradcam"], progress=stop,
                    checkpoint=lambda partial: ev.write_report(partial, out, "cfia evaluate"))
    got = json.loads(out.read_text())
    assert got["complete"] is False and got["cases"] == [] and got["methods"] == ["gradcam"]


def test_evaluate_on_a_researchers_folder(tmp_path, small_config, capsys):
    """Masks saved as 0/255 integers score as the bool ones do; a mask of another size or
    marking nothing stops before any image is explained; the report is strict JSON and says
    how many positives it scanned; an --out naming the figure is refused."""
    import csv

    data = tmp_path / "data"
    assert main(["phantom", "--out", str(data), "--count", "2", "--seed", "31", "--size", "256x208",
                 "--positive-fraction", "1", "--quiet"]) == 0
    common = ["--data", str(data), "--methods", "gradcam,occlusion", "--config", str(small_config),
              "--threshold", "0"]
    assert main(["evaluate", *common, "--out", str(tmp_path / "bool.json")]) == 0
    for mask in (data / "masks").glob("*.npy"):
        np.save(mask, np.load(mask).astype(np.uint8) * 255)
    assert main(["evaluate", *common, "--out", str(tmp_path / "u8.json")]) == 0
    reports = [json.loads((tmp_path / f"{n}.json").read_text(), parse_constant=_no_nan) for n in ("bool", "u8")]
    localisation = ("pointing_game", "energy_inside", "iou", "pixel_ap", "boundary_distance_mm")
    for m in ("gradcam", "occlusion"):
        assert [reports[0]["summary"][m][k] for k in localisation] == [reports[1]["summary"][m][k] for k in localisation]
    assert reports[0]["n_scanned"] == 2
    rows = list(csv.DictReader((data / "manifest.csv").open()))
    np.save(data / rows[0]["mask"], np.zeros((10, 10), np.uint8))
    np.save(data / rows[1]["mask"], np.zeros((256, 208), bool))
    capsys.readouterr()
    assert main(["evaluate", *common, "--out", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert "2 lesion mask(s) unusable" in err and "shape (10, 10), its image (256, 208)" in err
    assert "marks nothing" in err and not (tmp_path / "bad.json").exists()
    # Stopped by its data before it started: an earlier run's report and figure stay as they were.
    before = (tmp_path / "bool.json").read_bytes()
    assert main(["evaluate", *common, "--out", str(tmp_path / "bool.json")]) == 2
    assert (tmp_path / "bool.png").exists() and (tmp_path / "bool.json").read_bytes() == before
    assert main(["evaluate", *common, "--out", str(tmp_path / "r.png")]) == 2
    assert "the report's JSON file" in capsys.readouterr().err


def _no_nan(token):
    raise AssertionError(f"{token} in a JSON report")


def test_calls_that_survive_the_lesion_inpainted_are_listed():
    from cfia.evaluate import not_on_lesion

    cases = [{"file": "a.dcm", "score_lesion_inpainted": 0.2}, {"file": "b.dcm", "score_lesion_inpainted": 0.7},
             {"file": "c.dcm"}]  # a report written before the field existed
    assert not_on_lesion(cases, 0.5) == ["b.dcm"]
    assert not_on_lesion(cases, 0.8) == []


def test_evaluate_refuses_a_folder_it_cannot_score(tmp_path, small_config, capsys):
    """Missing files are listed; a lesion image without a mask is named; exit 2, no report."""
    data = tmp_path / "data"
    assert main(["phantom", "--out", str(data), "--count", "2", "--seed", "32", "--size", "256x208",
                 "--positive-fraction", "1", "--quiet"]) == 0
    manifest = (data / "manifest.csv").read_text().splitlines()
    header = manifest[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in manifest[1:]]
    report = tmp_path / "report.json"
    (data / "manifest.csv").write_text("file,label\n" + "".join(f"{r['file']},1\n" for r in rows))
    assert main(["evaluate", "--data", str(data), "--out", str(report), "--config", str(small_config)]) == 2
    assert "without a mask" in capsys.readouterr().err
    (data / rows[0]["file"]).unlink()
    assert main(["evaluate", "--data", str(data), "--out", str(report), "--config", str(small_config)]) == 2
    err = capsys.readouterr().err
    assert "1 missing file(s)" in err and rows[0]["file"] in err
    assert not report.exists()


def test_counterfactual_bench_measures_each_fill(tmp_path, small_config, capsys):
    """The shipped inpainter's fill of the true lesion lowers the score of every positive."""
    from cfia.bench import counterfactual

    data = tmp_path / "data"
    assert main(["phantom", "--out", str(data), "--count", "6", "--seed", "31", "--size", "512x416",
                 "--positive-fraction", "0.5", "--quiet"]) == 0
    out = tmp_path / "cf.json"
    assert counterfactual.main(["--data", str(data), "--limit", "2", "--tiles", "32", "--tilings", "1,3",
                                "--grow", "0,4", "--regions", "2", "--config", str(small_config),
                                "--json", str(out)]) == 0
    assert "| tiled 32 px |" in capsys.readouterr().out
    res = json.loads(out.read_text())["probabilities"]
    pos, neg = res["positives"], res["negatives"]
    n = len(pos["image"]["whole"])
    assert n >= 1 and len(neg["image"]["whole"]) == 2
    tiled = ("tiled 32 px", "tiled 32 px, median of 3 grids")
    assert set(pos) == {"image", "lesion as one hole", "blur sigma 10", *tiled}
    for name in (*tiled, "blur sigma 10"):
        assert set(pos[name]) == {"lesion+0", "lesion+4", "kept+0", "kept+4", "whole"}
        assert all(len(v) == n for v in pos[name].values()) and len(neg[name]["whole"]) == 2
        # Two random regions in each of the two negatives, each replaced by C: the score moves.
        changes = neg[name]["region change"]
        assert len(changes) == 4 and any(c != 0.0 for c in changes) and all(abs(c) < 1.0 for c in changes)
    for before, after in zip(pos["image"]["whole"], pos["lesion as one hole"]["lesion+4"]):
        assert 0.0 <= after < before <= 1.0
    # Keeping the lesion and its 4-px rim keeps more of the image than keeping the lesion alone:
    # the two preserved images differ, so the grown mask reached them.
    assert pos["tiled 32 px"]["kept+0"] != pos["tiled 32 px"]["kept+4"]
    # Three shifted grids give another fill than one.
    assert pos["tiled 32 px"]["lesion+0"] != pos["tiled 32 px, median of 3 grids"]["lesion+0"]
    with pytest.raises(SystemExit) as bad:  # argparse's usage error
        counterfactual.main(["--data", str(data), "--tilings", "2", "--config", str(small_config)])
    assert bad.value.code == 2 and "--tilings '2': counts must be odd" in capsys.readouterr().err
    # A lesion image without a mask stops the bench with its name (as cfia evaluate does).
    rows = (data / "manifest.csv").read_text().splitlines()
    unmasked = next(i for i, line in enumerate(rows) if ",1," in line)
    name = rows[unmasked].split(",")[0]
    rows[unmasked] = rows[unmasked].replace(f"masks/{name[:-4]}.npy", "")
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")
    capsys.readouterr()
    assert counterfactual.main(["--data", str(data), "--limit", "2", "--config", str(small_config)]) == 2
    err = capsys.readouterr().err
    assert "1 lesion image(s) without a mask" in err and name in err


def test_evaluate_alter_changes_the_images_not_the_masks(tmp_path, small_config, capsys):
    data = tmp_path / "data"
    assert main(["phantom", "--out", str(data), "--count", "2", "--seed", "31", "--size", "512x416",
                 "--positive-fraction", "1", "--quiet"]) == 0
    plain, noisy = tmp_path / "plain.json", tmp_path / "noisy.json"
    args = ["evaluate", "--data", str(data), "--methods", "gradcam", "--limit", "1", "--config", str(small_config)]
    assert main(args + ["--out", str(plain)]) == 0
    assert main(args + ["--out", str(noisy), "--alter", "noise-0.3-sd"]) == 0
    a, b = (json.loads(p.read_text()) for p in (plain, noisy))
    assert a["cases"][0]["file"] == b["cases"][0]["file"]
    assert a["cases"][0]["score"] != b["cases"][0]["score"]
    assert "--alter noise-0.3-sd" in b["command"]
    assert main(args + ["--out", str(noisy), "--alter", "sepia"]) == 2
    assert "half-resolution" in capsys.readouterr().err


def test_explain_bench_variants_compare_maps_with_the_first(small_config, capsys):
    """--variants: a repeat of the first is identical (CPU); bf16 autocast differs but runs."""
    from cfia.bench import explain as bench

    assert bench.main(["--size", "512x416", "--count", "1", "--config", str(small_config),
                       "--variants", "cpu,cpu,cpu:bf16"]) == 0
    reports = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["variant"] for r in reports] == ["cpu", "cpu", "cpu:bf16"]
    assert "vs_first" not in reports[0] and reports[0]["passes"] == [5]
    assert reports[1]["vs_first"] == {"max_abs_saliency_diff": [0.0], "region_iou": [1.0]}
    assert reports[1]["scores"] == reports[0]["scores"]
    assert 0.0 < reports[2]["vs_first"]["max_abs_saliency_diff"][0] <= 1.0


def test_objects_that_cannot_be_built_are_a_permanent_failure_whose_reason_quotes_no_value(pipeline):
    """The builders are deterministic: a header they cannot use fails the same way on every
    retry, so the worker must get UnsupportedSource (dead letter at once), and the reason,
    which goes to the log and reason.json, must not quote the value (a birth date, a name)."""
    from dicom_out import UnsupportedSource

    class RefusingBuilders(Pipeline):
        def build_objects(self, ds, result):
            raise ValueError(f"Unable to convert {ds.PatientName!s} to 'PN'")

    refusing = RefusingBuilders.__new__(RefusingBuilders)
    refusing.__dict__.update(pipeline.__dict__)  # the loaded models, not a second load
    ds = to_dataset(make_one(31, 7, MASSES), "t:7", 7)
    with pytest.raises(UnsupportedSource) as raised:
        refusing.process(ds)
    reason = str(raised.value)
    assert "ValueError" in reason and "build_objects" in reason
    assert "PHANTOM" not in reason and str(ds.PatientName) not in reason


def test_result_uids_follow_the_inpainter_and_explainer_settings_and_a_bundle_is_versioned(tmp_path):
    """Another inpainter file, explainer or classifier setting gives new result UIDs; the device the
    explainer runs on does not; a classifier that is a folder (a MONAI bundle) is
    versioned by its files' content, not called "unversioned"."""
    from cfia.config import from_dict
    from cfia.files import content_digest
    from cfia.pipeline import settings_digest

    weights = tmp_path / "inpainter.pt"
    weights.write_bytes(b"one")
    base = {"models": {"inpainter": {"kind": "learned", "path": str(weights)}}}
    digest = settings_digest(from_dict(base))
    assert settings_digest(from_dict({**base, "explainer": {"device": "cuda"}})) == digest
    assert settings_digest(from_dict({**base, "explainer": {"max_passes": 7}})) != digest
    for fed in ({"class_index": 0}, {"output": "probabilities"}, {"channels": 3}, {"mean": [0.5]},
                {"network_args": {"channels": [4, 8, 8]}}, {"network": "DenseNet121"}):
        changed = {"models": {**base["models"], "classifier": fed}}
        assert settings_digest(from_dict(changed)) != digest, fed  # another reading of the same weights
    # TorchScript reads no network from the config: its unused network_args change nothing.
    script = [settings_digest(from_dict({"models": {**base["models"], "classifier": {
        "kind": "torchscript", "path": "m.ts", "network_args": args}}})) for args in ({}, {"channels": [4]})]
    assert script[0] == script[1]
    weights.write_bytes(b"two")
    assert settings_digest(from_dict(base)) != digest
    # A classical inpainter reads no file: where the install or the config lies must not matter.
    telea = [settings_digest(from_dict({"models": {"inpainter": {"kind": "telea", "path": str(tmp_path / where)}}}))
             for where in ("a.pt", "b.pt")]
    assert telea[0] == telea[1]
    bundle = tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    (bundle / "models" / "model.pt").write_bytes(b"weights")
    first = content_digest(bundle)
    (bundle / "models" / "model.pt").write_bytes(b"other weights")
    assert content_digest(bundle) != first and len(first) == 64


def test_overlay_is_drawn_at_display_size_and_keeps_a_small_region_visible(tmp_path):
    from PIL import Image

    from cfia import overlay
    rows, cols = 4000, 3000
    image = np.tile(np.linspace(0, 1, cols, dtype=np.float32), (rows, 1))
    saliency = np.zeros((rows, cols), np.float32)
    region = np.zeros((rows, cols), bool)
    region[2000:2006, 1500:1506] = True          # 6x6 source pixels: 2x2 at the display size
    saliency[1900:2100, 1400:1600] = 1.0
    path = overlay.save(tmp_path / "overlay.png", image, saliency, region)
    with Image.open(path) as png:
        rgb = np.asarray(png.convert("RGB"))
    assert rgb.shape == (overlay.MAX_SIDE, overlay.MAX_SIDE * cols // rows, 3)
    cyan = (rgb[..., 0] == 0) & (rgb[..., 1] == 255) & (rgb[..., 2] == 255)
    ys, xs = np.nonzero(cyan)
    assert ys.size and abs(ys.mean() - 2003 * 0.4) < 3 and abs(xs.mean() - 1503 * 0.4) < 3
    parts = (image[:100, :100], saliency[:100, :100], region[1950:2050, 1450:1550], None)
    small = overlay.shrink(*parts, overlay.MAX_SIDE)             # smaller than the display: as it is
    assert all(a is b for a, b in zip(small, parts))


def _one_positive_evaluate(tmp_path, small_config) -> list:
    """`cfia evaluate` arguments but --out: Grad-CAM on one positive phantom."""
    data = tmp_path / "data"
    assert main(["phantom", "--out", str(data), "--count", "1", "--seed", "31", "--size", "256x208",
                 "--positive-fraction", "1", "--quiet"]) == 0
    return ["evaluate", "--data", str(data), "--methods", "gradcam", "--limit", "1", "--threshold", "0",
            "--config", str(small_config)]


def test_evaluate_gives_a_dated_report_its_own_figure(tmp_path, small_config):
    """A dated --out keeps its whole name in the figure's: with_suffix gave eval-2026.12.07 and
    eval-2026.12.08 one eval-2026.12.png."""
    common = _one_positive_evaluate(tmp_path, small_config)
    evd = tmp_path / "evd"
    for day in ("07", "08"):
        assert main([*common, "--out", str(evd / f"eval-2026.12.{day}")]) == 0
    assert sorted(p.name for p in evd.iterdir()) == ["eval-2026.12.07", "eval-2026.12.07.png",
                                                     "eval-2026.12.08", "eval-2026.12.08.png"]


def test_evaluate_takes_an_out_name_as_long_as_allowed_and_refuses_longer_before_the_work(
        tmp_path, small_config, capsys):
    """A 255-byte name works to the end (its temporary file, the name plus .tmp, could not be
    made: a traceback once the run had started); a name whose report or figure cannot be made
    stops in one line before any image is explained."""
    common = _one_positive_evaluate(tmp_path, small_config)
    evd = tmp_path / "evd"
    longest = evd / ("r" * 250 + ".json")
    assert main([*common, "--out", str(longest)]) == 0
    assert "gradcam" in json.loads(longest.read_text())["summary"]
    assert (evd / ("r" * 250 + ".png")).stat().st_size > 1000
    capsys.readouterr()
    for name, bad in (("s" * 255, "s" * 255 + ".png"), ("t" * 300, "t" * 300)):
        assert main([*common, "--out", str(evd / name)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("cfia: error: ") and err.count("\n") == 1, err  # no progress bar: nothing explained
        assert f"cannot create {bad} (File name too long)" in err
    assert len(list(evd.iterdir())) == 2  # no probe, no temporary file left


def test_evaluates_bar_counts_the_calls_a_limit_asks_for(tmp_path, small_config, capsys):
    """With --limit the bar's total is the calls asked for (it counted every positive in the
    folder and stopped short of it), and a folder with fewer calls closes the bar at its count."""
    data = tmp_path / "data"
    assert main(["phantom", "--out", str(data), "--count", "3", "--seed", "31", "--size", "256x208",
                 "--positive-fraction", "1", "--quiet"]) == 0
    common = ["evaluate", "--data", str(data), "--methods", "gradcam", "--threshold", "0",
              "--config", str(small_config), "--out", str(tmp_path / "r.json")]
    for limit, last in (("1", "1/1 [") , ("5", "3/3 [")):
        capsys.readouterr()
        assert main([*common, "--limit", limit]) == 0
        bar = capsys.readouterr().err.split("\r")[-1]
        assert last in bar and bar.startswith("evaluate: 100%"), bar


def test_explain_method_is_the_one_checked_and_named_in_the_uids(tmp_path, small_config):
    """--method occlusion with a config for cf: only occlusion's settings are checked (cf's
    tile, too large for a tiny input, stopped it), and the objects' UIDs are those the same
    method configured would give."""
    raw = yaml.safe_load(small_config.read_text())
    raw["models"]["classifier"]["input_size"] = [40, 40]
    raw["explainer"]["occlusion_size"] = 8
    configs = {}
    for method in ("cf", "occlusion"):
        configs[method] = tmp_path / f"{method}.yaml"
        configs[method].write_text(yaml.safe_dump({**raw, "explainer": {**raw["explainer"], "method": method}}))
    assert main(["phantom", "--out", str(tmp_path / "ph"), "--count", "1", "--seed", "3", "--size", "128x104",
                 "--positive-fraction", "1", "--quiet"]) == 0
    src = tmp_path / "ph" / "img00000.dcm"
    uids = []
    for config, extra in ((configs["cf"], ["--method", "occlusion"]), (configs["occlusion"], [])):
        out = tmp_path / f"o{len(uids)}"
        run = subprocess.run([sys.executable, "-m", "cfia.cli", "explain", str(src), "--out", str(out),
                              "--config", str(config), *extra], capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert run.returncode == 0, run.stderr
        uids.append(pydicom.dcmread(out / "sr.dcm").SOPInstanceUID)
    assert uids[0] == uids[1]


def test_explain_into_a_folder_with_an_earlier_runs_objects_removes_those_it_did_not_write(tmp_path, small_config):
    """A Secondary Capture gets the maps only: another image's result objects left in --out
    stood beside them as if they were this image's (possibly another patient's)."""
    out = tmp_path / "out"
    out.mkdir()
    for kind in ("binary_seg", "sr"):
        (out / f"{kind}.dcm").write_bytes(b"an earlier run's object")
    mg = to_dataset(make_one(31, 3, MASSES), "t:3", 3)
    sc = _secondary_capture(mg)
    src = tmp_path / "sc.dcm"
    sc.save_as(src, enforce_file_format=True)
    run, line = _explain(src, out, small_config)
    assert not list(out.glob("*.dcm"))
    assert "removed 2 result object(s) an earlier run left there (binary_seg.dcm, sr.dcm)" in run.stderr
