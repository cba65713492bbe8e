"""A wheel install (`pip install .`, not the Makefile's editable one) finds the shipped
config and models: they cannot sit beside the packages there (cfia/install.py)."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cfia", "listener", "explain", "dicom_out", "phantom")
FILES = ("setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md", "config.yaml")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A venv seeing this environment's dependencies, with cfia installed from a wheel
    built from a copy of the source (a build must not write into the checkout)."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    for name in PACKAGES:
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(ROOT / "models", src / "models")
    for name in FILES:
        shutil.copy(ROOT / name, src / name)
    run = dict(check=True, capture_output=True, text=True, timeout=300)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    str(src), "-w", str(tmp / "dist")], **run)
    subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], **run)
    _see_dependencies(tmp / "venv")
    wheel = next((tmp / "dist").glob("cfia-*.whl"))
    subprocess.run([str(tmp / "venv" / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                   **run)
    return tmp / "venv"


def _see_dependencies(venv: Path) -> None:
    """The new venv imports the dependencies this interpreter imports: its site folders, listed
    in a .pth file. Not --system-site-packages, which gives the BASE interpreter's packages, not
    those of a venv running the suite (README's `make test PYTHON=venv/bin/python`). Folders named
    in a .pth file have no .pth files of their own read, so this checkout's editable install
    does not come along."""
    sites = [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and Path(p).is_dir()]
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    target = subprocess.run([str(venv / "bin" / "python"), "-c", where],
                            check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    (Path(target) / "cfia-test-dependencies.pth").write_text("\n".join(sites) + "\n", encoding="utf-8")


def test_a_wheel_install_uses_the_shipped_config_and_models(venv, tmp_path):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    shown = subprocess.run([str(venv / "bin" / "cfia"), "config", "show"], cwd=elsewhere,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    cfg = yaml.safe_load(shown.stdout)
    share = venv / "share" / "cfia"
    assert cfg == yaml.safe_load(subprocess.run(
        [sys.executable, "-m", "cfia.cli", "config", "show", "--config", str(share / "config.yaml")],
        capture_output=True, text=True, timeout=120, check=True).stdout)
    for model in ("classifier", "inpainter"):
        installed = Path(cfg["models"][model]["path"])
        assert installed.parent == share / "models", installed
        assert _sha(installed) == _sha(ROOT / "models" / installed.name)
    # The package imported is the installed one, not this checkout's.
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import cfia; print(cfia.__file__)"],
                           cwd=elsewhere, capture_output=True, text=True, timeout=60, check=True).stdout
    assert Path(where.strip()).is_relative_to(venv)
