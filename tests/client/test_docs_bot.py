"""The bot of docs/client.md runs as printed: extracted from that page, started against a real
server, asked ``!ping`` in ``support``, it answers. Documentation that stops working fails."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.client import Client, Message, Presence
from tests.client.support import Recorder
from tests.support.servers import GatewayProcess, scaled, start_gateway

CLIENT_DOC = Path(__file__).resolve().parents[2] / "docs" / "client.md"


def docs_bot() -> str:
    section = CLIENT_DOC.read_text().split("\n## ", 1)[0]  # the page up to its first section
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "no python block at the top of docs/client.md"
    return match.group(1)


def test_the_front_page_shows_the_same_bot() -> None:
    readme = (CLIENT_DOC.parents[1] / "README.md").read_text()
    section = readme.split("## A bot in 15 lines", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "no bot on the README's front page"
    assert match.group(1) == docs_bot()


def test_the_bot_is_about_fifteen_lines() -> None:
    lines = [line for line in docs_bot().splitlines() if line.strip()]
    assert len(lines) <= 16, len(lines)


@pytest.fixture
def server() -> Iterator[GatewayProcess]:
    with start_gateway() as gateway:
        yield gateway


def bot_in_support(recorder: Recorder) -> bool:
    return any(
        isinstance(e, Presence) and e.room == "support" and "ping-bot" in (e.user, *e.joined_users)
        for e in recorder.events
    )


def answered(recorder: Recorder) -> bool:
    return any(
        isinstance(e, Message) and e.sender == "ping-bot" and e.text == "pong, asker"
        for e in recorder.events
    )


async def test_the_docs_bot_answers(server: GatewayProcess, tmp_path: Path) -> None:
    script = tmp_path / "bot.py"
    script.write_text(docs_bot())
    client = Client(server.ws_url(""), "asker", rooms=["support"])
    async with asyncio.timeout(scaled(10)):
        await client.connect()
    asker = Recorder(client)
    bot = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        env={**os.environ, "GATEWAY_URL": server.ws_url("")},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await asker.until(lambda: bot_in_support(asker), 15, "the bot in support")
        await client.send("support", "!ping")
        await asker.until(lambda: answered(asker), 10, "the bot's answer")
    finally:
        await asker.close()
        if bot.returncode is None:
            bot.terminate()
        async with asyncio.timeout(scaled(10)):
            output, _ = await bot.communicate()
    assert bot.returncode == -signal.SIGTERM, output.decode()  # it ran until stopped
