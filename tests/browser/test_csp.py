"""The Content-Security-Policy in a real Chromium: in force (an injected inline script does not
run), yet the chat page and the API docs work under it without a single violation, and every
request they make goes to the gateway itself."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.support.servers import GatewayProcess, scaled, start_gateway

from .helpers import TIMEOUT_MS, OpenChat

pytestmark = pytest.mark.browser

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

with contextlib.suppress(ImportError):
    from playwright.sync_api import expect

API_KEY = "browser-csp-key-" + "k" * 32
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""
INJECT_INLINE = """() => {
  const script = document.createElement("script");
  script.textContent = "window.__inlineRan = true";
  document.head.append(script);
}"""


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    env = {"GATEWAY_API_KEY": API_KEY, "GATEWAY_API_DOCS": "true", "GATEWAY_RATE_LIMIT": "0"}
    with start_gateway(env) as server:
        yield server


def violations(page: Page) -> list[str]:
    return list(page.evaluate("window.__violations"))


def watch(page: Page, origin: str, elsewhere: list[str]) -> None:
    page.add_init_script(RECORD_VIOLATIONS)
    page.on(
        "request",
        lambda request: (
            None if request.url.startswith((origin, "data:")) else elsewhere.append(request.url)
        ),
    )


def test_the_chat_page_works_under_the_policy_which_is_in_force(
    open_chat: OpenChat, gateway: GatewayProcess
) -> None:
    elsewhere: list[str] = []
    alice = open_chat(
        gateway.base_url, "alice", setup=lambda p: watch(p, gateway.base_url, elsewhere)
    )
    page = alice.page
    page.locator("#text").fill("under the policy")
    page.locator("#send").click()
    expect(page.locator("#logs .msg .text", has_text="under the policy")).to_have_count(1)
    assert violations(page) == [], "the page broke its own policy"
    assert elsewhere == []

    page.evaluate(INJECT_INLINE)
    page.wait_for_function("() => window.__violations.length > 0", timeout=TIMEOUT_MS)
    assert page.evaluate("window.__inlineRan === undefined"), "an inline script ran"
    assert [v.split()[0] for v in violations(page)] == ["script-src-elem"], violations(page)
    alice.errors.clear()  # Chromium logs the refused script as a console error: expected here


def test_an_api_message_is_shown_as_the_apis(open_chat: OpenChat, gateway: GatewayProcess) -> None:
    """Even under the viewer's own name, a publish through the API is not shown as theirs."""
    page = open_chat(gateway.base_url, "bea").page
    response = httpx.post(
        gateway.base_url + "/api/rooms/lobby/messages",
        json={"text": "from the server", "sender": "bea"},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=scaled(5),
    )
    assert response.status_code == 202
    shown = page.locator("#logs .msg", has_text="from the server")
    expect(shown).to_have_count(1)
    expect(shown).to_have_class("msg api")


@pytest.mark.parametrize(("path", "rendered"), [("/docs", ".swagger-ui .info"), ("/redoc", "h1")])
def test_the_api_docs_render_from_the_gateway_alone(
    browser: Browser, gateway: GatewayProcess, path: str, rendered: str
) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        elsewhere: list[str] = []
        errors: list[str] = []
        watch(page, gateway.base_url, elsewhere)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(gateway.base_url + path)
        expect(page.locator(rendered).first).to_contain_text("gateway", timeout=TIMEOUT_MS)
        assert violations(page) == []
        assert elsewhere == []
        assert errors == []
    finally:
        context.close()
