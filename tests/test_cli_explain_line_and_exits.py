"""What `cfia explain` prints and the commands' exit codes: the JSON line's region_pixels is the
region shown (none for a negative call; the method's own under method_region_pixels), and
call_survives_deletion is true only when the call stays positive with the region replaced;
a refusal leaves no empty --out behind; a usage error, a count of 0, a failed requeue exit 2; a model file is replaced only with --force."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from cfia import cli
from cfia.training import commands
from cfia.pipeline import Result
from listener import JobQueue, Spool
from phantom.dicom import to_dataset
from phantom.generate import PhantomOptions, make_one

SIZE = (96, 64)


@pytest.fixture(scope="module")
def mammogram(tmp_path_factory):
    path = tmp_path_factory.mktemp("mg") / "mg.dcm"
    to_dataset(make_one(3, 0, PhantomOptions(size=SIZE, positive_fraction=1.0)), "cli", 1).save_as(
        path, enforce_file_format=True)
    return path


def _explain(monkeypatch, mammogram, tmp_path, capsys, score: float, after: float) -> dict:
    region = np.zeros(SIZE, bool)
    region[40:50, 20:25] = True
    found = Result(method="cf", saliency=region.astype(np.float32), region=region, score=score,
                   score_after_deletion=after, passes=3, seconds=0.1, display=np.full(SIZE, 0.5, np.float32),
                   input_saliency=region.astype(np.float32))
    pipeline = SimpleNamespace(explain=lambda src, method: found, result_objects=lambda source, result: {})
    monkeypatch.setattr(cli, "_pipeline", lambda cfg, methods=(): pipeline)
    assert cli.main(["explain", str(mammogram), "--out", str(tmp_path / "out")]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_a_negative_calls_line_shows_no_region(monkeypatch, mammogram, tmp_path, capsys):
    line = _explain(monkeypatch, mammogram, tmp_path, capsys, score=0.3, after=0.1)
    assert line["region_pixels"] == 0 and line["method_region_pixels"] == 50
    assert line["call_survives_deletion"] is None


def test_a_call_taken_away_by_the_region_does_not_survive(monkeypatch, mammogram, tmp_path, capsys):
    line = _explain(monkeypatch, mammogram, tmp_path, capsys, score=0.9, after=0.2)
    assert line["region_pixels"] == 50 and line["call_survives_deletion"] is False
    line = _explain(monkeypatch, mammogram, tmp_path, capsys, score=0.9, after=0.7)
    assert line["call_survives_deletion"] is True


def test_a_refused_explanation_leaves_no_empty_out_folder(monkeypatch, mammogram, tmp_path, capsys):
    """--out is made before the minutes of work (a bad one costs none); a refusal there (no
    gradient) or a crash removes it again when this run made it and wrote nothing, and a folder
    that was there before stays."""
    from explain.counterfactual import NoGradient

    def refuse(src, method):
        raise NoGradient("the score's gradient is zero")

    monkeypatch.setattr(cli, "_pipeline", lambda cfg, methods=(): SimpleNamespace(explain=refuse))
    assert cli.main(["explain", str(mammogram), "--out", str(tmp_path / "new")]) == 2
    assert "the score's gradient is zero" in capsys.readouterr().err and not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    assert cli.main(["explain", str(mammogram), "--out", str(tmp_path / "kept")]) == 2
    assert (tmp_path / "kept").is_dir()

    def crash(src, method):
        raise RuntimeError("a model gone wrong")

    monkeypatch.setattr(cli, "_pipeline", lambda cfg, methods=(): SimpleNamespace(explain=crash))
    with pytest.raises(RuntimeError, match="a model gone wrong"):
        cli.main(["explain", str(mammogram), "--out", str(tmp_path / "new")])
    assert not (tmp_path / "new").exists()


def test_usage_errors_exit_2(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert cli.main(["explain", str(tmp_path / "missing.dcm"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("cfia: error: ")
    with pytest.raises(SystemExit) as stop:
        cli.main(["evaluate", "--data", str(tmp_path), "--out", str(tmp_path / "e"), "--passes", "0"])
    assert stop.value.code == 2


def test_a_requeue_that_fails_exits_2(tmp_path, capsys):
    spool = Spool(tmp_path / "spool").create()
    JobQueue(spool.queue_file).close()
    config = tmp_path / "config.yaml"
    config.write_text(f"spool:\n  folder: {spool.root}\n")
    assert cli.main(["requeue", "--config", str(config), "41"]) == 2
    assert "cfia requeue:" in capsys.readouterr().err


def test_an_existing_model_is_replaced_only_with_force(tmp_path):
    (tmp_path / "classifier.pt").write_bytes(b"model")
    with pytest.raises(cli.UsageError):
        commands._refuse_overwrite(tmp_path, commands.MODEL_FILES, replace=False)
    commands._refuse_overwrite(tmp_path, commands.MODEL_FILES, replace=True)
