"""The seed's naive chat server, kept as the benchmark's baseline.

This is the chat from the seed tutorial (``shared/seed/fastapi-websocket-chat-tutorial.txt``,
step 3 ``ConnectionManager`` for ``/ws`` and step 4 ``ChatManager`` for ``/ws/{client_id}``)
exactly as written there: a dict (or list) of sockets and a broadcast that awaits
``send_text`` for every client in turn, so one slow client holds up everyone behind it.

Changes, all of them minimal and only to make it benchmarkable:

* no rate limiter: the tutorial's ``RateLimiter`` (10 messages/min) would cap any load run
  long before fan-out does, and the comparison is about fan-out;
* no HTML page; ``GET /`` answers a short text so the benchmark can poll readiness.

Run it the way the benchmark does (uvloop, httptools, uvicorn's default WebSocket
implementation, no access log)::

    uvicorn loadtest.seed_server:app --host 127.0.0.1 --port 8001 \
        --loop uvloop --http httptools --log-level warning --no-access-log
"""

from __future__ import annotations

from fastapi import FastAPI, WebSocket
from fastapi.responses import PlainTextResponse

app = FastAPI()


@app.get("/")
async def get() -> PlainTextResponse:
    return PlainTextResponse("seed chat baseline\n")


class ConnectionManager:
    def __init__(self) -> None:
        self.active_connections: list[WebSocket] = []

    async def connect(self, websocket: WebSocket) -> None:
        await websocket.accept()
        self.active_connections.append(websocket)

    def disconnect(self, websocket: WebSocket) -> None:
        self.active_connections.remove(websocket)

    async def broadcast(self, message: str) -> None:
        for connection in self.active_connections:
            await connection.send_text(message)


manager = ConnectionManager()


@app.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    await manager.connect(websocket)
    try:
        while True:
            data = await websocket.receive_text()
            await manager.broadcast(f"Client says: {data}")
    except Exception:
        manager.disconnect(websocket)


class ChatManager:
    def __init__(self) -> None:
        self.connections: dict[str, WebSocket] = {}

    async def connect(self, websocket: WebSocket, client_id: str) -> None:
        await websocket.accept()
        self.connections[client_id] = websocket
        await self.broadcast(f"{client_id} joined the chat")

    def disconnect(self, client_id: str) -> None:
        if client_id in self.connections:
            del self.connections[client_id]

    async def send_personal(self, message: str, client_id: str) -> None:
        if client_id in self.connections:
            websocket = self.connections[client_id]
            await websocket.send_text(message)

    async def broadcast(self, message: str) -> None:
        for connection in self.connections.values():
            await connection.send_text(message)


chat_manager = ChatManager()


@app.websocket("/ws/{client_id}")
async def chat_endpoint(websocket: WebSocket, client_id: str) -> None:
    await chat_manager.connect(websocket, client_id)
    try:
        while True:
            data = await websocket.receive_text()
            await chat_manager.broadcast(f"{client_id}: {data}")
    except Exception:
        chat_manager.disconnect(client_id)
        await chat_manager.broadcast(f"{client_id} left the chat")
