"""Locust users for the gateway: what an operator runs against a deployment.

Each user opens ``/ws/{id}`` with websocket-client (cooperative under Locust's gevent), keeps one
receive greenlet, joins its rooms and chats at ``--msg-rate`` messages/s. It reports to Locust:

* ``WS connect``        time to finish the WebSocket handshake;
* ``WS message rtt``    its own message from send until the server fans it back to it;
* ``WS delivery``       messages from other users, send → receive (their send time travels in the
                        text; the load generators must share a clock, e.g. one machine or NTP);
* failures: ``WS error frame`` (one per ``{"type":"error"}``), ``WS unexpected close`` (a close
  that is neither ours nor a drain), ``WS connect`` (a refused or failed handshake).

A ``{"type":"reconnect","after_ms":N}`` followed by close 1012 (a drain) is honoured: the user
waits ``after_ms`` (plus jitter) and reconnects; it is not counted as a failure.

Exit code: ``--max-p99-ms`` and ``--max-error-ratio`` make the run fail (exit 1) when the p99 of
the WS request types or the failure ratio over all of them exceeds the threshold.

    locust -f loadtest/locustfile.py --headless -u 200 -r 50 -t 2m --host http://127.0.0.1:8000 \
        --msg-rate 0.1 --max-p99-ms 250 --max-error-ratio 0.01 --csv loadtest/results/locust
"""

from __future__ import annotations

import contextlib
import json
import random
import time
import uuid
from typing import Any

import gevent
import websocket
from locust import User, events, task
from locust.env import Environment
from locust.runners import WorkerRunner
from locust.stats import StatsEntry

REQUEST_TYPE = "WS"
CONNECT = "connect"
RTT = "message rtt"
DELIVERY = "delivery"
ERROR_FRAME = "error frame"
UNEXPECTED_CLOSE = "unexpected close"
DRAIN_CLOSE = 1012
NORMAL_CLOSES = {1000, 1001, DRAIN_CLOSE}


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]
def _add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("gateway")
    group.add_argument(
        "--msg-rate",
        type=float,
        default=0.1,
        env_var="LOCUST_MSG_RATE",
        help="chat messages per second per user (0.1 stays under the default 10/60 rate limit)",
    )
    group.add_argument(
        "--rooms",
        default="lobby",
        env_var="LOCUST_ROOMS",
        help="comma list of rooms each user joins; it chats in one picked at random",
    )
    group.add_argument(
        "--msg-bytes", type=int, default=64, env_var="LOCUST_MSG_BYTES", help="text size"
    )
    group.add_argument(
        "--ws-path",
        default="/ws/{id}",
        env_var="LOCUST_WS_PATH",
        help="WebSocket path; {id} becomes the user's id",
    )
    group.add_argument(
        "--token",
        default="",
        env_var="LOCUST_TOKEN",
        help="bearer token sent as ?token= (when GATEWAY_AUTH_SECRET is set)",
    )
    group.add_argument(
        "--max-p99-ms",
        type=float,
        default=0.0,
        env_var="LOCUST_MAX_P99_MS",
        help="exit 1 when the p99 of any WS request type exceeds this (0 = no check)",
    )
    group.add_argument(
        "--max-error-ratio",
        type=float,
        default=-1.0,
        env_var="LOCUST_MAX_ERROR_RATIO",
        help="exit 1 when failures / (requests + failures) exceeds this (-1 = no check)",
    )


def threshold_failures(environment: Environment) -> list[str]:
    """Why this run breaks the thresholds given on the command line (empty: it does not)."""
    opts = environment.parsed_options
    if opts is None:
        return []
    reasons: list[str] = []
    stats = environment.stats
    max_p99 = float(getattr(opts, "max_p99_ms", 0.0) or 0.0)
    if max_p99 > 0:
        for name in (CONNECT, RTT, DELIVERY):
            entry: StatsEntry = stats.get(name, REQUEST_TYPE)
            if entry.num_requests:
                p99 = entry.get_response_time_percentile(0.99)
                if p99 > max_p99:
                    reasons.append(f"p99 of {name} is {p99:.0f} ms > {max_p99:g} ms")
    max_ratio = float(getattr(opts, "max_error_ratio", -1.0))
    total = stats.total
    if max_ratio >= 0 and (total.num_requests + total.num_failures) > 0:
        ratio = total.num_failures / (total.num_requests + total.num_failures)
        if ratio > max_ratio:
            reasons.append(f"error ratio {ratio:.4f} > {max_ratio:g}")
    return reasons


