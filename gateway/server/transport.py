"""The chat WebSocket endpoint: Starlette's ``WebSocket`` on one side, the core on the other.

It reads the handshake into a :class:`~gateway.admission.Handshake` for the policy, answers a
refusal with its HTTP status, turns an admitted socket into a :class:`~gateway.session.Session`
with an :class:`~gateway.outbox.Outbox`, runs the read loop, and maps how the socket ended to
the disconnect catalogue so every close is counted under the right reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from gateway import disconnect, logs, metrics, tracing
from gateway.admission import Admitted, Handshake, Refusal
from gateway.disconnect import Disconnect
from gateway.frames import ClientGone
from gateway.identity import display_form, skeletons
from gateway.node import Node
from gateway.outbox import FrameSink, Outbox
from gateway.protocol import WireFormat, is_valid_user
from gateway.server.httpguard import SECURITY_HEADER_MAP
from gateway.server.wsprotocol import EXTENSION, GatewayWebSocketProtocol
from gateway.session import Session

log = logging.getLogger("gateway.server.transport")


class AsgiSink:
    """The portable path, for servers without the gateway's protocol extension."""

    __slots__ = ("websocket",)

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket

    def write_now(self, data: bytes) -> bool:
        return False

    async def send_text(self, payload: str) -> None:
        try:
            await self.websocket.send_text(payload)
        except (WebSocketDisconnect, RuntimeError, OSError) as error:
            raise ClientGone from error

    async def close(self, code: int, reason: str) -> None:
        connected = WebSocketState.CONNECTED
        if self.websocket.application_state is connected and (
            self.websocket.client_state is connected
        ):
            with contextlib.suppress(RuntimeError, OSError, asyncio.TimeoutError):
                async with asyncio.timeout(5):
                    await self.websocket.close(code, reason)

    def abort(self) -> bool:
        return False  # the ASGI interface has no way to cut a connection


def _sink_for(websocket: WebSocket) -> GatewayWebSocketProtocol | AsgiSink:
    """The gateway's protocol writes pre-encoded frames straight to its transport."""
    protocol = websocket.scope.get("extensions", {}).get(EXTENSION)
    if isinstance(protocol, GatewayWebSocketProtocol):
        return protocol
    return AsgiSink(websocket)


def _wire_format(websocket: WebSocket, default: WireFormat) -> WireFormat | None:
    requested = websocket.query_params.get("format")
    if requested is None:
        return default
    try:
        return WireFormat(requested)
    except ValueError:
        return None


def _handshake(websocket: WebSocket, path_user: str | None) -> Handshake:
    headers = websocket.headers
    return Handshake(
        ip=websocket.client.host if websocket.client else "unknown",
        origin=headers.get("origin"),
        host=headers.get("host"),
        path_user=path_user,
        query_token=websocket.query_params.get("token"),
        subprotocols=tuple(websocket.scope.get("subprotocols", ())),
        path=websocket.url.path,
    )


async def serve_connection(websocket: WebSocket, node: Node, user: str | None) -> None:
    """Run one connection from handshake to the last cleanup; ``user=None`` is anonymous.

    ``user`` is the URL's id as given; from here on it is in its display form.
    """
    user = None if user is None else display_form(user)
    wire = _wire_format(websocket, WireFormat.TEXT if user is None else WireFormat.JSON)
    handshake = _handshake(websocket, user)
    admitted = await node.admission.admit(handshake)
    name = "" if isinstance(admitted, Refusal) else node.name_for(admitted.user)
    if not isinstance(admitted, Refusal):
        admitted = await node.admission.consult(admitted, name, handshake)
    if isinstance(admitted, Refusal):
        await deny(websocket, admitted)
        return
    await websocket.accept(admitted.subprotocol)
    metrics.CONNECTIONS_OPENED.inc()
    tracing.detach_connection_span()
    named = admitted.user
    if wire is None or (named is not None and not (is_valid_user(named) and skeletons(named))):
        await _refuse(websocket, disconnect.POLICY)
        return
    sink = _sink_for(websocket)
    if isinstance(sink, GatewayWebSocketProtocol):
        sink.hold_close_reply = True
    outbox = Outbox(sink, wire, node.settings.send_queue)
    session = node.new_session(name, wire, outbox)
    session.may_join = admitted.may_join
    session.token_grants = admitted.identity is not None and admitted.rooms is None
    logs.bind_connection(session.connection_id, session.user)
    log.info("connection opened", extra={"path": websocket.url.path, "format": wire.value})
    task = asyncio.current_task()
    assert task is not None
    node.track(session, task)
    await _run(websocket, node, session, admitted)


