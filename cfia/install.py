"""Where the shipped config.yaml and models/ are.

In a checkout (the Makefile's editable install) they sit beside the packages. A wheel
(`pip install .`) cannot put files there: setup.cfg's data_files installs them into
<prefix>/share/cfia, the prefix being the venv's, the system's or the user's.
"""
from __future__ import annotations

import site
import sys
import sysconfig
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
SHARE = Path("share") / "cfia"


def shipped_root() -> Path:
    """The first folder holding the shipped config.yaml; the checkout when none does
    (its missing files are then reported where they are used)."""
    prefixes = [Path(sysconfig.get_path("data")), Path(sys.prefix), Path(site.USER_BASE or sys.prefix),
                Path(sys.base_prefix)]  # the last: a system-wide install seen from a venv
    for folder in [CHECKOUT, *(prefix / SHARE for prefix in prefixes)]:
        if (folder / "config.yaml").is_file() and (folder / "models").is_dir():
            return folder
    return CHECKOUT


SHIPPED_ROOT = shipped_root()
SHIPPED_CONFIG = SHIPPED_ROOT / "config.yaml"
SHIPPED_MODELS = SHIPPED_ROOT / "models"
