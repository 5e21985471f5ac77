"""A headless Chromium for the report's browser tests (Debian's `chromium`, driven by Playwright).

`make test` installs Debian's chromium when it is missing (see the Makefile's `browser` target). Where it
is still missing, the browser tests fail under CI (CI=true: the set-up is broken) and are skipped
locally with the reason. Chromium runs with a fresh profile and no background networking, as this
machine's closed network needs.
"""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run", "--disable-quic"]


def chromium_path() -> str | None:
    """The Chromium binary: $SONGTRACE_CHROMIUM, else `chromium` (Debian) or `chromium-browser` on PATH."""
    return os.environ.get("SONGTRACE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason}; `make test` installs it (apt-get install chromium; pip install playwright)")
    pytest.skip(f"{reason} (install Debian's chromium and `pip install playwright` to run the browser tests)")


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """A headless Chromium browser (Playwright), closed at the end of the session."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed")
    path = chromium_path()
    if path is None:
        _missing("no chromium on PATH")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(str(profile), executable_path=path, headless=True, args=CHROMIUM_FLAGS,
                                                          viewport={"width": 1280, "height": 900})
        yield browser
        browser.close()
