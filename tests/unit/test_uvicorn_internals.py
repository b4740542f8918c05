"""What gateway/server/wsprotocol.py and gateway/server/corking.py rely on inside uvicorn's sans-I/O
websockets protocol, none of it public API, checked against the installed uvicorn so that an
upgrade which renames, moves or reshapes one fails here, loudly, instead of in production.

pyproject.toml pins uvicorn below its next minor release; raising the pin starts here. Each
table below is one line per internal: when the gateway comes to rely on another, add its line.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import textwrap
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from gateway.server.corking import FlushingTransport
from gateway.server.wsprotocol import Flag, GatewayWebSocketProtocol, ReceiveQueue

BASE = WebSocketsSansIOProtocol

IMPORTS = [  # module, name: what wsprotocol.py imports (some only for type checking)
    ("uvicorn.protocols.websockets.websockets_sansio_impl", "WebSocketsSansIOProtocol"),
    ("uvicorn._types", "ASGIReceiveEvent"),
    ("uvicorn.config", "Config"),
    ("uvicorn.server", "ServerState"),
]

INSTANCE_ATTRIBUTES = [  # set by uvicorn's __init__; read, written or replaced by the gateway
    "loop",
    "logger",
    "transport",
    "conn",
    "queue",
    "writable",
    "ping_interval",
    "ping_timer",
    "handshake_initiated",
    "handshake_complete",
    "close_sent",
    "disconnected",
    "read_paused",
    "close_timer",
    "close_timeout",
]

LATER_ATTRIBUTES = [  # attribute, the uvicorn method that assigns it after __init__
    ("scope", "handle_connect"),
    ("response", "handle_connect"),
    ("transport", "connection_made"),
]

METHODS = [  # method the gateway overrides or calls, its parameters after self, async?
    ("__init__", ("config", "server_state", "app_state", "_loop"), False),
    ("connection_made", ("transport",), False),
    ("handle_connect", ("event",), False),
    ("start_keepalive", (), False),
    ("send_keepalive_ping", (), False),
    ("keepalive_timeout", (), False),
    ("data_received", ("data",), False),
    ("send_receive_event_to_app", (), False),
    ("send", ("message",), True),
    ("handle_ping", (), False),
    ("handle_close", ("event",), False),
    ("resume_writing", (), False),
    ("connection_lost", ("exc",), False),
]

USED_FROM = [  # uvicorn method, what it calls or schedules that an override depends on
    ("handle_events", "self.handle_connect"),  # the scope extension, forgetting the headers
    ("send", "self.start_keepalive"),  # the jittered first ping
    ("send_keepalive_ping", "self.keepalive_timeout"),  # the pong deadline: counted timeouts
    ("send_receive_event_to_app", "self.logger.exception"),  # invalid UTF-8 logged at info
    ("handle_events", "self.handle_ping"),  # pongs owed to a non-reader counted
    ("handle_events", "self.handle_close"),  # the close reply held until the id is released
    ("handle_ping", "self.conn.data_to_send"),  # the pong is what websockets composed
    ("handle_close", "self.conn.close_rcvd"),  # the held path reads the close as uvicorn does
    ("handle_close", "self.close_timer"),  # our close echoed: uvicorn cancels the abort
    ("resume_writing", "self.writable.set"),  # writable again: pongs owed start from zero
]

# The gateway replaces these attributes after uvicorn's __init__ / connection_made; uvicorn may
# only call on them what the replacement provides. For the transport that is what either
# flushes the cork first (FlushingTransport's own methods) or never writes to the socket.
NON_WRITING_TRANSPORT_CALLS = {
    "is_closing",
    "pause_reading",
    "resume_reading",
    "get_extra_info",
    "abort",
    "set_protocol",
    "get_write_buffer_size",
}
REPLACED = [
    ("queue", set(vars(ReceiveQueue))),
    ("writable", set(vars(Flag))),
    ("transport", set(vars(FlushingTransport)) | NON_WRITING_TRANSPORT_CALLS),
]


def _method_tree(name: str) -> ast.FunctionDef | ast.AsyncFunctionDef:
    source = textwrap.dedent(inspect.getsource(getattr(BASE, name)))
    node = ast.parse(source).body[0]
    assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    return node


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def _class_tree() -> ast.ClassDef:
    node = ast.parse(textwrap.dedent(inspect.getsource(BASE))).body[0]
    assert isinstance(node, ast.ClassDef)
    return node


async def _app(scope: Any, receive: Any, send: Any) -> None:  # never called here
    raise AssertionError


@pytest.fixture
async def protocol() -> WebSocketsSansIOProtocol:
    """uvicorn's own class, built as its HTTP protocols build it on an upgrade request."""
    config = Config(app=_app, ws=GatewayWebSocketProtocol, lifespan="off", log_config=None)
    config.load()
    assert config.ws_protocol_class is GatewayWebSocketProtocol, "ws= takes a class"
    return BASE(config=config, server_state=ServerState(), app_state={})


