"""Shared fixtures: small synthetic mammograms and the dciodvfy runner."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def dciodvfy_errors(path: Path) -> list[str]:
    """Error lines dciodvfy (dicom3tools) reports for a file; warnings are not errors."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.fail("dciodvfy is not installed (apt-get install dicom3tools)")
    out = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """Eight small phantoms (half with lesions) written by the real command."""
    from cfia.cli import main

    out = tmp_path_factory.mktemp("phantom")
    assert main(["phantom", "--out", str(out), "--count", "8", "--seed", "7", "--size", "512x416", "--quiet"]) == 0
    return out
