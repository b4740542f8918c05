// The chat page: wires the DOM to one WebSocket and keeps it alive across drops and restarts.
// Wire protocol and rendering live in protocol.js and render.js (pure, unit-tested).

import { chatUrl, parseFrame, planReconnect, resumedNotice, RoomHistory } from "./protocol.js";
import {
  el, errorText, insertInOrder, presenceText, renderDirect, renderMessage, renderNotice,
  renderOnline, statusText,
} from "./render.js";

const $ = (id) => document.getElementById(id);
const LOBBY = "lobby";

const app = {
  me: "",
  token: new URLSearchParams(location.search).get("token"),
  ws: null,
  established: false, // this socket's session is up: the server acknowledged the lobby
  wasConnected: false, // some earlier socket's session was up
  attempt: 0, // reconnects since the last good connection, for the backoff
  hintMs: null, // after_ms of the server's `reconnect` message, used for the close that follows
  byUser: false,
  idle: false, // closed for inactivity (4408): reconnect when the person is back
  retryTimer: 0,
  tickTimer: 0,
  retryAt: 0,
  rooms: new Map(), // name -> { name, log, tab, item, history, online, unread }
  active: LOBBY, // a room name, or null for the direct-messages view
  direct: { log: null, unread: 0 },
};

// ---- connection -------------------------------------------------------------------------------

function setStatus(state, reason = "") {
  const status = $("status");
  status.dataset.state = state;
  status.textContent = statusText(state, app.retryAt - Date.now());
  $("status-reason").textContent = reason;
  $("reconnect").hidden = !(state === "offline" || state === "reconnecting") || app.byUser;
}

function clearRetry() {
  clearTimeout(app.retryTimer);
  clearInterval(app.tickTimer);
  app.retryTimer = 0;
  app.tickTimer = 0;
}

function send(message) {
  if (app.ws && app.ws.readyState === WebSocket.OPEN) {
    app.ws.send(JSON.stringify(message));
    return true;
  }
  return false;
}

function connect() {
  clearRetry();
  if (app.ws) return;
  app.byUser = false;
  app.established = false;
  app.idle = false;
  app.hintMs = null;
  setStatus("connecting");
  let ws;
  try {
    ws = new WebSocket(chatUrl(location, app.me, app.token));
  } catch (error) {
    setStatus("offline", String(error.message ?? error));
    return;
  }
  app.ws = ws;
  ws.addEventListener("message", (event) => {
    if (ws === app.ws) onFrame(event.data);
  });
  ws.addEventListener("close", (event) => {
    if (ws !== app.ws) return;
    app.ws = null;
    onClose(event);
  });
}

/**
 * The server accepted this connection as a session: it acknowledged the lobby, where it puts every
 * connection. (A socket can open and still be refused at once: a name in use, a draining server.)
 */
function onEstablished() {
  app.established = true;
  setStatus("connected");
  if (app.wasConnected) notice(app.active, "reconnected");
  app.wasConnected = true;
  app.attempt = 0; // a working connection: the backoff starts over
  // Join the other rooms again; each `joined` ack then tells the page what to resume.
  for (const room of app.rooms.values()) {
    if (room.name !== LOBBY) send({ type: "join", room: room.name });
  }
}

function onClose(event) {
  const plan = planReconnect({
    code: event.code,
    reason: event.reason,
    hintMs: app.hintMs,
    attempt: app.attempt,
    byUser: app.byUser,
    wasConnected: app.wasConnected,
  });
  app.hintMs = null;
  if (!plan.retry) {
    app.idle = event.code === 4408;
    const reason = app.idle ? `${plan.reason}; back when you are` : plan.reason;
    setStatus("offline", reason);
    if (!app.byUser) notice(app.active, `disconnected (${event.code}): ${reason}`, "error");
    return;
  }
  if (app.established) {
    notice(app.active, `connection lost (${event.code}${event.reason ? `: ${event.reason}` : ""})`);
  }
  app.attempt += 1;
  app.retryAt = Date.now() + plan.delayMs;
  app.retryTimer = setTimeout(connect, plan.delayMs);
  app.tickTimer = setInterval(() => setStatus("reconnecting", $("status-reason").textContent), 250);
  setStatus("reconnecting", event.code === 1012 ? "the server is restarting" : "");
}

