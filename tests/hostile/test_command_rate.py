"""One client's join/leave churn must not become every room member's work.

Each ``join`` and ``leave`` is a presence event to every member of the room: 1,000 pairs from
one connection were 2,002 events at each of its listeners, and nothing stopped the client.
``GATEWAY_COMMAND_RATE_LIMIT`` (default 30 per 10 s) bounds the commands per connection; over
it the client gets ``rate_limited`` errors, and after the strikes it is closed with 1008.
"""

from __future__ import annotations

import contextlib
import json

from websockets.exceptions import ConnectionClosed

from tests.support.clients import EventReader, open_ws
from tests.support.metrics import metric
from tests.support.servers import start_gateway

ROOM = "arena"
LISTENERS = 6
PAIRS = 1_000
LIMIT = 30
STRIKES = 5
REJECTED = "gateway_messages_rejected_total"


class Listener(EventReader):
    def presence_of(self, user: str) -> int:
        return sum(1 for e in self.events if e.get("type") == "presence" and e.get("user") == user)

    def texts(self) -> list[str]:
        return [e["text"] for e in self.events if e.get("type") == "message"]


async def joined(url: str) -> Listener:
    client = Listener(await open_ws(url))
    await client.until(lambda: client.has("joined", room="lobby"), 10, "lobby")
    await client.send({"type": "join", "room": ROOM})
    await client.until(lambda: client.has("joined", room=ROOM), 10, f"joined {ROOM}")
    return client


async def test_join_leave_churn_is_limited_and_the_abuser_closed_with_1008() -> None:
    env = {
        "GATEWAY_COMMAND_RATE_LIMIT": f"{LIMIT}/10",
        "GATEWAY_RATE_LIMIT_STRIKES": str(STRIKES),
        "GATEWAY_RATE_LIMIT": "0",
    }
    with start_gateway(env) as server:
        listeners = [await joined(server.ws_url(f"/ws/listener{n}")) for n in range(LISTENERS)]
        abuser = await joined(server.ws_url("/ws/abuser"))
        rejected_before = metric(server.base_url, REJECTED, reason="rate_limited")
        try:
            sent = 0
            leave = json.dumps({"type": "leave", "room": ROOM})
            join = json.dumps({"type": "join", "room": ROOM})
            with contextlib.suppress(ConnectionClosed):
                for _ in range(PAIRS):
                    await abuser.ws.send(leave)
                    await abuser.ws.send(join)
                    sent += 2
            await abuser.until(lambda: abuser.closed, 15, "the abuser's close")

            # The room still chats, and the marker comes after every presence event before it.
            speaker = listeners[0]
            await speaker.send({"type": "message", "room": ROOM, "text": "still here"})
            for listener in listeners:

                def chatted(reader: Listener = listener) -> bool:
                    return "still here" in reader.texts()

                await listener.until(chatted, 10, "chat")
            seen = [listener.presence_of("abuser") for listener in listeners]
            errors = [e for e in abuser.events if e.get("code") == "rate_limited"]
            rejected = metric(server.base_url, REJECTED, reason="rate_limited") - rejected_before
            figures = (
                f"{sent} commands sent; presence events of the abuser per listener: {seen}; "
                f"rate_limited errors: {len(errors)}; close: {abuser.close_code}"
            )
            print(figures)
            # Its first join, at most LIMIT commands (plus the window's refill), its last leave.
            assert max(seen) <= LIMIT + 10, figures
            assert abuser.close_code == 1008, figures
            assert len(errors) >= STRIKES, figures
            assert rejected >= STRIKES, figures
            assert not any(listener.closed for listener in listeners), figures
        finally:
            for client in [*listeners, abuser]:
                await client.close()


async def test_zero_turns_the_command_limit_off() -> None:
    env = {"GATEWAY_COMMAND_RATE_LIMIT": "0", "GATEWAY_RATE_LIMIT_STRIKES": "1"}
    with start_gateway(env) as server:
        client = Listener(await open_ws(server.ws_url("/ws/pinger")))
        try:
            for _ in range(100):
                await client.send({"type": "ping"})
            await client.until(lambda: client.events.count({"type": "pong"}) == 100, 10, "pongs")
            assert not client.has("error"), client.events[-3:]
        finally:
            await client.close()
