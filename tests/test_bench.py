"""The benchmark commands (cfia.bench.*) and `cfia evaluate --alter` on small phantom folders."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "classifier.ts"
SIZE = "256x208"


def _phantom(folder: Path, *options: str) -> Path:
    from cfia.cli import main

    assert main(["phantom", "--out", str(folder), "--count", "4", "--seed", "1", "--size", SIZE, "--quiet",
                 *options]) == 0
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """The same four images (seed 1) as MONOCHROME2 and MONOCHROME1 For Presentation, For
    Processing, and with other positive fractions (the same draws, other labels)."""
    base = tmp_path_factory.mktemp("bench")
    return {"m2": _phantom(base / "m2"), "m1": _phantom(base / "m1", "--photometric", "MONOCHROME1"),
            "fp": _phantom(base / "fp", "--for-processing"),
            "normals": _phantom(base / "normals", "--positive-fraction", "0"),
            "lesions": _phantom(base / "lesions", "--positive-fraction", "1"),
            "pf": _phantom(base / "pf", "--positive-fraction", "0.2")}


@pytest.fixture(scope="module")
def clf():
    from cfia.config import DEFAULT_CLASSIFIER_INPUT
    from explain.classifier import load_classifier

    return load_classifier("torchscript", str(MODEL), input_size=DEFAULT_CLASSIFIER_INPUT)


def _dense_side_bright(px: np.ndarray, laterality: str) -> bool:
    """The chest wall's outer tenth (left for L, right for R in a phantom) is the brighter edge."""
    edge = px.shape[1] // 10
    wall, far = (px[:, :edge], px[:, -edge:]) if laterality == "L" else (px[:, -edge:], px[:, :edge])
    return bool(wall.mean() > far.mean())


def _spy(seen: list):
    def alter(px, rng):
        seen.append(px.copy())
        return px
    return alter


# 1. The alterations take display values (dense bright), whatever the file's polarity.

@pytest.mark.parametrize("kind", ["m1", "fp"])
def test_robustness_alterations_get_display_values(folders, clf, kind):
    from cfia.bench import robustness
    from cfia.config import DEFAULT_CLASSIFIER_INPUT
    from cfia.manifest import read_manifest

    records = read_manifest(folders[kind])
    seen = []
    robustness.scores(records, clf, DEFAULT_CLASSIFIER_INPUT, _spy(seen))
    assert [_dense_side_bright(px, rec.laterality) for px, rec in zip(seen, records)] == [True] * len(records)


def test_robustness_alters_a_monochrome1_folder_as_its_monochrome2_twin(folders, clf):
    """Same images, stored inverted: the same scores for every alteration that depends on
    which side is the breast's or which value is bright (before: the label, strips and marker
    came out dark, on the breast's side)."""
    from cfia.bench import robustness
    from cfia.config import DEFAULT_CLASSIFIER_INPUT
    from cfia.manifest import read_manifest

    for name in ("burned-in label", "collimated edges", "marker on the skin line", "air strip at the chest wall",
                 "strands", "breast implant", "biopsy clip"):
        alter = robustness.ALTERATIONS[name]
        m2, m1 = (robustness.scores(read_manifest(folders[k]), clf, DEFAULT_CLASSIFIER_INPUT, alter)
                  for k in ("m2", "m1"))
        np.testing.assert_allclose(m1, m2, atol=1e-5, err_msg=name)


def test_the_implant_lies_on_the_chest_wall_and_the_clip_inside_the_breast():
    """Display values of a left breast (chest wall left): the implant brightens the breast near the
    chest wall, not the air nor the nipple's side; the clip is a few saturated pixels in the breast."""
    from cfia.bench import robustness

    px = np.zeros((200, 160))
    yy, xx = np.mgrid[:200, :160]
    breast = ((yy - 100) / 90) ** 2 + (xx / 120) ** 2 <= 1
    px[breast] = 0.5 + 0.05 * np.random.default_rng(0).standard_normal(breast.sum())
    implant = robustness.ALTERATIONS["breast implant"](px, np.random.default_rng(0)) - px
    assert implant[~breast].max() == 0 and implant[100, 110] < 1e-3
    assert implant[100, 5] > 0.9 * (px.max() - px[100, 5])  # near the brightest value at the chest wall
    clipped = robustness.ALTERATIONS["biopsy clip"](px, np.random.default_rng(0))
    changed = clipped != px
    assert 2 <= changed.sum() <= 20 and breast[changed].all() and np.all(clipped[changed] == px.max())