function reconnectNow() {
  if (app.ws || !app.me || app.byUser) return;
  connect();
}

/** After an idle close, the first sign of the person (focus, a key, a click) reconnects. */
function wake() {
  if (app.idle && document.visibilityState === "visible") reconnectNow();
}

// ---- server events ----------------------------------------------------------------------------

function onFrame(data) {
  const { events, unreadable } = parseFrame(data);
  for (const line of unreadable) notice(app.active, line);
  for (const event of events) {
    const handler = handlers[event.type];
    if (handler) handler(event);
  }
}

const handlers = {
  joined(event) {
    const room = app.rooms.get(event.room) ?? addRoom(String(event.room));
    room.online = Array.isArray(event.online) ? event.online : room.online;
    // The ack comes before any message of the room; newer ones than its last_id follow live. Ask
    // for what this page has not shown up to it: the room's kept history on the first join, what
    // was missed while away on a rejoin (nothing when the page already holds last_id).
    const after = room.history.resumeAfter(event.last_id);
    if (after !== null) send({ type: "resume", room: room.name, after });
    if (room.name === LOBBY && !app.established) onEstablished();
    refreshOnline();
  },
  message(event) {
    const room = app.rooms.get(event.room);
    if (!room) return;
    if (event.id !== undefined && event.id !== null && !room.history.accept(event.id)) return;
    const item = renderMessage(document, event, app.me, room.history.epoch);
    append(room.log, () => insertInOrder(room.log, item));
    bumpUnread(room.name);
  },
  direct(event) {
    // The server also echoes our own direct messages (to all our connections): shown from here.
    append(app.direct.log, renderDirect(document, event, app.me));
    if (event.from !== app.me) bumpUnread(null);
  },
  presence(event) {
    const room = app.rooms.get(event.room);
    if (!room) return;
    if (Array.isArray(event.online)) {
      room.online = event.online;
    } else if (event.event === "left") {
      room.online = room.online.filter((user) => user !== event.user);
    } else {
      room.online = [...room.online, event.user];
    }
    const text = presenceText(event, app.me);
    if (text) append(room.log, renderNotice(document, text, "presence"));
    refreshOnline();
  },
  error(event) {
    notice(app.active, errorText(event), "error");
  },
  resumed(event) {
    app.rooms.get(event.room)?.history.resumed();
    const text = resumedNotice(event);
    if (text) notice(event.room, text, "error");
  },
  reconnect(event) {
    const ms = Number(event.after_ms);
    app.hintMs = Number.isFinite(ms) && ms >= 0 ? ms : null;
  },
  left() {},
  pong() {},
};

// ---- views ------------------------------------------------------------------------------------

function addRoom(name) {
  const log = el(document, "ol", "log");
  log.dataset.room = name;
  log.hidden = true;
  $("logs").append(log);
  const tab = el(document, "button", "tab");
  tab.type = "button";
  tab.dataset.room = name;
  tab.append(el(document, "span", "room-name", name), el(document, "span", "unread"));
  tab.addEventListener("click", () => show(name));
  const item = el(document, "li");
  item.append(tab);
  $("rooms").append(item);
  const room = { name, log, tab, item, history: new RoomHistory(), online: [], unread: 0 };
  app.rooms.set(name, room);
  return room;
}

function viewLog(name) {
  return name === null ? app.direct.log : app.rooms.get(name)?.log;
}

function show(name) {
  if (name !== null && !app.rooms.has(name)) name = LOBBY;
  app.active = name;
  for (const room of app.rooms.values()) {
    room.log.hidden = room.name !== name;
    room.tab.setAttribute("aria-current", String(room.name === name));
  }
  app.direct.log.hidden = name !== null;
  $("direct-tab").setAttribute("aria-current", String(name === null));
  $("view-title").textContent = name === null ? "Direct messages" : name;
  $("leave").hidden = name === null || name === LOBBY;
  $("dm-to").hidden = name !== null;
  $("dm-to").required = name === null;
  setUnread(name, 0);
  refreshOnline();
  scrollToEnd();
}

function refreshOnline() {
  let users;
  if (app.active === null) {
    users = [...app.rooms.values()].flatMap((room) => room.online);
  } else {
    users = app.rooms.get(app.active)?.online ?? [];
  }
  const count = renderOnline(document, $("online"), users, app.me);
  $("online-count").textContent = `(${count})`;
}

