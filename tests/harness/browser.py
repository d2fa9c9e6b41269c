"""The browser tests' Chromium: Debian's (``apt-get install -y chromium``), driven by playwright
with ``executable_path`` (playwright's own browser download is never used). A test that needs it
carries ``@needs_chromium`` (skipped, with the reason, where Chromium is missing);
:func:`chromium_page` skips where the playwright package is. Screenshots go to ``ARTIFACTS``."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install -y chromium)")


@contextlib.contextmanager
def chromium_page(profile: Path, width: int = 1920, height: int = 1080) -> Iterator[tuple[Any, list[str]]]:
    """A page of Debian's Chromium, headless, on a fresh profile (``--user-data-dir``), and the
    list its uncaught page errors go to; closed on leaving."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            yield page, errors
        finally:
            context.close()