async def _run(websocket: WebSocket, node: Node, session: Session, admitted: Admitted) -> None:
    """Attach, read until the connection ends, detach; count the close under its reason."""
    hub, outbox = node.hub, session.outbox
    ended = disconnect.SERVER_ERROR
    try:
        if node.draining and hub.stop_delivery(session):
            await hub.send_away(session)
            ended = disconnect.DRAIN
            return
        refused = await hub.attach(
            session,
            allow_duplicate=admitted.shares_identity,
            per_user_limit=node.settings.max_connections_per_user if admitted.identity else 0,
        )
        if refused is not None:
            session.close(refused)
            ended = refused
            return
        if admitted.identity is not None:
            session.arm_expiry(admitted.identity)
        ended = await _read_loop(websocket, session)
    except Exception:
        log.exception("connection failed", extra={"connection_id": session.connection_id})
        session.close(disconnect.SERVER_ERROR)
        ended = disconnect.SERVER_ERROR
    finally:
        session.expiry.cancel()
        await hub.detach(session, _close_reply(outbox.sink))
        if not outbox.finished:
            # Not closing yet means the peer or the heartbeat ended it: nobody reads what is
            # queued, and a send stuck on a full socket must not hold the cleanup.
            session.close(ended, flush=False)
            if (writer := outbox.writer) is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(writer, timeout=node.settings.drain_timeout)
        metrics.CONNECTIONS_CLOSED.labels(ended.reason).inc()
        log.info(
            "connection closed",
            extra={"reason": ended.reason, "code": ended.code, "detail": ended.detail},
        )


def _close_reply(sink: FrameSink) -> Callable[[], None] | None:
    """What answers a client's close frame, held until the hub released the client's id."""
    return sink.send_close_reply if isinstance(sink, GatewayWebSocketProtocol) else None


async def _read_loop(websocket: WebSocket, session: Session) -> Disconnect:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return _why_closed(websocket, session, int(message.get("code") or 1005))
        if session.closing is not None:
            continue
        text = message.get("text")
        if text is not None:
            await session.on_text(text)
        elif message.get("bytes") is not None:
            session.on_binary()


def _why_closed(websocket: WebSocket, session: Session, code: int) -> Disconnect:
    if session.closing is not None:
        return session.closing
    protocol = websocket.scope.get("extensions", {}).get(EXTENSION)
    if isinstance(protocol, GatewayWebSocketProtocol):
        if protocol.heartbeat_timed_out:
            return disconnect.HEARTBEAT_TIMEOUT
        if protocol.slow_consumer:
            return disconnect.SLOW_CONSUMER
        if protocol.conn.close_rcvd_then_sent:
            return disconnect.CLIENT  # the peer closed first: its code (even 1011) is its own
    return disconnect.from_peer_close(code)


async def _refuse(websocket: WebSocket, reason: Disconnect) -> None:
    log.info(
        "connection refused",
        extra={"path": websocket.url.path, "reason": reason.reason, "code": reason.code},
    )
    await websocket.close(reason.code, reason.detail)
    metrics.CONNECTIONS_CLOSED.labels(reason.reason).inc()


async def deny(websocket: WebSocket, refusal: Refusal) -> None:
    """Answer the handshake with an HTTP status instead of the upgrade."""
    metrics.CONNECTIONS_REFUSED.labels(refusal.reason).inc()
    log.info(
        "connection refused",
        extra={
            "path": websocket.url.path,
            "status": refusal.status,
            "reason": refusal.reason,
            "detail": refusal.detail,
            "client": websocket.client.host if websocket.client else None,
        },
    )
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        headers = {**SECURITY_HEADER_MAP, **refusal.headers}
        response = PlainTextResponse(refusal.detail, refusal.status, headers=headers)
        await websocket.send_denial_response(response)
    else:
        await websocket.close(1008, refusal.detail)