function setUnread(name, count) {
  const tab = name === null ? $("direct-tab") : app.rooms.get(name)?.tab;
  if (name === null) app.direct.unread = count;
  else if (app.rooms.has(name)) app.rooms.get(name).unread = count;
  if (tab) tab.querySelector(".unread").textContent = count ? String(count) : "";
}

function bumpUnread(name) {
  if (name === app.active) return;
  const current = name === null ? app.direct.unread : app.rooms.get(name)?.unread ?? 0;
  setUnread(name, current + 1);
}

function scrollToEnd() {
  const logs = $("logs");
  logs.scrollTop = logs.scrollHeight;
}

/** Adds a node (or runs an insert) to a log, keeping the view pinned to the end if it was there. */
function append(log, nodeOrInsert) {
  const logs = $("logs");
  const atEnd = logs.scrollHeight - logs.scrollTop - logs.clientHeight < 48;
  if (typeof nodeOrInsert === "function") nodeOrInsert();
  else log.append(nodeOrInsert);
  if (atEnd && !log.hidden) scrollToEnd();
}

function notice(name, text, kind = "info") {
  const log = viewLog(name) ?? viewLog(LOBBY);
  if (log) append(log, renderNotice(document, text, kind));
}

// ---- user actions -----------------------------------------------------------------------------

function enter(event) {
  event.preventDefault();
  const name = $("name").value.trim();
  if (!name) return;
  try {
    localStorage.setItem("gateway.name", name);
  } catch {
    // storage may be unavailable (private mode); the name is only a convenience
  }
  app.me = name;
  $("me").textContent = name;
  $("who").hidden = false;
  $("signout").hidden = false;
  $("login").hidden = true;
  $("chat").hidden = false;
  app.direct.log = el(document, "ol", "log");
  app.direct.log.dataset.view = "direct";
  app.direct.log.hidden = true;
  $("logs").append(app.direct.log);
  addRoom(LOBBY);
  show(LOBBY);
  connect();
  $("text").focus();
}

function submitMessage(event) {
  event.preventDefault();
  const input = $("text");
  const text = input.value;
  if (!text.trim()) return;
  let sent;
  if (app.active === null) {
    const to = $("dm-to").value.trim();
    if (!to) return;
    sent = send({ type: "direct", to, text });
  } else {
    sent = send({ type: "message", room: app.active, text });
  }
  if (sent) {
    input.value = "";
  } else {
    notice(app.active, "not connected: the message was not sent", "error");
    if (app.idle) reconnectNow();
  }
}

function joinRoom(event) {
  event.preventDefault();
  const input = $("room-input");
  const name = input.value.trim();
  if (!name) return;
  input.value = "";
  if (!app.rooms.has(name)) {
    addRoom(name);
    send({ type: "join", room: name }); // when offline, the next connection joins it
  }
  show(name);
}

function leaveRoom() {
  const room = app.rooms.get(app.active);
  if (!room || room.name === LOBBY) return;
  send({ type: "leave", room: room.name });
  room.log.remove();
  room.item.remove();
  app.rooms.delete(room.name);
  show(LOBBY);
}

function directTo(event) {
  const item = event.target.closest("li[data-user]");
  if (!item) return;
  $("dm-to").value = item.dataset.user;
  show(null);
  $("text").focus();
}

function signOut() {
  app.byUser = true;
  clearRetry();
  if (app.ws) app.ws.close(1000, "signed out");
  location.reload();
}

function start() {
  try {
    $("name").value = localStorage.getItem("gateway.name") ?? "";
  } catch {
    // no storage: start with an empty name
  }
  $("login").addEventListener("submit", enter);
  $("composer").addEventListener("submit", submitMessage);
  $("join").addEventListener("submit", joinRoom);
  $("leave").addEventListener("click", leaveRoom);
  $("online").addEventListener("click", directTo);
  $("direct-tab").addEventListener("click", () => show(null));
  $("reconnect").addEventListener("click", reconnectNow);
  $("signout").addEventListener("click", signOut);
  window.addEventListener("online", () => {
    if (app.retryTimer) reconnectNow(); // the network is back: skip the rest of the wait
  });
  window.addEventListener("focus", wake);
  document.addEventListener("visibilitychange", wake);
  document.addEventListener("keydown", wake);
  document.addEventListener("pointerdown", wake);
}

start();
