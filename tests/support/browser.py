"""Headless Chromium for the page tests: Debian's ``chromium`` driven by playwright.

Playwright's own browser download needs the internet, so the system's Chromium is launched
by path (``WATCHTIME_CHROMIUM``, else Debian's binary). Every request the page makes to a
host other than the loopback is aborted and recorded, and Content-Security-Policy refusals
(a request the page tried and the browser stopped) are recorded too, so a test can assert
that nothing tried to leave the machine. Chromium's own background traffic is switched off
and its host resolver knows only the loopback.

``make test`` sets ``WATCHTIME_REQUIRE_BROWSER=1`` after installing chromium: there a missing
browser fails the tests instead of skipping them.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support import ROOT

REQUIRED = os.environ.get("WATCHTIME_REQUIRE_BROWSER") == "1"
ARTIFACTS = Path(os.environ.get("WATCHTIME_ARTIFACTS", ROOT / "artifacts"))
"""Where screenshots go (git-ignored): kept after the run for a person to look at."""

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

FLAGS = [
    "--no-sandbox",  # CI containers run as root, where Chromium's sandbox cannot start
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-sync",
    "--no-first-run",
    "--no-pings",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]


def chromium() -> str:
    """The Chromium binary; fails (``WATCHTIME_REQUIRE_BROWSER=1``) or skips without one."""
    given = os.environ.get("WATCHTIME_CHROMIUM")
    candidates = [given] if given else ["/usr/lib/chromium/chromium", "chromium"]
    for candidate in candidates:
        found = shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
        if found:
            return found
    message = "no Chromium: install Debian's chromium (make system-deps) or set WATCHTIME_CHROMIUM"
    if REQUIRED:
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Traffic:
    """What pages asked for: every URL, those sent off the loopback, CSP refusals, errors."""

    requested: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@contextmanager
def browser_page(width: int = 1280, height: int = 900) -> Iterator[tuple[Any, Traffic]]:
    """A fresh page of a headless Chromium, with the network fenced to the loopback."""
    from playwright.sync_api import sync_playwright

    path = chromium()
    traffic = Traffic()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})

            def route(r: Any) -> None:
                url = r.request.url
                traffic.requested.append(url)
                host = urlsplit(url).hostname
                if url.startswith(("data:", "blob:")) or host in LOOPBACK:
                    r.continue_()
                else:
                    traffic.outside.append(url)
                    r.abort()

            def console(message: Any) -> None:
                if "Content Security Policy" in message.text or "Refused to" in message.text:
                    traffic.refused.append(message.text)
                elif message.type == "error":
                    traffic.errors.append(message.text)

            page.route("**/*", route)
            page.on("console", console)
            page.on("pageerror", lambda exc: traffic.errors.append(str(exc)))
            yield page, traffic
        finally:
            browser.close()


def screenshot(page: Any, name: str, full_page: bool = False) -> Path:
    """Keep a screenshot under ARTIFACTS."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=full_page)
    return path


def timed(action: Any) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started