def test_evaluate_alter_gets_display_values(folders):
    """`cfia evaluate --alter` (cfia.evaluate.evaluate's alter): display values on a
    MONOCHROME1 folder, and a MONOCHROME2 For Presentation image to score (a stub pipeline
    that calls nothing positive: only the read, the alteration and the preprocessing run)."""
    import torch

    from cfia import evaluate as ev
    from cfia.config import DEFAULT_CLASSIFIER_INPUT
    from cfia.manifest import read_manifest

    seen, given = [], []
    pipeline = SimpleNamespace(cfg=SimpleNamespace(models=SimpleNamespace(classifier=SimpleNamespace(
        input_size=DEFAULT_CLASSIFIER_INPUT))), device="cpu",
        probability=lambda x: given.append(x) or 0.0)
    report, _ = ev.evaluate(pipeline, folders["m1"], ["gradcam"], alter=_spy(seen))
    positives = [r for r in read_manifest(folders["m1"]) if r.label == 1]
    assert report["n_scanned"] == len(positives) == len(seen) == 3
    assert all(_dense_side_bright(px, r.laterality) for px, r in zip(seen, positives))
    # The image scored is the MONOCHROME2 one, preprocessed as the run-time path does.
    seen2, given2 = [], []
    pipeline.probability = lambda x: given2.append(x) or 0.0
    ev.evaluate(pipeline, folders["m2"], ["gradcam"], alter=_spy(seen2))
    for a, b in zip(given, given2):
        assert torch.allclose(a, b, atol=1e-5)


# 2. A folder of one class: a dash where AUC, sensitivity or specificity has no value.

