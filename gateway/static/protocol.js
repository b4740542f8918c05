// Wire-protocol helpers for the chat page: pure functions, no DOM, no timers, no globals.
// Unit-tested with Node's test runner (tests/browser/render.test.mjs).

/** The WebSocket URL for `name` on the page's own host (JSON is the default format there). */
export function chatUrl(location, name, token = null) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  return `${scheme}//${location.host}/ws/${encodeURIComponent(name)}${query}`;
}

/**
 * One text frame from the server holds one JSON object, or several separated by "\n" when the
 * server batches. Returns the objects, and the lines that were not JSON objects (shown as-is).
 */
export function parseFrame(data) {
  const events = [];
  const unreadable = [];
  for (const line of String(data).split("\n")) {
    if (line.trim() === "") continue;
    try {
      const value = JSON.parse(line);
      if (value !== null && typeof value === "object" && !Array.isArray(value)) {
        events.push(value);
      } else {
        unreadable.push(line);
      }
    } catch {
      unreadable.push(line);
    }
  }
  return { events, unreadable };
}

const DECIMAL = /^\d+$/;

/** Orders message ids of one room: decimal ids by value, anything else by length then text. */
export function compareIds(a, b) {
  const x = String(a);
  const y = String(b);
  if (DECIMAL.test(x) && DECIMAL.test(y)) {
    const bx = BigInt(x);
    const by = BigInt(y);
    return bx < by ? -1 : bx > by ? 1 : 0;
  }
  if (x.length !== y.length) return x.length < y.length ? -1 : 1;
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Exponential backoff with full jitter: a uniform delay in [0, min(cap, base * 2^attempt)). */
export function backoffDelay(attempt, { baseMs = 500, capMs = 30000, random = Math.random } = {}) {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/** Close codes after which the page must not reconnect on its own, with what to tell the user. */
export const NO_RETRY = new Map([
  [1008, "refused by the server's policy"],
  [4408, "disconnected after being idle"],
]);

/** A 1008 refusal that only says the server still holds this name's previous connection. */
const STILL_CONNECTED = /already connected/i;

/**
 * What to do after the socket closed.
 * - closed by the user (sign out): stay offline;
 * - 1008 policy, 4408 idle: stay offline and say why. One exception: a page that was connected and
 *   is refused because the server still holds its old connection (a drop the server has not
 *   noticed yet) backs off and retries until the server lets the old one go;
 * - a `reconnect` hint came before the close (1012 drain): wait at least after_ms, plus jitter;
 * - 1013 try again later: back off, starting from a longer window;
 * - anything else (1001 going away, 1006 dropped, 1011 error…): exponential backoff, full jitter.
 */
export function planReconnect({
  code, reason = "", hintMs = null, attempt = 0, byUser = false, wasConnected = false, random = Math.random,
}) {
  if (byUser) return { retry: false, reason: "signed out" };
  if (code === 1008 && wasConnected && STILL_CONNECTED.test(reason)) {
    return { retry: true, delayMs: backoffDelay(Math.max(attempt, 3), { random }) };
  }
  if (NO_RETRY.has(code)) {
    const why = NO_RETRY.get(code);
    return { retry: false, reason: reason ? `${why}: ${reason}` : why };
  }
  if (hintMs !== null && Number.isFinite(hintMs) && hintMs >= 0) {
    return { retry: true, delayMs: Math.floor(hintMs) + backoffDelay(0, { random }) };
  }
  const tries = code === 1013 ? Math.max(attempt, 3) : attempt;
  return { retry: true, delayMs: backoffDelay(tries, { random }) };
}

/**
 * What the page has shown of one room: the ids it displayed (for dedupe), the newest one, and the
 * newest one up to which it holds everything (for resume). Every `joined` ack comes before any
 * message of its room and carries `last_id`, the room's newest id when the subscription began
 * ("0" for none): the server sends every newer one live, and the page resumes when it holds
 * older ("0" for a room it has shown nothing of yet: the history the server keeps). The dedupe
 * keeps a message that comes both ways from showing twice.
 *
 * Live messages that arrive while a resume is outstanding lie beyond a gap, so they do not move
 * the resume point: a page that drops again before the `resumed` ack asks again from before the
 * gap instead of skipping it.
 *
 * A server with an in-memory broker forgets its history on restart. When `last_id` is older than
 * what the page shows (or "0"), the page starts a new "epoch": it takes everything the new server
 * has instead of dropping its messages as duplicates (and never mixes the two numberings up when
 * ordering).
 */
export class RoomHistory {
  constructor() {
    this.lastId = null;
    this.complete = null;
    this.pending = false;
    this.seen = new Set();
    this.epoch = 0;
  }

  /** Records a message id; false if it was already shown (a duplicate to drop). */
  accept(id) {
    const key = String(id);
    if (this.seen.has(key)) return false;
    this.seen.add(key);
    if (this.lastId === null || compareIds(key, this.lastId) > 0) this.lastId = key;
    if (!this.pending) this.complete = this.lastId;
    return true;
  }

  /**
   * The id to resume after once the room is joined, or null when nothing can have been missed;
   * a non-null answer is a resume the page sends, outstanding until {@link resumed}.
   * `serverLastId` is the ack's `last_id`: a string ("0" for an empty room; null from servers
   * that said so with null), or undefined when the server does not say (then the page asks).
   */
  resumeAfter(serverLastId) {
    const empty = serverLastId === null || (serverLastId !== undefined && String(serverLastId) === "0");
    if (serverLastId !== undefined && this.lastId !== null) {
      if (empty || compareIds(serverLastId, this.lastId) < 0) {
        this.restart(); // the server's numbering started over
      } else if (compareIds(serverLastId, this.lastId) === 0 && !this.pending) {
        return null;
      }
    }
    if (empty && this.lastId === null) return null; // an empty room
    this.pending = true;
    return this.complete ?? "0";
  }

  /** The server answered the resume: everything up to the newest shown is held (or gone). */
  resumed() {
    this.pending = false;
    this.complete = this.lastId;
  }

  restart() {
    this.lastId = null;
    this.complete = null;
    this.pending = false;
    this.seen = new Set();
    this.epoch += 1;
  }
}

/** The notice a `resumed` ack calls for: only when the server no longer keeps all that was asked. */
export function resumedNotice(event) {
  return event.recovered === false ? "some earlier messages are no longer kept by the server" : null;
}

// ---- who is online ----------------------------------------------------------------------------

function distinct(values) {
  return [...new Set(values.map(String))];
}

function countOf(value, fallback) {
  const n = Number(value);
  return value !== null && value !== undefined && Number.isInteger(n) && n >= 0 ? n : fallback;
}

function withMe(names, me) {
  return me && !names.includes(me) ? [...names, me] : names;
}

function settle(names, count) {
  return { names, count: Math.max(count, names.length), partial: count > names.length };
}

/**
 * Who is online in one room, as far as the page can know: `names` (only people known to be in
 * the room: a subset, never a stale name), the room's `count`, and `partial` when the count is
 * larger than the names (a room over the server's names limit). The viewer is a member of every
 * room it shows, so `me` is always among the names.
 *
 * From a `joined` ack: its `online` list names at most GATEWAY_PRESENCE_NAMES_MAX users; its
 * `count` is the room's size (older servers send no count: the list is the room).
 */
export function presenceFromAck(event, me = "") {
  const names = withMe(Array.isArray(event.online) ? distinct(event.online) : [], me);
  return settle(names, countOf(event.count, names.length));
}

/**
 * The room's presence after a `presence` event:
 * - `joined` / `left` (one change): that user in or out; `online` is the room's count;
 * - `diff` (several changes in one window): `joined` names in, `left` names out;
 * - `count` (a room over the names limit, no names): only the count. Whoever was listed may
 *   have left unseen, so the list keeps only the viewer, and stays partial until named events
 *   (the room is small again) or a new `joined` ack fill it;
 * - anything else: unchanged.
 * Servers that send the whole `online` list in the event (an array) are taken at their word.
 */
export function applyPresence(state, event, me = "") {
  if (Array.isArray(event.online)) {
    const names = withMe(distinct(event.online), me);
    return settle(names, names.length);
  }
  let names = state.names;
  switch (event.event) {
    case "joined":
      if (event.user !== undefined && event.user !== null) names = distinct([...names, event.user]);
      break;
    case "left":
      names = names.filter((name) => name !== String(event.user) || name === me);
      break;
    case "diff": {
      const gone = new Set(Array.isArray(event.left) ? event.left.map(String) : []);
      gone.delete(me);
      const came = Array.isArray(event.joined) ? event.joined : [];
      names = distinct([...names.filter((name) => !gone.has(name)), ...came]);
      break;
    }
    case "count":
      names = names.filter((name) => name === me);
      break;
    default:
      return state;
  }
  names = withMe(names, me);
  return settle(names, countOf(event.online, names.length));
}

// ---- token refresh ----------------------------------------------------------------------------

/** setTimeout's largest delay (about 24.8 days); longer ones would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * The `exp` claim (unix seconds) of a JWT, read from its payload without verifying anything (the
 * server verifies; the page only needs to know when to renew). null when there is none.
 */
export function tokenExp(token) {
  if (typeof token !== "string") return null;
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const json = new TextDecoder().decode(Uint8Array.from(atob(padded), (c) => c.charCodeAt(0)));
    const exp = JSON.parse(json)?.exp;
    return typeof exp === "number" && Number.isFinite(exp) ? exp : null;
  } catch {
    return null;
  }
}

/**
 * How long to wait before renewing a token that expires at `exp` (unix seconds): about 80% of
 * the remaining lifetime, minus up to 10% of it at random, so that pages opened together (a
 * reconnect storm after a restart) do not all renew at the same moment. null when the token has
 * already expired (or says nothing), when there is nothing left to schedule.
 */
export function refreshDelayMs(exp, nowMs, { fraction = 0.8, jitter = 0.1, random = Math.random } = {}) {
  if (typeof exp !== "number" || !Number.isFinite(exp)) return null;
  const remaining = exp * 1000 - nowMs;
  if (remaining <= 0) return null;
  const delay = remaining * (fraction - jitter * random());
  return Math.min(MAX_TIMER_MS, Math.max(0, Math.floor(delay)));
}

/**
 * The URL the page may GET a fresh token from: `raw` (from `?token_url=` or the page's
 * `data-token-url`) resolved against the page, accepted only on the page's own origin (the
 * page's Content-Security-Policy allows `connect-src 'self'` only, and a token must never be
 * fetched from elsewhere). null when there is none or it is not allowed.
 */
export function sameOriginUrl(raw, location) {
  if (typeof raw !== "string" || raw.trim() === "") return null;
  let url;
  try {
    url = new URL(raw, location.href);
  } catch {
    return null;
  }
  if (url.origin !== location.origin || !/^https?:$/.test(url.protocol)) return null;
  return url.href;
}

/** The token in a token endpoint's answer (`{"token": "..."}`), or null. */
export function tokenFromAnswer(body) {
  const token = body !== null && typeof body === "object" ? body.token : null;
  return typeof token === "string" && token !== "" && token.length <= 8192 ? token : null;
}
