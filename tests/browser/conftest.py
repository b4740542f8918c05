"""Fixtures for the chat page's end-to-end tests in headless Chromium (Playwright, sync API).

Chromium is Debian's `chromium` package (scripts/install-browser.sh installs it); Playwright only
drives it (`executable_path`), it never downloads a browser. Without Chromium or the `playwright`
package the browser tests skip with the reason, except under CI=true, where they fail instead.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NoReturn

import pytest

from tests.support.skips import unavailable

from .helpers import TIMEOUT_MS, ChatPage, OpenChat

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page

CHROMIUM_CANDIDATES = (
    "/usr/lib/chromium/chromium",  # Debian's binary, without the wrapper script's shell noise
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-dev-shm-usage",
]


def find_chromium() -> str | None:
    """The Chromium to drive: $CHROMIUM_PATH if set, else Debian's package."""
    configured = os.environ.get("CHROMIUM_PATH")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    for candidate in CHROMIUM_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


def skip_or_fail(reason: str) -> NoReturn:
    unavailable(reason, "CI must run the browser tests: see scripts/install-browser.sh")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if importlib.util.find_spec("playwright") is None:
        skip_or_fail("the playwright package is not installed (pip install -e '.[test]')")
    path = find_chromium()
    if path is None:
        skip_or_fail("no Chromium here: run scripts/install-browser.sh (apt package 'chromium')")
    assert path is not None
    return path


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Browser]:
    """Module-scoped: Playwright's sync API runs an event loop in this thread while it is open,
    and every asyncio test after it would find that loop running."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def open_chat(browser: Browser) -> Iterator[OpenChat]:
    """Opens the page at base_url + path (after `setup(page)`), enters as `name`, waits for
    `status`."""
    from playwright.sync_api import expect

    opened: list[ChatPage] = []

    def open_page(
        base_url: str,
        name: str,
        setup: Callable[[Page], None] | None = None,
        status: str = "connected",
        path: str = "/",
    ) -> ChatPage:
        context = browser.new_context(viewport={"width": 1100, "height": 680})
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        chat = ChatPage(name, context, page)

        def on_console(message: ConsoleMessage) -> None:
            # A refused connection while the server restarts is logged by Chromium itself.
            if message.type == "error" and "WebSocket connection" not in message.text:
                chat.errors.append(f"console error: {message.text}")

        def on_dialog(dialog: Dialog) -> None:
            chat.errors.append(f"a dialog opened (script ran?): {dialog.message}")
            dialog.dismiss()

        page.on("pageerror", lambda error: chat.errors.append(f"page error: {error}"))
        page.on("console", on_console)
        page.on("dialog", on_dialog)
        if setup is not None:
            setup(page)
        page.goto(base_url + path)
        page.locator("#name").fill(name)
        page.locator("#enter").click()
        expect(page.locator("#status")).to_have_text(status, timeout=TIMEOUT_MS)
        opened.append(chat)
        return chat

    yield open_page
    errors = [f"{chat.name}: {error}" for chat in opened for error in chat.errors]
    for chat in opened:
        chat.close()
    assert not errors, "the page reported errors:\n" + "\n".join(errors)
