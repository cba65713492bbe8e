"""Where the shipped config.yaml and models/ are found: the checkout first when it has both;
a folder holding config.yaml without models/ is passed over for <prefix>/share/cfia."""
from __future__ import annotations

import site
import sys
from pathlib import Path

from cfia import install


def _shipped(folder: Path, models: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text("{}\n")
    if models:
        (folder / "models").mkdir()
    return folder


def _prefix(monkeypatch, prefix: Path) -> None:
    monkeypatch.setattr(install.sysconfig, "get_path", lambda name: str(prefix))
    for attr in ("prefix", "base_prefix"):
        monkeypatch.setattr(sys, attr, str(prefix))
    monkeypatch.setattr(site, "USER_BASE", str(prefix))


def test_a_checkout_without_models_is_passed_over(tmp_path, monkeypatch):
    monkeypatch.setattr(install, "CHECKOUT", _shipped(tmp_path / "checkout", models=False))
    share = _shipped(tmp_path / "venv" / "share" / "cfia")
    _prefix(monkeypatch, tmp_path / "venv")
    assert install.shipped_root() == share


def test_a_complete_checkout_comes_first(tmp_path, monkeypatch):
    checkout = _shipped(tmp_path / "checkout")
    monkeypatch.setattr(install, "CHECKOUT", checkout)
    _shipped(tmp_path / "venv" / "share" / "cfia")
    _prefix(monkeypatch, tmp_path / "venv")
    assert install.shipped_root() == checkout
