"""Locust users for the gateway: what an operator runs against a deployment.

Each user opens ``/ws/{id}`` with websocket-client (cooperative under Locust's gevent), keeps one
receive greenlet, joins its rooms and chats at ``--msg-rate`` messages/s. It reports to Locust:

* ``WS connect``        time to finish the WebSocket handshake;
* ``WS message rtt``    its own message from send until the server fans it back to it;
* ``WS delivery``       messages from other users, send → receive (their send time travels in the
                        text; the load generators must share a clock, e.g. one machine or NTP);
* ``WS presence <kind>`` one per presence event received (``joined``, ``left``, ``diff``,
                        ``count``, ``other``): its ``ts`` → receive, and its size. A ``diff``
                        naming ten people is one event. Not requests: they are left out of the
                        error ratio and the p99 threshold;
* ``WS token refresh``  with ``LOCUST_TOKEN_SECRET`` set: ``refresh`` sent → ``refreshed``;
* failures: ``WS error frame`` (one per ``{"type":"error"}``), ``WS unexpected close`` (a close
  that is neither ours nor a drain), ``WS connect`` (a refused or failed handshake).

A ``{"type":"reconnect","after_ms":N}`` followed by close 1012 (a drain) is honoured: the user
waits ``after_ms`` (plus jitter) and reconnects; it is not counted as a failure.

Tokens: ``--token`` is one static token for every user (it cannot be renewed, so the gateway
closes the users at its ``exp``). With ``LOCUST_TOKEN_SECRET`` (the gateway's
``GATEWAY_AUTH_SECRET``, from the environment only, never the command line) each user mints its
own HS256 token (``sub`` = its id, ``rooms`` = its rooms, ``exp`` in ``--token-ttl`` seconds),
connects with it and renews it with ``{"type":"refresh"}`` at about 80% of its remaining
lifetime (up to 10% earlier at random), on the open connection.

Exit code: ``--max-p99-ms`` and ``--max-error-ratio`` make the run fail (exit 1) when the p99 of
the WS request types or the failure ratio over all of them exceeds the threshold.

    locust -f loadtest/locustfile.py --headless -u 200 -r 50 -t 2m --host http://127.0.0.1:8000 \
        --msg-rate 0.1 --max-p99-ms 250 --max-error-ratio 0.01 \
        --csv loadtest/results/locust --html loadtest/results/locust.html
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
import uuid
from typing import Any

import gevent
import gevent.lock
import jwt
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
REFRESH = "token refresh"
PRESENCE = "presence"
PRESENCE_KINDS = ("joined", "left", "diff", "count")
TOKEN_SECRET_ENV = "LOCUST_TOKEN_SECRET"
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
        "--token-ttl",
        type=float,
        default=300.0,
        env_var="LOCUST_TOKEN_TTL",
        help=f"lifetime in seconds of the tokens each user mints when {TOKEN_SECRET_ENV} is set",
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
        for name in (CONNECT, RTT, DELIVERY, REFRESH):
            entry: StatsEntry = stats.get(name, REQUEST_TYPE)
            if entry.num_requests:
                p99 = entry.get_response_time_percentile(0.99)
                if p99 > max_p99:
                    reasons.append(f"p99 of {name} is {p99:.0f} ms > {max_p99:g} ms")
    max_ratio = float(getattr(opts, "max_error_ratio", -1.0))
    total = stats.total
    # Presence events are what the server tells, not requests: a storm of them must not dilute
    # the ratio of failures to requests.
    told = sum(
        entry.num_requests
        for (name, _method), entry in stats.entries.items()
        if name.startswith(PRESENCE + " ")
    )
    requests = total.num_requests - told
    if max_ratio >= 0 and (requests + total.num_failures) > 0:
        ratio = total.num_failures / (requests + total.num_failures)
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
        self.token_secret = os.environ.get(TOKEN_SECRET_ENV, "")
        self.token_ttl = max(1.0, float(getattr(opts, "token_ttl", 300.0) or 300.0))
        self.token_exp: float | None = None
        self.refresh_sent: tuple[float, str, float] | None = None  # (sent at, token, exp)
        self.refresher: gevent.Greenlet[[websocket.WebSocket], None] | None = None
        self.send_lock = gevent.lock.Semaphore()  # the task and the refresher both send
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
        self._stop_refresh()

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
            self._send(ws, {"type": "message", "room": room, "text": text})
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
        if self.token_secret:
            self.token, self.token_exp = self._mint()
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
                self._send(ws, {"type": "join", "room": room})
        self.receiver = gevent.spawn(self._receive, ws)
        self._schedule_refresh(ws)

    def _send(self, ws: websocket.WebSocket, message: dict[str, Any]) -> None:
        with self.send_lock:
            ws.send(json.dumps(message))

    # -- token refresh --------------------------------------------------------------------------
    def _mint(self) -> tuple[str, float]:
        """A token for this user, signed with the gateway's secret, and its ``exp``."""
        now = int(time.time())
        exp = now + int(self.token_ttl)
        claims: dict[str, Any] = {"sub": self.user_id, "iat": now, "exp": exp}
        rooms = [room for room in self.rooms if room != "lobby"]
        if rooms:
            claims["rooms"] = rooms
        return jwt.encode(claims, self.token_secret, algorithm="HS256"), float(exp)

    def _schedule_refresh(self, ws: websocket.WebSocket) -> None:
        """Renew the connection's token some time before it expires (only with a secret)."""
        self._stop_refresh()
        if not self.token_secret or self.token_exp is None:
            return
        delay = refresh_delay(self.token_exp, time.time())
        if delay is not None:
            self.refresher = gevent.spawn_later(delay, self._refresh, ws)

    def _stop_refresh(self) -> None:
        refresher, self.refresher = self.refresher, None
        if refresher is not None and refresher is not gevent.getcurrent():
            refresher.kill(block=False)
        self.refresh_sent = None

    def _refresh(self, ws: websocket.WebSocket) -> None:
        self.refresher = None
        if ws is not self.ws or self.closing:
            return
        token, exp = self._mint()
        self.refresh_sent = (time.perf_counter(), token, exp)
        try:
            self._send(ws, {"type": "refresh", "token": token})
        except (websocket.WebSocketException, OSError):
            self.refresh_sent = None  # the receiver sees the close and reconnects

    def _on_refreshed(self) -> None:
        sent = self.refresh_sent
        if sent is None or self.ws is None:
            return
        started, self.token, self.token_exp = sent
        self._fire(REFRESH, (time.perf_counter() - started) * 1000, None)
        self._schedule_refresh(self.ws)

    def _on_refresh_refused(self) -> None:
        """An error while a refresh awaits its answer: try again while the token lasts (the
        error frame is counted as a failure already)."""
        if self.refresh_sent is not None and self.ws is not None:
            self.refresh_sent = None
            self._schedule_refresh(self.ws)

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
        self._stop_refresh()
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
            if not isinstance(event, dict):
                continue
            kind = event.get("type")
            if kind == "message":
                self._on_message(event, now)
            elif kind == "presence":
                self._on_presence(event, now, len(line))
            elif kind == "error":
                detail = f"{event.get('code')}: {event.get('detail')}"
                self._fire(ERROR_FRAME, 0.0, RuntimeError(detail))
                self._on_refresh_refused()
            elif kind == "refreshed":
                self._on_refreshed()
            elif kind == "reconnect":
                self.reconnect_after_ms = float(event.get("after_ms", 1000))

    def _on_presence(self, event: dict[str, Any], now: float, length: int) -> None:
        """One presence event, whatever it says: one change, a window's ``diff`` or a large
        room's ``count``. Timed from the server's ``ts`` (batching shows up here)."""
        kind = event.get("event")
        name = f"{PRESENCE} {kind if kind in PRESENCE_KINDS else 'other'}"
        ts = event.get("ts")
        lag = max(0.0, now - ts) * 1000 if isinstance(ts, int | float) else 0.0
        self._fire(name, lag, None, length)

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


def refresh_delay(
    exp: float, now: float, fraction: float = 0.8, jitter: float = 0.1
) -> float | None:
    """Seconds until a token expiring at ``exp`` should be renewed: about ``fraction`` of what is
    left, up to ``jitter`` of it earlier at random (users started together spread out); None
    once it has expired. The chat page does the same (``refreshDelayMs`` in protocol.js)."""
    remaining = exp - now
    if remaining <= 0:
        return None
    return remaining * (fraction - jitter * random.random())
