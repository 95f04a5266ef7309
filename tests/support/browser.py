"""Headless Chromium for the dashboard's tests and screenshots: Debian's `chromium` and
`chromium-driver` (scripts/test-deps.sh installs them) driven by Selenium. Nothing is downloaded: the
browser and its driver are the system's, found at fixed paths, and Selenium Manager is kept offline.

`missing()` says why a browser cannot run here (the tests skip with that reason); `Browser` wraps a
driver with the few waits the tests need, each polling a condition with a deadline."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

CHROMIUM = Path(os.environ.get("CRONRAFT_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CRONRAFT_CHROMEDRIVER", "/usr/bin/chromedriver"))
T = TypeVar("T")


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (make install: it is a dev extra)"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} not found: install Debian's {package} (scripts/test-deps.sh)"
    return None


# How long a page may take to show what a test waits for: a loaded 2-core machine (the CI run, tests in
# parallel beside a headless Chromium) once took more than 15 s to show the dashboard's login form.
WAIT_S = 30.0


class Browser:
    def __init__(self, *, width: int = 1280, height: int = 900) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager fetch a driver
        os.environ.setdefault("SE_AVOID_STATS", "true")
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for arg in (
            "--headless=new",
            "--no-sandbox",  # root in a container: Chromium's sandbox needs user namespaces
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--no-first-run",
            "--lang=en-US",
            f"--window-size={width},{height}",
        ):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        self.driver.set_page_load_timeout(30)

    def close(self) -> None:
        self.driver.quit()

    def get(self, url: str) -> None:
        self.driver.get(url)

    def wait(self, cond: Callable[[], T | None], what: str, timeout_s: float = WAIT_S) -> T:
        """Poll `cond` until it returns something truthy; its exceptions count as "not yet"."""
        deadline = time.monotonic() + timeout_s
        last: BaseException | None = None
        while True:
            try:
                value = cond()
                if value:
                    return value
            except Exception as e:
                last = e
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout_s} s waiting for {what} (last error: {last!r})"
                )
            time.sleep(0.1)

    def css(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, selector))

    def one(self, selector: str, timeout_s: float = WAIT_S) -> Any:
        """The first visible element matching `selector`, once there is one."""
        return self.wait(
            lambda: next((e for e in self.css(selector) if e.is_displayed()), None), selector, timeout_s
        )

    def text(self, selector: str) -> str:
        return "\n".join(e.text for e in self.css(selector))

    def wait_text(self, selector: str, needle: str, timeout_s: float = WAIT_S) -> str:
        return self.wait(
            lambda: needle in (t := self.text(selector)) and t, f"{needle!r} in {selector}", timeout_s
        )

    def click(self, selector: str) -> None:
        self.one(selector).click()

    def confirm(self) -> None:
        """Press the action's button of the confirmation dialog."""
        self.click("dialog .confirm-ok")
        self.wait(lambda: not self.css("dialog"), "the dialog to close")

    def fill(self, selector: str, value: str) -> None:
        field = self.one(selector)
        field.clear()
        field.send_keys(value)

    def console_errors(self) -> list[str]:
        """The page's JavaScript errors (network failures of expected statuses aside)."""
        return [
            e["message"]
            for e in self.driver.get_log("browser")
            if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]
        ]

    def screenshot(self, path: Path) -> None:
        self.driver.save_screenshot(str(path))

    def emulate(self, width: int, height: int, *, mobile: bool = False) -> None:
        """Lay the page out at exactly `width` x `height` CSS pixels (a phone's width included, which a
        window cannot be made as narrow as), through the DevTools protocol."""
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)

    def page_screenshot(
        self, path: Path, *, width: int, mobile: bool = False, max_height: int = 3000
    ) -> None:
        """The whole page at `width`, as tall as its content (at most `max_height`)."""
        self.emulate(width, 600, mobile=mobile)
        time.sleep(0.3)
        height = int(
            self.driver.execute_script("return Math.ceil(document.body.getBoundingClientRect().bottom)")
        )
        self.emulate(width, min(max(height + 16, 400), max_height), mobile=mobile)
        time.sleep(0.3)
        self.driver.save_screenshot(str(path))
