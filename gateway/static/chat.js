// The chat page: wires the DOM to one WebSocket and keeps it alive across drops and restarts.
// Wire protocol and rendering live in protocol.js and render.js (pure, unit-tested).

import {
  applyPresence, chatUrl, parseFrame, planReconnect, presenceFromAck, refreshDelayMs, resumedNotice,
  RoomHistory, sameOriginUrl, tokenExp, tokenFromAnswer,
} from "./protocol.js";
import {
  el, errorText, insertInOrder, onlineSummary, presenceText, renderDirect, renderMessage,
  renderNotice, renderOnline, statusText,
} from "./render.js";

const $ = (id) => document.getElementById(id);
const LOBBY = "lobby";
const NOBODY = { names: [], count: 0, partial: false };
/** Consecutive failed renewals of one token before the page stops trying (it then expires). */
const REFRESH_TRIES = 3;
/** Errors the server answers a `refresh` with (another `sub`, a bad token, too many commands). */
const REFRESH_ERRORS = new Set(["invalid", "forbidden", "rate_limited"]);

const query = new URLSearchParams(location.search);

const app = {
  me: "",
  token: query.get("token"),
  // Where to GET a fresh token ({"token": "..."}), same origin only: ?token_url= or the page's
  // <html data-token-url="...">. Without one the page cannot renew its token.
  tokenUrl: sameOriginUrl(query.get("token_url") ?? document.documentElement.dataset.tokenUrl, location),
  refresh: { timer: 0, sent: null, failures: 0 }, // sent: the token of the `refresh` awaiting its answer
  fetchingToken: false,
  refused: false, // the last socket closed before its session was up (a refused handshake?)
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
  rooms: new Map(), // name -> { name, log, tab, item, history, presence, unread }
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
  if (app.ws || app.fetchingToken) return;
  app.byUser = false;
  app.established = false;
  app.idle = false;
  app.hintMs = null;
  setStatus("connecting");
  if (app.tokenUrl && (app.refused || tokenExpired(app.token))) {
    // No token, one that ran out while away, or one the last handshake may have been refused
    // for: get a fresh one first (a failure still tries the old one; the next attempt asks again).
    app.fetchingToken = true;
    fetchToken()
      .then((token) => {
        app.token = token;
      })
      .catch((error) => notice(app.active, `could not get a sign-in token: ${error.message}`, "error"))
      .finally(() => {
        app.fetchingToken = false;
        if (!app.byUser && !app.ws) openSocket();
      });
    return;
  }
  openSocket();
}

function openSocket() {
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
  app.refresh.failures = 0;
  scheduleRefresh(tokenExp(app.token));
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
  stopRefresh();
  app.refused = !app.established;
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

// ---- token refresh ----------------------------------------------------------------------------

function tokenExpired(token) {
  if (!token) return true;
  const exp = tokenExp(token);
  return exp !== null && exp * 1000 <= Date.now();
}

/** GETs a fresh token from the page's token URL (same origin, no redirects, never cached). */
async function fetchToken() {
  const response = await fetch(app.tokenUrl, {
    credentials: "same-origin",
    cache: "no-store",
    redirect: "error",
    headers: { Accept: "application/json" },
  });
  if (!response.ok) throw new Error(`the token URL answered HTTP ${response.status}`);
  const token = tokenFromAnswer(await response.json().catch(() => null));
  if (token === null) throw new Error('the token URL did not answer {"token": "..."}');
  return token;
}

function stopRefresh() {
  clearTimeout(app.refresh.timer);
  app.refresh.timer = 0;
  app.refresh.sent = null;
}

/** Renews the connection's token some time before `exp` (unix seconds), when the page can. */
function scheduleRefresh(exp) {
  clearTimeout(app.refresh.timer);
  app.refresh.timer = 0;
  if (!app.tokenUrl || !app.established) return;
  const delay = refreshDelayMs(exp, Date.now());
  if (delay !== null) app.refresh.timer = setTimeout(refreshToken, delay);
}

async function refreshToken() {
  app.refresh.timer = 0;
  const ws = app.ws;
  let token;
  try {
    token = await fetchToken();
  } catch (error) {
    if (ws === app.ws) refreshFailed(error.message);
    return;
  }
  // The connection went meanwhile: drop the token unverified (the next connection gets its own).
  if (ws !== app.ws || !app.established) return;
  app.refresh.sent = token;
  if (!send({ type: "refresh", token })) app.refresh.sent = null;
}

/** The renewal failed: say so, and try again (a few times) while the current token is valid. */
function refreshFailed(why) {
  app.refresh.sent = null;
  app.refresh.failures += 1;
  const exp = tokenExp(app.token);
  const ends = exp === null ? "" : ` at ${new Date(exp * 1000).toLocaleTimeString()}`;
  notice(app.active, `the sign-in token was not renewed (${why}): the connection ends${ends} unless a renewal succeeds`, "error");
  if (app.refresh.failures < REFRESH_TRIES) scheduleRefresh(exp);
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
    room.presence = presenceFromAck(event, app.me);
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
    room.presence = applyPresence(room.presence, event, app.me);
    const text = presenceText(event, app.me);
    if (text) append(room.log, renderNotice(document, text, "presence"));
    refreshOnline();
  },
  error(event) {
    notice(app.active, errorText(event), "error");
    // Errors carry no reference to their command: one of the kinds a `refresh` is answered with,
    // while one awaits its answer, is taken as its answer (a `refreshed` after it still counts).
    if (app.refresh.sent !== null && REFRESH_ERRORS.has(event.code)) refreshFailed(errorText(event));
  },
  refreshed(event) {
    if (app.refresh.sent !== null) app.token = app.refresh.sent; // reconnects use the new token
    app.refresh.sent = null;
    app.refresh.failures = 0;
    const exp = Number(event.exp);
    scheduleRefresh(Number.isFinite(exp) ? exp : tokenExp(app.token));
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
  const room = { name, log, tab, item, history: new RoomHistory(), presence: NOBODY, unread: 0 };
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
  let count = null;
  let partial;
  if (app.active === null) {
    const rooms = [...app.rooms.values()];
    users = rooms.flatMap((room) => room.presence.names);
    partial = rooms.some((room) => room.presence.partial);
  } else {
    const presence = app.rooms.get(app.active)?.presence ?? NOBODY;
    users = presence.names;
    count = presence.count;
    partial = presence.partial;
  }
  const shown = renderOnline(document, $("online"), users, app.me);
  const summary = onlineSummary({ count, shown, partial });
  $("online-count").textContent = summary.count;
  $("online-partial").textContent = summary.note;
  $("online-partial").hidden = summary.note === "";
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
