"""SIGTERM to ``gateway serve`` with clients connected: a drain, not a reconnect storm.

The server under test keeps a small kernel send buffer, so a client that stops reading makes
the server hold frames in its queue: that client keeps the drain open while the test looks at
the server (readiness, metrics, new upgrades), and shows that queued frames are flushed before
the close, or, when the client never reads, what a deadline cuts off.
"""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

from tests.drain.support import (
    BULK,
    BULK_TEXT,
    ExitWatch,
    assert_sent_away,
    drain_env,
    publish,
    record,
)
from tests.support.clients import (
    announces,
    of_type,
    open_ws,
    recv_text_until,
    recv_until,
    text_announces,
)
from tests.support.metrics import metric
from tests.support.rawws import StalledClient
from tests.support.servers import GatewayProcess, scaled, start_gateway, wait_until

LOBBY = 20


def drain_log(server: GatewayProcess) -> dict[str, Any]:
    lines: list[dict[str, Any]] = [
        json.loads(line) for line in server.log().splitlines() if line.startswith("{")
    ]
    found = [line for line in lines if line.get("logger") == "gateway.drain"]
    assert len(found) == 1, f"expected one drain log line, got {found}"
    return found[0]


def stalled_bulk_member(server: GatewayProcess) -> StalledClient:
    """A client in rooms lobby and bulk that will not read again until told."""
    stalled = StalledClient(server.port, "/ws/stalled")
    stalled.send_json({"type": "join", "room": "bulk"})
    stalled.read_until(b'"type":"joined","room":"bulk"')
    return stalled


async def test_sigterm_sends_everyone_away_flushed_in_order_and_exits_in_time() -> None:
    drain_timeout = scaled(6)
    with start_gateway(drain_env(drain_timeout)) as server:
        stalled = stalled_bulk_member(server)
        readers = [await open_ws(server.ws_url(f"/ws/reader-{n}")) for n in range(3)]
        text_reader = await open_ws(server.ws_url("/ws?format=text"))
        publisher = await open_ws(server.ws_url("/ws/publisher"))
        for ws in readers:
            await recv_until(ws, announces("publisher"))
        await recv_text_until(text_reader, text_announces("publisher"))
        await publisher.send(json.dumps({"type": "join", "room": "bulk"}))
        await recv_until(publisher, of_type("joined", room="bulk"))

        recordings = [asyncio.create_task(record(ws, within=30)) for ws in readers]
        text_recording = asyncio.create_task(record(text_reader, within=30))
        bulk_ids = await publish(publisher, "bulk", [f"{n}:{BULK_TEXT}" for n in range(BULK)])
        lobby_ids = await publish(publisher, "lobby", [f"hello {n}" for n in range(LOBBY)])
        publisher_recording = asyncio.create_task(record(publisher, within=30))

        server.signal(signal.SIGTERM)
        exit_watch = ExitWatch.of(server.process)

        # The stalled client holds the drain open: the server says it is draining...
        wait_until(lambda: server.get("/readyz").status_code == 503, 5, "/readyz stayed 200")
        assert server.get("/readyz").json() == {"status": "draining"}
        assert metric(server.base_url, "gateway_draining") == 1
        # ...sends a new connection away at once...
        late = await record(await open_ws(server.ws_url("/ws/late")))
        assert [e["type"] for e in late.events] == ["reconnect"]
        assert_sent_away(late, "late")
        # ...and every reading client got its messages, then the hint, then 1012.
        for n, received in enumerate(await asyncio.gather(*recordings)):
            assert [m["id"] for m in received.messages("lobby")] == lobby_ids
            assert_sent_away(received, f"reader-{n}")
        text = await text_recording
        assert text.close_code == 1012
        assert text.texts[-1].startswith("Server restarting. Reconnect in ")
        assert text.texts[-LOBBY - 1 : -1] == [f"publisher: hello {n}" for n in range(LOBBY)]
        assert_sent_away(await publisher_recording, "publisher")
        wait_until(
            lambda: (
                metric(server.base_url, "gateway_connections_closed_total", reason="drain") == 6
            ),
            5,
            "3 readers, the text reader, the publisher and the late one: 6 drain closes",
        )
        # Everyone left the presence, the stalled client too (its queue is still flushing).
        assert server.get("/api/rooms/lobby/presence").json()["online"] == []
        assert server.alive(), "exited while a client's queue was still unflushed"

        # The stalled client reads again: its whole queue comes, in order, then hint and 1012.
        got, reset = stalled.read_to_end(timeout=drain_timeout)
        stalled.close()
        assert not reset
        assert [m["id"] for m in got.messages("bulk")] == bulk_ids
        assert [m["id"] for m in got.messages("lobby")] == lobby_ids
        assert_sent_away(got, "stalled")

        elapsed = exit_watch.seconds(drain_timeout)
        assert elapsed < drain_timeout, f"exit took {elapsed:.2f} s"
        line = drain_log(server)
        assert (line["drained"], line["cut"]) == (6, 0), line
        assert "drained 6 connections" in line["event"]
        print(f"\ndrained {line['drained']} in {line['duration_seconds']} s, exit {elapsed:.2f} s")


