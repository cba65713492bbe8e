"""`cfia train`'s command-line contract: what its final report calls held out, and Ctrl-C
ending a run with one line that says how to continue it."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from cfia.cli import main

ROOT = Path(__file__).resolve().parents[1]
CLASSIFIER = ["--input-size", "64x48", "--network-args", json.dumps({"channels": [4, 8, 8], "subunits": 1}),
              "--batch-size", "4", "--workers", "1", "--threads", "1", "--quiet"]
INPAINTER = ["--batch-size", "2", "--crop-size", "32", "--val-crops", "2", "--threads", "1"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    """Three sets of six small phantoms, other seeds, so other images: train, val, test."""
    root = tmp_path_factory.mktemp("train-cli")
    for name, seed in (("train", 21), ("val", 22), ("test", 23)):
        assert main(["phantom", "--out", str(root / name), "--count", "6", "--seed", str(seed),
                     "--size", "256x208", "--quiet"]) == 0
    return {name: root / name for name in ("train", "val", "test")}


def _classifier(folders, out, *extra) -> int:
    return main(["train", "classifier", "--data", str(folders["train"]), "--out", str(out),
                 "--cache-dir", str(Path(out).parent / "cache"), "--epochs", "1", *CLASSIFIER, *extra])


def _final(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_held_out_is_only_what_neither_trained_nor_selected(folders, tmp_path, capsys):
    """The validation set picks the epoch: its figures are reported as "validation", marked as
    used for selection; "held_out" is --test-data's alone, which must share no image with
    --data or --val-data (checked before any training)."""
    val, test = str(folders["val"]), str(folders["test"])
    assert _classifier(folders, tmp_path / "a", "--val-data", val) == 0
    final = _final(capsys)
    assert "held_out" not in final
    assert final["validation"]["used_for_selection"] is True and final["validation"]["data"] == [val]
    assert final["validation"]["n"] == 6

    assert _classifier(folders, tmp_path / "b", "--val-data", val, "--test-data", test) == 0
    final = _final(capsys)
    assert "validation" not in final and "best validation AUC" in final["selected"]
    assert final["held_out"]["data"] == [test] and final["held_out"]["n"] == 6

    for flag, shared in (("--val-data", val), ("--data", str(folders["train"]))):
        assert _classifier(folders, tmp_path / "c", "--val-data", val, "--test-data", shared) == 2
        assert f"--test-data shares 6 image(s) with {flag}" in capsys.readouterr().err
        assert not (tmp_path / "c" / "classifier.ckpt").exists()
    assert main(["train", "classifier", "--eval-only", "--data", val, "--model", str(tmp_path / "b" / "classifier.ts"),
                 "--test-data", test, *CLASSIFIER]) == 2
    assert "--test-data goes with training" in capsys.readouterr().err


def _default_ctrl_c() -> None:
    """In the child: SIGINT's default action. A shell that starts the suite in the background
    (`cmd &`) leaves SIGINT ignored, every child inherits that, and Python installs its Ctrl-C
    handler only where SIGINT is not ignored: the test's Ctrl-C would then do nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt_once(cmd: list, marker: bytes, timeout: float = 180) -> tuple[int, str]:
    """Run `cmd`, send it SIGINT (Ctrl-C) as soon as its stderr shows `marker`; (exit code, stderr)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=_default_ctrl_c)
    err, seen = bytearray(), threading.Event()

    def read():
        for chunk in iter(lambda: proc.stderr.read1(65536), b""):
            err.extend(chunk)
            if marker in err:
                seen.set()
        seen.set()  # the end of its output: it stopped by itself

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        seen.wait(timeout)
        what = " ".join(cmd[3:5])
        assert marker in err and proc.poll() is None, f"no {marker!r} from a running {what}: {bytes(err[-3000:])!r}"
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    return rc, err.decode(errors="replace")


def _one_line_naming(err: str, ckpt: Path) -> None:
    """The run ends with one line naming the checkpoint and its epoch, as the file holds it."""
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    epoch = torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"]
    assert err.rstrip().splitlines()[-1] == (f"cfia: stopped; the last checkpoint is {ckpt} (epoch {epoch}): "
                                             "the same command with --resume continues from it")


def test_ctrl_c_during_classifier_training_names_the_checkpoint_to_resume(folders, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cfia.cli", "train", "classifier", "--data", str(folders["train"]),
           "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--epochs", "100000", *CLASSIFIER]
    rc, err = _interrupt_once(cmd, b"epoch 2: {")  # logged after epoch 1's checkpoint was written
    assert rc == 130
    _one_line_naming(err, out / "classifier.ckpt")
    # ... and --resume does continue from it.
    stopped_at = torch.load(out / "classifier.ckpt", map_location="cpu", weights_only=False)["epoch"]
    assert main(cmd[3:] + ["--resume", "--stop-after", "1"]) == 0
    assert torch.load(out / "classifier.ckpt", map_location="cpu", weights_only=False)["epoch"] == stopped_at + 1


def _inpainter(data, out, *extra) -> list:
    return [sys.executable, "-m", "cfia.cli", "train", "inpainter", "--data", str(data), "--out", str(out), *extra]


def test_a_usage_error_through_python_m_is_one_line_and_exit_2(folders, tmp_path):
    """`python -m cfia.cli train ...` (the GPU script's way): the train commands' usage errors
    are cfia.cli's, which the __main__ copy of the module did not catch (a traceback, exit 1)."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "inpainter.pt").write_bytes(b"an earlier model")
    run = subprocess.run(_inpainter(folders["train"], out), capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.startswith("cfia: error: ") and run.stderr.count("\n") == 1, run.stderr


def test_ctrl_c_during_inpainter_training_names_the_checkpoint_or_says_there_is_none(folders, tmp_path):
    out = tmp_path / "run"
    cmd = _inpainter(folders["train"], out, *INPAINTER, "--crops-per-epoch", "4", "--epochs", "100000")
    rc, err = _interrupt_once(cmd, b"epoch 2/")  # epoch 2's bar: epoch 1's checkpoint is written
    assert rc == 130
    assert "read train: 100%" in err and "6/6" in err  # reading a site's images takes minutes: a bar says so
    _one_line_naming(err, out / "inpainter.ckpt")
    # Stopped in its first epoch, a run has no checkpoint to offer; an earlier run's left in
    # --out is not named as if it were this one's.
    other = tmp_path / "other"
    other.mkdir()
    (other / "inpainter.ckpt").write_bytes(b"an earlier run's")
    cmd = _inpainter(folders["train"], other, *INPAINTER, "--crops-per-epoch", "10000000", "--epochs", "1", "--force")
    rc, err = _interrupt_once(cmd, b"epoch 1/")
    assert rc == 130 and "Traceback" not in err
    assert err.rstrip().splitlines()[-1] == "cfia: stopped before this run wrote a checkpoint: nothing of it to resume"


def test_a_fresh_run_does_not_overwrite_an_earlier_runs_checkpoint(folders, tmp_path, capsys):
    """An interrupted run leaves its checkpoint and no model: the same command without --resume
    would overwrite the checkpoint with its first epoch. It stops, naming the file and its epoch,
    and the checkpoint is as it was; --force starts afresh."""
    out = tmp_path / "cls"
    assert _classifier(folders, out) == 0
    for name in ("classifier.pt", "classifier.ts", "classifier.json"):
        (out / name).unlink()
    ckpt = (out / "classifier.ckpt").read_bytes()
    capsys.readouterr()
    assert _classifier(folders, out) == 2
    assert (f"{out / 'classifier.ckpt'} holds an earlier run (epoch 1); give --resume to continue it, --force to "
            "start afresh over it") in capsys.readouterr().err
    assert (out / "classifier.ckpt").read_bytes() == ckpt
    assert _classifier(folders, out, "--force") == 0
    # A checkpoint cut short (a full disk, a copy) is named in one line, not torch's traceback.
    (out / "classifier.ckpt").write_bytes((out / "classifier.ckpt").read_bytes()[:5000])
    assert _classifier(folders, out, "--resume") == 2
    err = capsys.readouterr().err
    assert f"--resume: cannot read the checkpoint {out / 'classifier.ckpt'} (" in err and "Traceback" not in err
    assert "the same command without --resume and with --force" in err
    assert _classifier(folders, out, "--force") == 0  # ... which does start afresh
    # Stopped early on purpose, a run has its model too: the checkpoint, and --resume, are named first.
    out = tmp_path / "early"
    assert _classifier(folders, out, "--epochs", "2", "--stop-after", "1") == 0
    capsys.readouterr()
    assert _classifier(folders, out, "--epochs", "2") == 2
    assert (f"{out / 'classifier.ckpt'} holds an earlier run (epoch 1), and {out / 'classifier.pt'} exists; give "
            "--resume" in capsys.readouterr().err)

    out = tmp_path / "inp"
    out.mkdir()
    (out / "inpainter.ckpt").write_bytes(b"an earlier run's")
    assert main(_inpainter(folders["train"], out, *INPAINTER, "--crops-per-epoch", "2", "--epochs", "1")[3:]) == 2
    assert f"{out / 'inpainter.ckpt'} holds an earlier run; give --resume" in capsys.readouterr().err
    assert (out / "inpainter.ckpt").read_bytes() == b"an earlier run's"
    assert main(_inpainter(folders["train"], out, *INPAINTER, "--resume")[3:]) == 2
    assert f"--resume: cannot read the checkpoint {out / 'inpainter.ckpt'} (" in capsys.readouterr().err


def test_the_runs_time_left_is_said_after_each_epoch(folders, tmp_path, caplog):
    """The epoch's bar gives the epoch's ETA only; the run's, tens of epochs, is logged after
    each, at this process's mean epoch time."""
    import time

    from cfia.training.progress import run_left

    now = time.time()
    assert run_left(now - 120, 2, 3) == "3 epochs left, about 3 min"
    assert run_left(now - 3600, 1, 2) == "2 epochs left, about 2 h 00 min"
    assert run_left(now - 10, 1, 1) == "1 epoch left, under a minute"
    assert run_left(now, 5, 0) == "no epoch left"

    caplog.set_level("INFO")
    assert _classifier(folders, tmp_path / "c", "--epochs", "2") == 0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [line.split("; ")[-1] for line in lines] == ["1 epoch left, under a minute", "no epoch left"]
    # The command's own stderr, as a user sees it: under pytest the logging it sets up is pytest's.
    out = subprocess.run([sys.executable, "-m", "cfia.cli", "train", "inpainter", "--data", str(folders["train"]),
                          "--out", str(tmp_path / "i"), "--epochs", "2", "--crops-per-epoch", "2", "--quiet",
                          *INPAINTER], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    said = [line.split("; ")[-1] for line in out.stderr.splitlines() if " epoch " in line and "; " in line]
    assert said == ["1 epoch left, under a minute", "no epoch left"], out.stderr


class _RunsCode:
    """Unpickled, it would touch a file: what a weights file from elsewhere could do instead."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_weights_files_that_would_run_pickled_code_are_refused_not_run(folders, tmp_path, capsys):
    """--init, --resume's checkpoint and train average's --models read tensors only
    (torch.load weights_only): a file holding pickled code stops in one line, its code not run."""
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save({"model": _RunsCode(marker), "epoch": 1}, evil)
    good = tmp_path / "good.pt"
    from explain.networks import MammoNet

    torch.save(MammoNet(channels=(4, 8, 8), subunits=1).state_dict(), good)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "classifier.ckpt").write_bytes(evil.read_bytes())
    held = re.compile(r"it holds a pickled [\w.]+, not tensors alone")  # torch names the callable: getattr
    capsys.readouterr()
    assert _classifier(folders, tmp_path / "fresh", "--init", str(evil)) == 2
    err = capsys.readouterr().err
    assert f"--init: cannot read a state dict from {evil}: " in err and held.search(err), err
    assert _classifier(folders, tmp_path / "r", "--resume") == 2
    err = capsys.readouterr().err
    assert f"--resume: cannot read the checkpoint {tmp_path / 'r' / 'classifier.ckpt'} (" in err and held.search(err)
    assert main(["train", "average", "--models", str(evil), str(good), "--out", str(tmp_path / "avg"),
                 "--input-size", "64x48", "--network-args", json.dumps({"channels": [4, 8, 8], "subunits": 1})]) == 2
    err = capsys.readouterr().err
    assert f"cannot read a state dict from {evil}: " in err and held.search(err) and "\x1b" not in err
    assert not marker.exists()