@pytest.mark.parametrize(("module", "name"), IMPORTS)
def test_import(module: str, name: str) -> None:
    assert hasattr(importlib.import_module(module), name)


@pytest.mark.parametrize("name", INSTANCE_ATTRIBUTES)
def test_instance_attribute(protocol: WebSocketsSansIOProtocol, name: str) -> None:
    assert name in vars(protocol), f"uvicorn's __init__ no longer sets self.{name}"


@pytest.mark.parametrize(("name", "method"), LATER_ATTRIBUTES)
def test_attribute_assigned_in(name: str, method: str) -> None:
    assigned = {
        _dotted(target)
        for node in ast.walk(_method_tree(method))
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
    }
    assert f"self.{name}" in assigned, f"{method} no longer sets self.{name}"


@pytest.mark.parametrize(("name", "params", "is_async"), METHODS)
def test_method(name: str, params: tuple[str, ...], is_async: bool) -> None:
    method = getattr(BASE, name, None)
    assert callable(method), f"uvicorn's protocol has no {name}"
    found = tuple(inspect.signature(method).parameters)[1:]
    assert found == params, f"{name}{found}: the gateway's override expects {params}"
    assert inspect.iscoroutinefunction(method) is is_async


@pytest.mark.parametrize(("method", "used"), USED_FROM)
def test_used_from(method: str, used: str) -> None:
    found = {
        _dotted(node) for node in ast.walk(_method_tree(method)) if isinstance(node, ast.Attribute)
    }
    assert used in found, f"uvicorn's {method} no longer uses {used}"


@pytest.mark.parametrize(("name", "offered"), REPLACED)
def test_replaced_attribute_is_only_used_as_the_replacement_allows(
    name: str, offered: set[str]
) -> None:
    prefix = f"self.{name}."
    used = {
        dotted.removeprefix(prefix).split(".")[0]
        for node in ast.walk(_class_tree())
        if isinstance(node, ast.Attribute)
        and (dotted := _dotted(node)).startswith(prefix)
        and dotted.count(".") == 2
    }
    assert used, f"uvicorn no longer uses self.{name}: is the replacement still needed?"
    assert used <= offered, f"uvicorn uses self.{name}.{sorted(used - offered)}"


def test_the_transport_is_only_assigned_where_the_gateway_wraps_it() -> None:
    """The cork's ordering holds only if uvicorn never puts the raw transport back."""
    assigners = {
        method.name
        for method in _class_tree().body
        if isinstance(method, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(method)
        if isinstance(node, ast.Assign)
        and any(_dotted(target) == "self.transport" for target in node.targets)
    }
    assert assigners <= {"__init__", "connection_made"}, assigners


async def test_the_replacements_fit_where_uvicorn_puts_them(
    protocol: WebSocketsSansIOProtocol,
) -> None:
    """The gateway's instance replaces queue and writable after uvicorn's __init__."""
    gateway = GatewayWebSocketProtocol(
        config=protocol.config, server_state=ServerState(), app_state={}
    )
    assert isinstance(gateway.queue, ReceiveQueue)
    assert isinstance(gateway.writable, Flag)
    assert gateway.writable.is_set() is protocol.writable.is_set() is True
    assert isinstance(protocol.queue, asyncio.Queue), "uvicorn changed what it queues on"