@events.quitting.add_listener  # type: ignore[untyped-decorator]
def _exit_code(environment: Environment, **_kwargs: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return  # the master (or the local runner) judges the aggregated stats
    reasons = threshold_failures(environment)
    if reasons:
        for reason in reasons:
            print(f"threshold broken: {reason}")
        environment.process_exit_code = 1


class ChatUser(User):
    """One chat participant on one WebSocket."""

    # Pacing comes from --msg-rate in ``chat``; Locust's wait_time only spaces task calls.
    def wait_time(self) -> float:
        rate = float(getattr(self.environment.parsed_options, "msg_rate", 0.1) or 0.0)
        if rate <= 0:
            return 3600.0
        return random.expovariate(rate)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        opts = environment.parsed_options
        self.user_id = f"locust-{uuid.uuid4().hex[:12]}"
        self.rooms = [r.strip() for r in str(getattr(opts, "rooms", "lobby")).split(",") if r]
        self.msg_bytes = int(getattr(opts, "msg_bytes", 64))
        self.ws_path = str(getattr(opts, "ws_path", "/ws/{id}"))
        self.token = str(getattr(opts, "token", ""))
        self.ws: websocket.WebSocket | None = None
        self.receiver: gevent.Greenlet[[websocket.WebSocket], None] | None = None
        self.pending: dict[str, float] = {}
        self.reconnect_after_ms: float | None = None
        self.closing = False
        self.backoff = 0.5
        self.connected_at = 0.0

    # -- Locust hooks ---------------------------------------------------------------------------
    def on_start(self) -> None:
        self.connect()

    def on_stop(self) -> None:
        self.closing = True
        ws = self.ws
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.close()
        if self.receiver is not None:
            self.receiver.kill(block=False)

    @task
    def chat(self) -> None:
        ws = self.ws
        if ws is None or not ws.connected:
            self.connect()
            return
        nonce = uuid.uuid4().hex[:10]
        sent_at = time.time()
        head = f"{nonce}@{sent_at:.6f}|"
        text = head + "x" * max(0, self.msg_bytes - len(head))
        room = random.choice(self.rooms) if self.rooms else "lobby"
        self.pending[nonce] = sent_at
        if len(self.pending) > 10_000:  # never grow without bound if echoes stop
            self.pending.pop(next(iter(self.pending)))
        try:
            ws.send(json.dumps({"type": "message", "room": room, "text": text}))
        except (websocket.WebSocketException, OSError) as exc:
            self.pending.pop(nonce, None)
            self._fire(UNEXPECTED_CLOSE, 0.0, exc)

    # -- connection -----------------------------------------------------------------------------
    def _url(self) -> str:
        host = (self.host or "http://127.0.0.1:8000").rstrip("/")
        if host.startswith("https://"):
            base = "wss://" + host[len("https://") :]
        elif host.startswith("http://"):
            base = "ws://" + host[len("http://") :]
        else:
            base = host
        url = base + self.ws_path.format(id=self.user_id)
        if self.token:
            url += ("&" if "?" in url else "?") + f"token={self.token}"
        return url

    def connect(self) -> None:
        if self.closing:
            return
        started = time.perf_counter()
        try:
            ws = websocket.create_connection(self._url(), timeout=10, enable_multithread=False)
        except (websocket.WebSocketException, OSError) as exc:
            self._fire(CONNECT, (time.perf_counter() - started) * 1000, exc)
            gevent.sleep(self.backoff * (0.5 + random.random()))
            self.backoff = min(self.backoff * 2, 30.0)
            return
        self._fire(CONNECT, (time.perf_counter() - started) * 1000, None)
        self.connected_at = time.monotonic()
        ws.settimeout(None)
        self.ws = ws
        self.reconnect_after_ms = None
        for room in self.rooms:
            if room != "lobby":
                ws.send(json.dumps({"type": "join", "room": room}))
        self.receiver = gevent.spawn(self._receive, ws)

    def _receive(self, ws: websocket.WebSocket) -> None:
        code: int | None = None
        error: Exception | None = None
        try:
            while True:
                opcode, data = ws.recv_data(control_frame=False)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                    break
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    self._on_frame(data.decode("utf-8", "replace"))
        except websocket.WebSocketConnectionClosedException as exc:
            error = exc
        except (websocket.WebSocketException, OSError) as exc:
            error = exc
        finally:
            with contextlib.suppress(Exception):
                ws.close()
        if ws is not self.ws or self.closing:
            return
        self.ws = None
        if time.monotonic() - self.connected_at > 10.0:
            self.backoff = 0.5  # the connection lived: start backing off from scratch
        if code == DRAIN_CLOSE or self.reconnect_after_ms is not None:
            delay = (self.reconnect_after_ms or 1000.0) / 1000.0
            gevent.sleep(delay * (1.0 + 0.2 * random.random()))
        else:
            if code not in NORMAL_CLOSES:
                detail = f"close {code}" if code is not None else f"connection lost: {error}"
                self._fire(UNEXPECTED_CLOSE, 0.0, ConnectionError(detail))
            gevent.sleep(self.backoff * (0.5 + random.random()))
            self.backoff = min(self.backoff * 2, 30.0)
        self.connect()

    def _on_frame(self, frame: str) -> None:
        now = time.time()
        for line in frame.split("\n"):
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue  # plain-text format: nothing to time
            kind = event.get("type")
            if kind == "message":
                self._on_message(event, now)
            elif kind == "error":
                detail = f"{event.get('code')}: {event.get('detail')}"
                self._fire(ERROR_FRAME, 0.0, RuntimeError(detail))
            elif kind == "reconnect":
                self.reconnect_after_ms = float(event.get("after_ms", 1000))

    def _on_message(self, event: dict[str, Any], now: float) -> None:
        text = str(event.get("text", ""))
        nonce, sep, rest = text.partition("@")
        if not sep:
            return
        stamp = rest.split("|", 1)[0]
        try:
            sent_at = float(stamp)
        except ValueError:
            return
        if event.get("from") == self.user_id:
            started = self.pending.pop(nonce, None)
            if started is not None:
                self._fire(RTT, (now - started) * 1000, None, len(text))
        else:
            self._fire(DELIVERY, max(0.0, now - sent_at) * 1000, None, len(text))

    def _fire(
        self, name: str, response_time_ms: float, exc: Exception | None, length: int = 0
    ) -> None:
        self.environment.events.request.fire(
            request_type=REQUEST_TYPE,
            name=name,
            response_time=response_time_ms,
            response_length=length,
            exception=exc,
            context={"user": self.user_id},
        )
