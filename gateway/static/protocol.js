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

/**
 * What to do after the socket closed.
 * - closed by the user (sign out): stay offline;
 * - 1008 policy, 4408 idle: stay offline, say why (the user can reconnect by hand);
 * - a `reconnect` hint came before the close (1012 drain): wait at least after_ms, plus jitter;
 * - 1013 try again later: back off, starting from a longer window;
 * - anything else (1001 going away, 1006 dropped, 1011 error…): exponential backoff, full jitter.
 */
export function planReconnect({ code, reason = "", hintMs = null, attempt = 0, byUser = false, random = Math.random }) {
  if (byUser) return { retry: false, reason: "signed out" };
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
 * What the page has shown of one room: the ids it displayed (for dedupe) and the newest one (for
 * resume). An in-memory server forgets its history on restart and numbers from 1 again; when the
 * server's newest id is older than ours, the page starts a new "epoch" instead of dropping new
 * messages as duplicates.
 */
export class RoomHistory {
  constructor() {
    this.lastId = null;
    this.seen = new Set();
    this.epoch = 0;
  }

  /** Records a message id; false if it was already shown (a duplicate to drop). */
  accept(id) {
    const key = String(id);
    if (this.seen.has(key)) return false;
    this.seen.add(key);
    if (this.lastId === null || compareIds(key, this.lastId) > 0) this.lastId = key;
    return true;
  }

  /**
   * Called with the `last_id` of a `joined` ack. Returns the id to resume after, or null when
   * there is nothing to ask for. `first` is true for the first join of this room: the page starts
   * from "now" and asks for nothing.
   */
  resumeAfter(serverLastId, first) {
    if (first) {
      if (this.lastId === null && serverLastId !== null && serverLastId !== undefined) {
        this.lastId = String(serverLastId);
      }
      return null;
    }
    if (serverLastId === null || serverLastId === undefined) {
      if (this.lastId !== null) this.restart();
      return null;
    }
    if (this.lastId !== null && compareIds(serverLastId, this.lastId) < 0) this.restart();
    if (this.lastId !== null && compareIds(serverLastId, this.lastId) === 0) return null;
    return this.lastId === null ? "0" : this.lastId;
  }

  restart() {
    this.lastId = null;
    this.seen = new Set();
    this.epoch += 1;
  }
}
