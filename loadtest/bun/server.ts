// Bun's built-in pub/sub (uWebSockets) speaking the seed's frames: the benchmark's reference.
//
// Same endpoints and text frames as loadtest/seed_server.py, so the same generator measures the
// seed, this and the gateway: `/ws/{client_id}` announces "{id} joined the chat" to everyone,
// fans every text message out as "{id}: {text}" to every connection (the sender included), and
// announces "{id} left the chat"; `/ws` fans out "Client says: {text}" with no announcements (the
// idle run's path); `GET /` answers 200 for the readiness poll.
//
// The idiomatic fast path, nothing hand-tuned: one topic per endpoint, `server.publish` (one
// framing per message, corked writes in C++), no compression, no idle timeout and no pings
// (the seed has neither).
//
//     bun loadtest/bun/server.ts 127.0.0.1 8002

type Client = { id: string | null };

const [hostname = "127.0.0.1", portText = "8002"] = process.argv.slice(2);
const CHAT = "chat";
const PLAIN = "plain";

const server = Bun.serve<Client>({
  hostname,
  port: Number(portText),
  development: false,
  fetch(req, srv) {
    const path = new URL(req.url).pathname;
    if (path === "/") {
      return new Response("bun pub/sub reference\n");
    }
    const match = /^\/ws(?:\/([^/]+))?$/.exec(path);
    if (match !== null) {
      const id = match[1] === undefined ? null : decodeURIComponent(match[1]);
      if (srv.upgrade(req, { data: { id } })) {
        return undefined;
      }
      return new Response("expected a WebSocket upgrade\n", { status: 400 });
    }
    return new Response("not found\n", { status: 404 });
  },
  websocket: {
    idleTimeout: 0,
    sendPings: false,
    perMessageDeflate: false,
    open(ws) {
      if (ws.data.id === null) {
        ws.subscribe(PLAIN);
        return;
      }
      ws.subscribe(CHAT);
      server.publish(CHAT, `${ws.data.id} joined the chat`);
    },
    message(ws, message) {
      const text = typeof message === "string" ? message : message.toString();
      if (ws.data.id === null) {
        server.publish(PLAIN, `Client says: ${text}`);
      } else {
        server.publish(CHAT, `${ws.data.id}: ${text}`);
      }
    },
    close(ws) {
      if (ws.data.id !== null) {
        server.publish(CHAT, `${ws.data.id} left the chat`);
      }
    },
  },
});
