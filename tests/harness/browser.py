"""Headless Debian Chromium driven by Selenium, with WebGL through SwiftShader.

    with Chromium(window=(1600, 1000)) as browser:
        browser.driver.get(url)
        browser.wait_js("return !!window.services", timeout=60)
        browser.console()          # every console entry so far: [{level, message, ...}]
        browser.screenshot(path)

Uses /usr/bin/chromium and /usr/bin/chromedriver (Debian `chromium`, `chromium-driver`)
explicitly, so Selenium Manager never tries to download a browser. Each browser gets a
new empty profile folder, removed on exit.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1",
    # WebGL (OHIF's Cornerstone3D renders with it) in software:
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
)


def available() -> str | None:
    """None if Chromium, chromedriver and Selenium are here, else why not."""
    for exe, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(exe).exists():
            return f"{exe} not found (apt-get install {package})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


class Chromium:
    def __init__(self, window: tuple[int, int] = (1600, 1000), page_load_timeout: float = 60):
        self.window = window
        self.page_load_timeout = page_load_timeout
        self.driver = None
        self.profile: Path | None = None
        self._console: list[dict[str, Any]] = []

    def start(self) -> "Chromium":
        why = available()
        if why:
            raise RuntimeError(why)
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = Path(tempfile.mkdtemp(prefix="cfia-chromium-"))
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile}")
        options.add_argument(f"--window-size={self.window[0]},{self.window[1]}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(executable_path=CHROMEDRIVER, log_output=str(self.profile.with_suffix(".driver.log")))
        self.driver = webdriver.Chrome(options=options, service=service)
        self.driver.set_page_load_timeout(self.page_load_timeout)
        self.driver.set_script_timeout(120)
        return self

    def stop(self) -> None:
        if self.driver is not None:
            try:
                self.driver.quit()
            finally:
                self.driver = None
        if self.profile is not None:
            shutil.rmtree(self.profile, ignore_errors=True)
            self.profile.with_suffix(".driver.log").unlink(missing_ok=True)
            self.profile = None

    def __enter__(self) -> "Chromium":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers ---------------------------------------------------------------------
    def console(self) -> list[dict[str, Any]]:
        """All console entries since start (chromedriver hands each out once; kept here)."""
        self._console.extend(self.driver.get_log("browser"))
        return list(self._console)

    def console_mark(self) -> int:
        """An index into console(): entries after it are new."""
        return len(self.console())

    def wait_js(self, script: str, timeout: float, interval: float = 0.25, what: str | None = None, *args) -> Any:
        """Run `script` (a function body that returns) until its result is truthy."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.driver.execute_script(script, *args)
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{what or script[:120]!r} not true within {timeout:g} s")
            time.sleep(interval)

    def screenshot(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.driver.save_screenshot(str(path)):
            raise RuntimeError(f"screenshot {path} failed")
        return path