async def test_a_client_that_never_reads_is_cut_at_the_deadline_and_the_rest_still_drain() -> None:
    drain_timeout = scaled(2)
    with start_gateway(drain_env(drain_timeout)) as server:
        stalled = stalled_bulk_member(server)
        reader = await open_ws(server.ws_url("/ws/reader"))
        publisher = await open_ws(server.ws_url("/ws/publisher"))
        await recv_until(reader, announces("publisher"))
        await publisher.send(json.dumps({"type": "join", "room": "bulk"}))
        await recv_until(publisher, of_type("joined", room="bulk"))
        bulk_ids = await publish(publisher, "bulk", [f"{n}:{BULK_TEXT}" for n in range(BULK)])
        recordings = [asyncio.create_task(record(ws)) for ws in (reader, publisher)]

        server.signal(signal.SIGTERM)
        exit_watch = ExitWatch.of(server.process)
        for who, received in zip(
            ("reader", "publisher"), await asyncio.gather(*recordings), strict=True
        ):
            assert_sent_away(received, who)
        elapsed = exit_watch.seconds(drain_timeout + 5)

        got, _ = stalled.read_to_end()
        stalled.close()
        delivered = [m["id"] for m in got.messages("bulk")]
        lost = len(bulk_ids) - len(delivered)
        print(
            f"\ncut at the deadline after {elapsed:.2f} s: the stalled client got "
            f"{len(delivered)} of {len(bulk_ids)} messages; lost {lost} messages, the reconnect "
            f"hint and the close frame (it sees a dropped connection and must resume on its own)"
        )
        assert elapsed < drain_timeout, f"a stuck client held the exit for {elapsed:.2f} s"
        assert delivered == bulk_ids[: len(delivered)], "what did arrive came in order"
        assert lost > 0
        assert got.close_code is None
        assert not got.of_type("reconnect")
        line = drain_log(server)
        assert (line["drained"], line["cut"]) == (3, 1), line


async def test_a_drain_takes_as_long_as_its_clients_not_the_timeout() -> None:
    """With the default 25 s timeout, clients that read promptly let the worker go at once."""
    env = {**drain_env(25.0), "GATEWAY_DRAIN_JITTER": "5"}
    with start_gateway(env) as server:
        clients = [await open_ws(server.ws_url(f"/ws/c{n}")) for n in range(20)]
        assert server.get("/readyz").status_code == 200
        assert metric(server.base_url, "gateway_draining") == 0
        recordings = [asyncio.create_task(record(ws)) for ws in clients]
        server.signal(signal.SIGTERM)
        exit_watch = ExitWatch.of(server.process)
        hints = []
        for n, received in enumerate(await asyncio.gather(*recordings)):
            assert received.close_code == 1012, n
            hints.append(received.of_type("reconnect")[-1]["after_ms"])
        elapsed = exit_watch.seconds(25)
        assert elapsed < 5, f"an easy drain took {elapsed:.2f} s"
        assert drain_log(server)["drained"] == 20
        assert all(0 <= hint <= 5000 for hint in hints)
        assert len(set(hints)) > 10, f"the hints are not spread: {sorted(hints)}"
