"""Shared pieces of the browser tests: a person's page and the constants the tests agree on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from tests.support.servers import scaled

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

REPO = Path(__file__).resolve().parent.parent.parent
ARTIFACTS = REPO / "test-artifacts"
# Playwright's waits, scaled like the server helpers' (GATEWAY_TEST_TIMEOUT_FACTOR on slow CI).
TIMEOUT_MS = int(scaled(15) * 1000)


@dataclass
class ChatPage:
    """One person at the chat page, in a browser context of their own."""

    name: str
    context: BrowserContext
    page: Page
    errors: list[str] = field(default_factory=list)

    def close(self) -> None:
        self.context.close()


class OpenChat(Protocol):
    """`open_chat`: the page at base_url + path (`/?token=…` for one), entered as `name` (after
    `setup(page)`), at `status`."""

    def __call__(
        self,
        base_url: str,
        name: str,
        setup: Callable[[Page], None] | None = None,
        status: str = "connected",
        path: str = "/",
    ) -> ChatPage: ...
