"""`gateway serve` (one process): the exposition honours the contract, logs are JSON lines."""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families

from gateway import __version__
from tests.observability.spec import PROCESS_METRICS, contract_problems
from tests.support.clients import of_type, open_ws, recv_until
from tests.support.metrics import scrape
from tests.support.servers import start_gateway, wait_until

MARKER = "confidential-chat-words-7f3a"
TOKEN = "tok-should-never-be-logged-91c"


async def test_exposition_has_every_spec_metric_and_label_set() -> None:
    with start_gateway() as server:
        ws = await open_ws(server.ws_url("/ws/alice"))
        await ws.send('{"type":"message","text":"hi"}')
        await recv_until(ws, of_type("message"))
        text = server.get("/metrics").text
        await ws.close()

    assert contract_problems(text) == []
    families = {family.name: family for family in text_string_to_metric_families(text)}
    (info,) = families["gateway_info"].samples
    assert info.labels == {"version": __version__}
    for name in PROCESS_METRICS:
        family = families[name.removesuffix("_total")]
        assert [sample.labels for sample in family.samples] == [{}]
    assert not any(name.endswith("_created") for name in families)


async def test_rejections_move_the_counter_by_exactly_their_number() -> None:
    env = {"GATEWAY_MAX_MESSAGE_BYTES": "10", "GATEWAY_RATE_LIMIT": "0"}
    with start_gateway(env) as server:
        ws = await open_ws(server.ws_url("/ws/bob"))
        await recv_until(ws, of_type("joined"))
        before = scrape(server.base_url)
        for _ in range(3):
            await ws.send('{"type":"message","text":"far longer than ten bytes"}')
            await recv_until(ws, of_type("error", code="too_large"))
        for _ in range(2):
            await ws.send('{"type":"nonsense"}')
            await recv_until(ws, of_type("error", code="invalid"))
        after = scrape(server.base_url)
        await ws.close()

    def moved(reason: str) -> float:
        key = ("gateway_messages_rejected_total", (("reason", reason),))
        return after[key] - before[key]

    assert (moved("too_large"), moved("invalid"), moved("rate_limited")) == (3, 2, 0)


async def test_logs_are_json_lines_with_ids_and_no_chat_text() -> None:
    with start_gateway({"GATEWAY_LOG_LEVEL": "info"}) as server:
        ws = await open_ws(server.ws_url(f"/ws/carol?token={TOKEN}"))
        await ws.send(json.dumps({"type": "message", "text": MARKER}))
        await recv_until(ws, of_type("message"))
        await ws.close()
        wait_until(lambda: "connection closed" in server.log(), 10, "no close logged")
        log = server.log()

    assert MARKER not in log
    assert TOKEN not in log
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    for record in records:
        assert {"ts", "level", "event", "logger", "pid"} <= record.keys(), record
        assert record["pid"] == server.pid
    opened = [r for r in records if r["event"] == "connection opened"]
    closed = [r for r in records if r["event"] == "connection closed"]
    assert len(opened) == len(closed) == 1
    assert opened[0]["user"] == closed[0]["user"] == "carol"
    assert opened[0]["connection_id"] == closed[0]["connection_id"]
    assert closed[0]["reason"] == "client"
    assert closed[0]["code"] == 1000
    assert any(r["logger"].startswith("uvicorn") for r in records)
    # One line each way at info: uvicorn's and websockets' own lifecycle lines are at debug.
    repeated = [r["event"] for r in records if r["logger"] == "uvicorn.error"]
    assert not [e for e in repeated if "[accepted]" in e or e.startswith("connection ")], repeated