@pytest.mark.parametrize("kind", ["normals", "lesions"])
def test_robustness_table_prints_a_dash_for_a_missing_figure(folders, kind, tmp_path, capsys):
    from cfia.bench import robustness

    out = tmp_path / "r.json"
    assert robustness.main(["--data", str(folders[kind]), "--model", str(MODEL), "--threads", "1",
                            "--only", "as-stored,gamma-0.7", "--json", str(out)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| as stored")
            or line.startswith("| gamma")]
    assert len(rows) == 2 and all(" - |" in row for row in rows), rows
    table = json.loads(out.read_text())["table"]
    assert table["as stored"]["auc"] is None
    assert table["as stored"]["specificity" if kind == "lesions" else "sensitivity"] is None


# 3. --count must be at least 1.

@pytest.mark.parametrize("count", ["0", "-2"])
def test_explain_bench_refuses_a_count_below_one(count, capsys):
    from cfia.bench import explain as bench

    with pytest.raises(SystemExit) as exc:
        bench.main(["--size", SIZE, "--count", count])
    assert exc.value.code == 2 and "--count: must be at least 1" in capsys.readouterr().err


# 4. The node report's text gives this run's figures.

def test_node_report_text_uses_the_measured_figures(monkeypatch, capsys):
    from cfia.bench import node

    monkeypatch.setattr(node.os, "cpu_count", lambda: 7)
    summary = {"median_ms": 50.0, "p95_ms": 60.0, "max_ms": 70.0}
    ack = {"images": 4, "bytes": 3_456_789, "workers": 2, "busy_seconds": 1.0, "all_success": True,
           "workers_busy_after": 2, "load_average_1min": 1.0, "stored_file": summary, "encoded_by_scu": summary}
    burst = {"images": 8, "associations": 2, "workers": 2, "size": "256x208", "acknowledged": 8, "done": 8,
             "failed": 0, "objects_delivered": 40, "distinct_objects": 40, "duplicates": 0, "ack_seconds": 1.0,
             "all_delivered_seconds": 2.0}
    parts = {"decode header": 1.25, "header checks": 2.0, "spool write + fsync": 3.0, "queue commit": 4.0,
             "pynetdicom round trip, no-op handler (SCU and SCP in one process)": 40.0}
    text = node.report(ack, burst, parts, "python -m cfia.bench.node")
    assert "costs about 10 ms of the round" in text  # 1.25 + 2 + 3 + 4, the transport not counted
    assert "moving 3.5 MB" in text and "the 7 cores" in text
    assert "28 ms" not in text and "8.8 MB" not in text and "two cores" not in text
    # busy_blob spins for wall-clock seconds (time.perf_counter), which the help says.
    with pytest.raises(SystemExit):
        node.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "CPU seconds" not in help_text and "wall clock" in help_text


# 5. The ideal observer checks that every image it draws again is the folder's file.

def test_ideal_refuses_a_folder_of_another_positive_fraction(folders):
    from cfia.bench import ideal

    with pytest.raises(SystemExit, match=r"img00001\.dcm: not image 1 .*its label is 0, drawn again it is 1"):
        ideal.main(["--data", str(folders["pf"]), "--seed", "1", "--size", SIZE, "--groups", "2"])


@pytest.mark.parametrize("tamper, why", [("pixels", "its pixels differ"), ("mask", "its mask differs"),
                                         ("no mask", "it has a lesion and no mask")])
def test_ideal_refuses_an_image_that_is_not_the_one_drawn_again(folders, tmp_path, tamper, why):
    import shutil

    from cfia.bench import ideal

    folder = shutil.copytree(folders["m2"], tmp_path / "set")
    if tamper == "pixels":  # a normal: its pixels are all that could tell
        ds = pydicom.dcmread(folder / "img00000.dcm")
        px = ds.pixel_array.copy()
        px[100, 100] += 1
        ds.PixelData = px.tobytes()
        ds.save_as(folder / "img00000.dcm")
        name = "img00000"
    elif tamper == "mask":
        mask = np.load(folder / "masks" / "img00001.npy")
        np.save(folder / "masks" / "img00001.npy", np.roll(mask, 5, axis=1))
        name = "img00001"
    else:
        manifest = folder / "manifest.csv"
        manifest.write_text(manifest.read_text().replace("masks/img00001.npy", ""))
        name = "img00001"
    with pytest.raises(SystemExit, match=rf"{name}\.dcm: not image .*\({why}\)"):
        ideal.main(["--data", str(folder), "--seed", "1", "--size", SIZE, "--groups", "2"])


@pytest.mark.parametrize("kind", ["m1", "fp"])
def test_ideal_scores_the_folders_own_files(folders, clf, kind, tmp_path):
    """A MONOCHROME1 or For Processing folder is drawn again with its header's options, and
    the classifier scores its own files (as the classifier's report does), each twin stored
    as its image is."""
    import torch

    from cfia.bench import ideal
    from cfia.config import DEFAULT_CLASSIFIER_INPUT
    from cfia.dicom_io import read_file
    from explain.preprocess import preprocess

    out = tmp_path / "ideal.json"
    assert ideal.main(["--data", str(folders[kind]), "--seed", "1", "--size", SIZE, "--groups", "2",
                       "--model", str(MODEL), "--input-size", "%dx%d" % DEFAULT_CLASSIFIER_INPUT,
                       "--out", str(out)]) == 0
    cases = json.loads(out.read_text())["cases"]
    assert cases
    for case in cases:
        src = read_file(folders[kind] / case["file"])
        pre = preprocess(src.pixels, DEFAULT_CLASSIFIER_INPUT, src.photometric, src.laterality, src.for_processing)
        with torch.no_grad():
            own = float(clf.probability(pre.image[None])[0])
        assert case["classifier"][0] == pytest.approx(own, abs=1e-6), case["file"]


# 6. A bad --out / --json stops a command before its work (a one-line error, exit 2), and the
# summary is printed before the report is written.

def _status(main, args) -> int:
    try:
        return main(args)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("module, args", [
    ("observer", ["--data", "x", "--out"]),
    ("ideal", ["--data", "x", "--seed", "1", "--size", SIZE, "--out"]),
    ("robustness", ["--data", "x", "--json"]),
    ("classifiers", ["--models", "a.ts", "b.ts", "--data", "x", "--json"]),
    ("counterfactual", ["--data", "x", "--json"]),
    ("inpainter", ["--data", "x", "--json"]),
    ("compare", ["r.json", "--json"]),
    ("node", ["--out"]),
])
def test_bench_commands_check_the_output_before_the_work(module, args, tmp_path, monkeypatch, capsys):
    import importlib

    bench = importlib.import_module(f"cfia.bench.{module}")
    if module == "node":  # its work is minutes of benchmarks: it must not start
        monkeypatch.setattr(bench, "ack_benchmark", lambda *a: pytest.fail("the benchmark started"))
    (tmp_path / "file").write_text("")
    out = tmp_path / ("file" if module == "node" else "missing") / "out.json"  # node makes a missing folder
    assert _status(bench.main, args + [str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {args[-1]} {out}"), err


def test_finish_report_prints_the_summary_before_writing(tmp_path, capsys):
    from cfia.bench import finish_report

    assert finish_report({"auc": 0.9, "cases": [1]}, "cfia.bench.observer", [], str(tmp_path), 0.0) == 2
    out, err = capsys.readouterr()
    assert json.loads(out)["auc"] == 0.9 and err.startswith(f"error: {tmp_path}")


# 7. compare --against the reference itself is refused.

def test_compare_refuses_against_the_reference(tmp_path, capsys):
    from cfia.bench import compare
    from cfia.evaluate import PAIRED_METRICS

    report = tmp_path / "r.json"
    cases = [{"file": f"{i}", "methods": {m: {k: 0.5 for k in PAIRED_METRICS} for m in ("cf", "blur")}}
             for i in range(3)]
    report.write_text(json.dumps({"methods": ["cf", "blur"], "cases": cases}))
    assert compare.main([str(report), "--against", "cf"]) == 2
    assert capsys.readouterr().err.startswith("error: --against cf")


# 8. Bad input: a one-line error and exit 2, no traceback.

@pytest.mark.parametrize("module, args, why", [
    ("explain", ["--size", "abc"], "expected ROWSxCOLS"),
    ("explain", ["--size", "10x10", "--count", "1"], "size 10x10 is out of range"),
    ("explain", ["--size", SIZE, "--count", "1", "--method", "foo"], "invalid choice: 'foo'"),
    ("explain", ["--size", SIZE, "--count", "1", "--variants", "cpu:float16"], "explainer.precision: 'float16'"),
    ("explain", ["--size", SIZE, "--count", "1", "--config", "nothere.yaml"], "nothere.yaml"),
    pytest.param("explain", ["--size", SIZE, "--count", "1", "--variants", "cuda,cpu"], "no CUDA device",
                 marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is here")),
    ("counterfactual", ["--data", "DATA", "--config", "nothere.yaml"], "nothere.yaml"),
    ("observer", ["--data", "EMPTY"], "no manifest.csv"),
    ("ideal", ["--data", "EMPTY", "--seed", "1", "--size", SIZE], "no manifest.csv"),
    ("ideal", ["--data", "DATA", "--seed", "1", "--size", SIZE, "--model", "nothere.ts"], "nothere.ts"),
    ("robustness", ["--data", "DATA", "--model", "nothere.ts"], "nothere.ts"),
    ("inpainter", ["--data", "DATA", "--model", "nothere.pt"], "nothere.pt"),
    ("inpainter", ["--data", "DATA", "--window", "0"], "must be at least 1"),
    ("inpainter", ["--data", "DATA", "--window", "1000"], "--window 1000: larger than the images"),
])
def test_bench_commands_refuse_bad_input_in_one_line(folders, tmp_path, module, args, why, capsys):
    import importlib

    bench = importlib.import_module(f"cfia.bench.{module}")
    args = [{"DATA": str(folders["m2"]), "EMPTY": str(tmp_path)}.get(a, a) for a in args]
    assert _status(bench.main, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "error: " in err[-1] and why in err[-1] and "Traceback" not in "\n".join(err), err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is here")
def test_explain_bench_refuses_a_configured_cuda_device_without_a_gpu(tmp_path, capsys):
    """Only --variants was checked: a config asking for cuda made the phantoms, then a traceback."""
    from cfia.bench import explain as bench

    config = tmp_path / "cuda.yaml"
    config.write_text("explainer:\n  device: cuda\n")
    assert _status(bench.main, ["--size", SIZE, "--count", "1", "--config", str(config)]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_sanity_randomises_the_classifier_and_gives_its_trained_weights_back(tmp_path):
    """python -m cfia.bench.sanity: the map with the trained classifier, then with it fully
    re-initialised; the pipeline's classifier is the trained one again afterwards."""
    import torch

    from cfia.bench import sanity
    from cfia.cli import DEFAULT_CONFIG, load_config, main
    from cfia.pipeline import Pipeline

    folder = tmp_path / "calcs"
    assert main(["phantom", "--out", str(folder), "--count", "3", "--seed", "7", "--size", "512x416", "--quiet",
                 "--positive-fraction", "1", "--lesion-kinds", "calcifications"]) == 0
    pipeline = Pipeline(load_config(str(DEFAULT_CONFIG)))
    before = {k: v.clone() for k, v in pipeline.classifier.model.state_dict().items()}
    report = sanity.run(pipeline, folder, 1, ["gradcam"], 1, 0, 4, 0, progress=lambda s: None)
    assert len(report["cases"]) == 1
    assert report["groups"] == [report["blocks_top_down"]]  # one step: every block re-initialised
    trained, random = report["cases"][0]["steps"]
    assert trained["p"] >= 0.5 and random["p"] != trained["p"]
    assert "spearman" in random["maps"]["gradcam"] and "spearman" not in trained["maps"]["gradcam"]
    after = pipeline.classifier.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_the_memory_childs_peak_is_its_own_not_its_parents():
    """--memory reads the child's peak: ru_maxrss there carried the parent's high-water mark across
    the exec, so drawing the phantom (1057 MB at 4096x3328) read as the explanation's peak."""
    ballast = np.ones(800 * 2**20 // 8)  # 800 MB touched in this process before the child starts
    child = subprocess.run([sys.executable, "-c", "from cfia.bench.explain import peak_rss_kb; print(peak_rss_kb())"],
                           capture_output=True, text=True, check=True, cwd=ROOT)
    assert ballast.sum() > 0 and int(child.stdout) < 400 * 1024, child.stdout  # importing the module: ~40 MB
