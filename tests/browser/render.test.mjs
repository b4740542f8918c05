// Unit tests of the chat page's pure modules (gateway/static/render.js and protocol.js).
// Run: node --test tests/browser/render.test.mjs   (pytest runs it too: test_render_unit.py)
//
// Node has no DOM, so the rendering functions get a small fake document. It records what is
// built and throws if anything assigns HTML (innerHTML, outerHTML, insertAdjacentHTML), which is
// exactly the promise under test: everything from the network goes in as text.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  applyPresence, backoffDelay, chatUrl, compareIds, parseFrame, planReconnect, presenceFromAck,
  refreshDelayMs, resumedNotice, RoomHistory, sameOriginUrl, tokenExp, tokenFromAnswer,
} from "../../gateway/static/protocol.js";
import {
  el, errorText, formatTime, insertInOrder, nameList, onlineSummary, presenceText, renderDirect,
  renderMessage, renderNotice, renderOnline, statusText,
} from "../../gateway/static/render.js";

const HTML_SINKS = ["innerHTML", "outerHTML"];

class FakeText {
  constructor(data) {
    this.nodeType = 3;
    this.data = String(data);
    this.parentNode = null;
  }
  get textContent() {
    return this.data;
  }
}

class FakeElement {
  constructor(tag) {
    this.nodeType = 1;
    this.tagName = tag.toUpperCase();
    this.childNodes = [];
    this.attributes = new Map();
    this.className = "";
    this.parentNode = null;
    for (const sink of HTML_SINKS) {
      Object.defineProperty(this, sink, {
        get() {
          throw new Error(`${sink} read`);
        },
        set() {
          throw new Error(`${sink} assigned: rendering must use text, never HTML`);
        },
      });
    }
  }
  insertAdjacentHTML() {
    throw new Error("insertAdjacentHTML called");
  }
  set textContent(value) {
    this.replaceChildren(new FakeText(value));
  }
  get textContent() {
    return this.childNodes.map((node) => node.textContent).join("");
  }
  setAttribute(name, value) {
    this.attributes.set(name, String(value));
  }
  getAttribute(name) {
    return this.attributes.has(name) ? this.attributes.get(name) : null;
  }
  hasAttribute(name) {
    return this.attributes.has(name);
  }
  append(...nodes) {
    for (const node of nodes) this.insertBefore(typeof node === "string" ? new FakeText(node) : node, null);
  }
  appendChild(node) {
    return this.insertBefore(node, null);
  }
  insertBefore(node, before) {
    if (node.parentNode) node.parentNode.childNodes.splice(node.parentNode.childNodes.indexOf(node), 1);
    const index = before === null ? this.childNodes.length : this.childNodes.indexOf(before);
    assert.ok(index >= 0, "insertBefore: reference node is not a child");
    this.childNodes.splice(index, 0, node);
    node.parentNode = this;
    return node;
  }
  replaceChildren(...nodes) {
    for (const node of this.childNodes) node.parentNode = null;
    this.childNodes = [];
    this.append(...nodes);
  }
  get children() {
    return this.childNodes.filter((node) => node.nodeType === 1);
  }
  get lastElementChild() {
    return this.children.at(-1) ?? null;
  }
  get previousElementSibling() {
    if (!this.parentNode) return null;
    const siblings = this.parentNode.children;
    return siblings[siblings.indexOf(this) - 1] ?? null;
  }
}

const fakeDocument = {
  createElement: (tag) => new FakeElement(tag),
  createTextNode: (data) => new FakeText(data),
};

/** Every element in a tree, depth first. */
function* elements(node) {
  if (node.nodeType !== 1) return;
  yield node;
  for (const child of node.childNodes) yield* elements(child);
}

/** The only tags the renderers may create; anything else came from the data. */
const ALLOWED_TAGS = new Set(["LI", "SPAN", "TIME", "OL", "UL", "DIV"]);

function assertOnlyText(node, hostile) {
  for (const element of elements(node)) {
    assert.ok(ALLOWED_TAGS.has(element.tagName), `unexpected element <${element.tagName}>`);
  }
  assert.ok(node.textContent.includes(hostile), "the hostile text is shown, character for character");
}

const HOSTILE_NAME = '<img src=x onerror="globalThis.pwned=1">';
const HOSTILE_TEXT = '</span><script>globalThis.pwned=2</script><b onclick="x()">&amp; bold</b>';

describe("render: hostile names and texts stay text", () => {
  it("renders a room message's sender and text as text", () => {
    const item = renderMessage(fakeDocument, { id: "7", room: "lobby", from: HOSTILE_NAME, text: HOSTILE_TEXT, ts: 0 }, "me");
    assertOnlyText(item, HOSTILE_NAME);
    assertOnlyText(item, HOSTILE_TEXT);
    assert.equal(item.getAttribute("data-id"), "7");
    assert.equal(item.getAttribute("data-from"), HOSTILE_NAME);
    const [, from, text] = item.children;
    assert.equal(from.textContent, HOSTILE_NAME);
    assert.equal(text.textContent, HOSTILE_TEXT);
    assert.equal(globalThis.pwned, undefined);
  });

  it("renders direct messages as text", () => {
    const item = renderDirect(fakeDocument, { from: HOSTILE_NAME, to: "bob", text: HOSTILE_TEXT, ts: 1 }, "bob");
    assertOnlyText(item, `${HOSTILE_NAME} → bob`);
    assertOnlyText(item, HOSTILE_TEXT);
  });

  it("renders the online list as text, one item per distinct user", () => {
    const list = fakeDocument.createElement("ul");
    const count = renderOnline(fakeDocument, list, [HOSTILE_NAME, "alice", "alice", "me"], "me");
    assert.equal(count, 3);
    assertOnlyText(list, HOSTILE_NAME);
    const names = list.children.map((item) => item.getAttribute("data-user"));
    assert.deepEqual(names, [...names].sort((a, b) => a.localeCompare(b)));
    assert.ok(names.includes(HOSTILE_NAME));
    const mine = list.children.find((item) => item.getAttribute("data-user") === "me");
    assert.equal(mine.textContent, "me (you)");
  });

  it("renders notices, presence and errors as text", () => {
    const presence = presenceText({ room: "<b>r</b>", event: "joined", user: HOSTILE_NAME }, "me");
    assertOnlyText(renderNotice(fakeDocument, presence), `${HOSTILE_NAME} joined <b>r</b>`);
    assert.equal(presenceText({ room: "r", event: "left", user: "me" }, "me"), null);
    const error = errorText({ code: "invalid", detail: HOSTILE_TEXT });
    assertOnlyText(renderNotice(fakeDocument, error, "error"), `invalid: ${HOSTILE_TEXT}`);
    assertOnlyText(el(fakeDocument, "span", "", HOSTILE_TEXT), HOSTILE_TEXT);
  });

  it("marks a message from the publish API, even under the viewer's own name", () => {
    const api = renderMessage(fakeDocument, { id: 2, from: "me", text: "hi", source: "api" }, "me");
    assert.equal(api.className, "msg api");
    const user = renderMessage(fakeDocument, { id: 3, from: "me", text: "hi" }, "me");
    assert.equal(user.className, "msg mine");
  });

  it("shows missing fields without crashing", () => {
    const item = renderMessage(fakeDocument, { id: 1, room: "r" }, "me");
    assert.equal(item.children[1].textContent, "?");
    assert.equal(item.children[2].textContent, "");
  });
});

describe("render: ordering and labels", () => {
  const message = (id, epoch = 0) => renderMessage(fakeDocument, { id, from: "a", text: `m${id}`, ts: 0 }, "me", epoch);
  const ids = (list) => list.children.filter((n) => n.hasAttribute("data-id")).map((n) => n.getAttribute("data-id"));

  it("appends in order and slots a replayed older message before newer ones", () => {
    const list = fakeDocument.createElement("ol");
    for (const id of ["1", "2", "9", "10"]) insertInOrder(list, message(id));
    list.append(renderNotice(fakeDocument, "bob joined lobby"));
    insertInOrder(list, message("5"));
    insertInOrder(list, message("11"));
    assert.deepEqual(ids(list), ["1", "2", "5", "9", "10", "11"]);
  });

  it("never mixes epochs: after a server restart ids start again at the end", () => {
    const list = fakeDocument.createElement("ol");
    for (const id of ["4", "5"]) insertInOrder(list, message(id, 0));
    for (const id of ["2", "1"]) insertInOrder(list, message(id, 1));
    assert.deepEqual(ids(list), ["4", "5", "1", "2"]);
  });

  it("labels the connection state", () => {
    assert.equal(statusText("connected"), "connected");
    assert.equal(statusText("offline"), "offline");
    assert.equal(statusText("reconnecting", 2100), "reconnecting in 3s");
    assert.equal(statusText("reconnecting", 0), "reconnecting in 0s");
  });

  it("formats timestamps given in seconds, milliseconds or ISO text", () => {
    const d = new Date(2024, 0, 2, 9, 5);
    assert.equal(formatTime(d.getTime() / 1000), "09:05");
    assert.equal(formatTime(d.getTime()), "09:05");
    assert.equal(formatTime(d.toISOString()), "09:05");
    assert.equal(formatTime(String(d.getTime() / 1000)), "09:05");
    assert.equal(formatTime("not a date"), "");
    assert.equal(formatTime(undefined), "");
  });
});

describe("protocol", () => {
  it("builds the socket URL with the name URL-encoded", () => {
    const loc = { protocol: "http:", host: "127.0.0.1:8000" };
    assert.equal(chatUrl(loc, "a b/<c>?"), "ws://127.0.0.1:8000/ws/a%20b%2F%3Cc%3E%3F");
    assert.equal(chatUrl({ protocol: "https:", host: "x" }, "bo", "t.k"), "wss://x/ws/bo?token=t.k");
  });

  it("splits batched frames on newlines and keeps unreadable lines apart", () => {
    const frame = '{"type":"message","id":"1"}\n{"type":"pong"}\n\nplain text\n[1]\nnull';
    const { events, unreadable } = parseFrame(frame);
    assert.deepEqual(events.map((e) => e.type), ["message", "pong"]);
    assert.deepEqual(unreadable, ["plain text", "[1]", "null"]);
  });

  it("compares ids numerically, beyond 2^53 too", () => {
    assert.equal(compareIds("9", "10"), -1);
    assert.equal(compareIds("10", "10"), 0);
    assert.equal(compareIds("9007199254740993", "9007199254740992"), 1);
    assert.equal(compareIds("b", "a"), 1);
    assert.equal(compareIds("z", "aa"), -1);
  });

  it("backs off exponentially with full jitter, capped", () => {
    const top = () => 0.999999;
    assert.equal(backoffDelay(0, { random: () => 0 }), 0);
    assert.equal(backoffDelay(0, { random: top }), 499);
    assert.equal(backoffDelay(3, { random: top }), 3999);
    assert.equal(backoffDelay(50, { random: top }), 29999);
    assert.equal(backoffDelay(3, { random: () => 0.5 }), 2000);
  });

  it("plans reconnects from the close code and the server's hint", () => {
    const half = () => 0.5;
    assert.deepEqual(planReconnect({ code: 1008, reason: "bad token" }), { retry: false, reason: "refused by the server's policy: bad token" });
    assert.equal(planReconnect({ code: 4408 }).retry, false);
    assert.equal(planReconnect({ code: 1006, byUser: true }).retry, false);
    assert.deepEqual(planReconnect({ code: 1012, hintMs: 2000, attempt: 7, random: half }), { retry: true, delayMs: 2250 });
    assert.deepEqual(planReconnect({ code: 1012, attempt: 2, random: half }), { retry: true, delayMs: 1000 });
    assert.deepEqual(planReconnect({ code: 1013, attempt: 0, random: half }), { retry: true, delayMs: 2000 });
    assert.deepEqual(planReconnect({ code: 1006, attempt: 1, random: half }), { retry: true, delayMs: 500 });
  });

  it("retries a refusal that only means the old connection is still held", () => {
    const half = () => 0.5;
    const reason = "client id already connected";
    assert.deepEqual(planReconnect({ code: 1008, reason, wasConnected: true, random: half }), { retry: true, delayMs: 2000 });
    assert.equal(planReconnect({ code: 1008, reason, wasConnected: false }).retry, false); // a second tab
    assert.equal(planReconnect({ code: 1008, reason: "token expired", wasConnected: true }).retry, false);
  });

  it("dedupes by id and resumes after the newest shown", () => {
    const room = new RoomHistory();
    assert.equal(room.resumeAfter(undefined), "0"); // first join: the history the server keeps
    assert.ok(room.accept("5"));
    assert.ok(room.accept("6"));
    assert.ok(!room.accept("5"));
    assert.ok(room.accept("4")); // an older one replayed late is still new to the page
    assert.equal(room.lastId, "6");
    room.resumed();
    assert.equal(room.resumeAfter(undefined), "6"); // the server does not say: ask
    assert.equal(room.resumeAfter("9"), "6"); // missed 7..9
    room.resumed();
    assert.equal(room.resumeAfter("6"), null); // missed nothing
    assert.ok(room.accept("10"));
    assert.ok(!room.accept("10"));
    assert.equal(room.epoch, 0);
  });

  it("asks for nothing in an empty room, everything once it has messages", () => {
    const room = new RoomHistory();
    assert.equal(room.resumeAfter(null), null);
    assert.equal(room.resumeAfter("3"), "0");
  });

  it("reads last_id \"0\" as an empty room, and as a restart when it shows messages", () => {
    const room = new RoomHistory();
    assert.equal(room.resumeAfter("0"), null);
    assert.equal(room.epoch, 0);
    room.accept("1796235600000001");
    assert.equal(room.resumeAfter("0"), null); // the server forgot the room: nothing to fetch
    assert.equal(room.epoch, 1);
    assert.equal(room.lastId, null);
  });

  it("on reconnect resumes from the newest id it holds, only when last_id is newer", () => {
    const room = new RoomHistory();
    const base = 1796235600000000n;
    const id = (n) => String(base + BigInt(n));
    for (let n = 1; n <= 5; n += 1) assert.ok(room.accept(id(n)));
    assert.equal(room.resumeAfter(id(9)), id(5)); // 6..9 went by while away: ask for them
    // The ack came first; live 10 and 11 arrive before the replay of 6..9, then 9 once more.
    const shown = [];
    for (const n of [10, 11, 6, 7, 8, 9, 9, 11]) if (room.accept(id(n))) shown.push(n);
    assert.deepEqual(shown, [10, 11, 6, 7, 8, 9]);
    assert.equal(room.lastId, id(11));
    room.resumed();
    assert.equal(room.resumeAfter(id(11)), null); // holds the newest: nothing to ask
    assert.equal(room.resumeAfter(id(12)), id(11));
    assert.equal(room.epoch, 0);
    const list = fakeDocument.createElement("ol");
    for (const n of shown) {
      insertInOrder(list, renderMessage(fakeDocument, { id: id(n), from: "a", text: "t" }, "me", room.epoch));
    }
    const order = list.children.map((node) => node.getAttribute("data-id"));
    assert.deepEqual(order, [6, 7, 8, 9, 10, 11].map(id));
  });

  it("resumes from before the gap again when it drops before the resumed ack", () => {
    const room = new RoomHistory();
    const base = 1796235600000000n;
    const id = (n) => String(base + BigInt(n));
    for (let n = 1; n <= 5; n += 1) assert.ok(room.accept(id(n)));
    assert.equal(room.resumeAfter(id(9)), id(5)); // 6..9 went by while away
    assert.ok(room.accept(id(10))); // live, beyond the gap
    assert.ok(room.accept(id(6))); // the replay has begun
    // Dropped again before the resumed ack: 7..9 are still missing, 10 is no resume point.
    assert.equal(room.resumeAfter(id(12)), id(5));
    for (const n of [11, 12, 6, 7, 8, 9, 10, 11, 12]) room.accept(id(n));
    room.resumed();
    assert.equal(room.resumeAfter(id(12)), null);
    assert.equal(room.resumeAfter(id(13)), id(12));
  });

  it("warns that messages are gone only when the server says it could not recover them", () => {
    assert.equal(resumedNotice({ type: "resumed", room: "lobby", recovered: true, count: 3 }), null);
    assert.equal(resumedNotice({ type: "resumed", room: "lobby", count: 0 }), null);
    assert.match(resumedNotice({ type: "resumed", room: "lobby", recovered: false }), /no longer kept/);
  });

  it("starts a new epoch when the server forgot its history (restart with memory broker)", () => {
    const room = new RoomHistory();
    for (const id of ["1", "2", "3"]) room.accept(id);
    assert.equal(room.resumeAfter("1"), "0"); // the server is at 1 again: take all it has
    assert.equal(room.epoch, 1);
    assert.ok(room.accept("1")); // id 1 of the new epoch is new
    room.accept("2");
    assert.equal(room.resumeAfter(null), null); // restarted and empty
    assert.equal(room.epoch, 2);
    assert.equal(room.lastId, null);
  });
});

describe("presence: diffs, counts and rooms too large to list", () => {
  const ack = (online, count) => ({ type: "joined", room: "lobby", online, count, last_id: "0" });

  it("takes a joined ack's list as the room when its count says it is whole", () => {
    const state = presenceFromAck(ack(["alice", "bob"], 2), "alice");
    assert.deepEqual(state, { names: ["alice", "bob"], count: 2, partial: false });
    // An older server without `count`: the list is the room.
    assert.deepEqual(presenceFromAck(ack(["bob", "alice"]), "alice").partial, false);
  });

  it("marks the list partial when the ack's count exceeds its names", () => {
    const state = presenceFromAck(ack(["bob", "carol"], 1500), "alice");
    assert.deepEqual(state, { names: ["bob", "carol", "alice"], count: 1500, partial: true });
    assert.deepEqual(onlineSummary({ count: state.count, shown: 3, partial: true }), {
      count: "(1500)",
      note: "showing 3 of 1500: too many to list everyone",
    });
  });

  it("applies a diff: who joined and who left, and the count", () => {
    let state = presenceFromAck(ack(["alice", "bob", "carol"], 3), "alice");
    const diff = { type: "presence", room: "lobby", event: "diff", joined: ["dave", "erin"], left: ["bob"], online: 4 };
    state = applyPresence(state, diff, "alice");
    assert.deepEqual(state, { names: ["alice", "carol", "dave", "erin"], count: 4, partial: false });
    assert.equal(presenceText(diff, "alice"), "dave and erin joined lobby; bob left lobby");
    assert.deepEqual(onlineSummary({ count: state.count, shown: state.names.length, partial: state.partial }), {
      count: "(4)",
      note: "",
    });
  });

  it("names at most three in a diff's line, never the viewer, and says nothing of a diff about the viewer", () => {
    const many = { room: "r", event: "diff", joined: ["a", "b", "c", "d", "e"], left: [], online: 9 };
    assert.equal(presenceText(many, "me"), "a, b, c and 2 others joined r");
    assert.equal(presenceText({ room: "r", event: "diff", joined: ["me"], left: [], online: 2 }, "me"), null);
    assert.equal(presenceText({ room: "r", event: "diff", joined: [], left: ["x", "me"], online: 2 }, "me"), "x left r");
    assert.equal(nameList(["a"]), "a");
    assert.equal(nameList(["a", "b", "c", "d"]), "a, b, c and 1 other");
    const line = renderNotice(fakeDocument, presenceText({ room: "r", event: "diff", joined: [HOSTILE_NAME, "b"], left: [] }, "me"));
    assertOnlyText(line, `${HOSTILE_NAME} and b joined r`);
  });

  it("keeps the viewer when a diff or a left names another of its own connections", () => {
    let state = presenceFromAck(ack(["alice", "bob"], 2), "alice");
    state = applyPresence(state, { event: "diff", joined: [], left: ["alice", "bob"], online: 1 }, "alice");
    assert.deepEqual(state, { names: ["alice"], count: 1, partial: false });
    state = applyPresence(state, { event: "left", user: "alice", online: 1 }, "alice");
    assert.deepEqual(state.names, ["alice"]);
  });

  it("applies a count event: the count, no names, and a partial list", () => {
    let state = presenceFromAck(ack(["alice", "bob", "carol"], 3), "alice");
    const count = { type: "presence", room: "lobby", event: "count", online: 1200 };
    state = applyPresence(state, count, "alice");
    // bob and carol may have left unseen: only the viewer is still known to be there.
    assert.deepEqual(state, { names: ["alice"], count: 1200, partial: true });
    assert.equal(presenceText(count, "alice"), null); // no log line per window in a large room
    assert.deepEqual(onlineSummary({ count: state.count, shown: 1, partial: true }), {
      count: "(1200)",
      note: "showing 1 of 1200: too many to list everyone",
    });
  });

  it("fills the list again with named events once the room is small, whole when the count matches", () => {
    let state = applyPresence(presenceFromAck(ack(["alice"], 5), "alice"), { event: "count", online: 3 }, "alice");
    assert.equal(state.partial, true);
    state = applyPresence(state, { event: "joined", user: "dave", online: 3 }, "alice");
    assert.deepEqual(state, { names: ["alice", "dave"], count: 3, partial: true });
    state = applyPresence(state, { event: "left", user: "zed", online: 2 }, "alice");
    assert.deepEqual(state, { names: ["alice", "dave"], count: 2, partial: false });
  });

  it("takes single joined/left events and whole lists as before, ignores unknown kinds", () => {
    let state = presenceFromAck(ack(["alice"], 1), "alice");
    state = applyPresence(state, { event: "joined", user: "bob", online: 2 }, "alice");
    assert.deepEqual(state, { names: ["alice", "bob"], count: 2, partial: false });
    state = applyPresence(state, { event: "left", user: "bob", online: 1 }, "alice");
    assert.deepEqual(state, { names: ["alice"], count: 1, partial: false });
    const same = applyPresence(state, { event: "something-new", online: 99 }, "alice");
    assert.equal(same, state);
    state = applyPresence(state, { event: "joined", user: "x", online: ["x", "y"] }, "alice");
    assert.deepEqual(state, { names: ["x", "y", "alice"], count: 3, partial: false });
  });

  it("sums up several rooms in the direct-messages view", () => {
    assert.deepEqual(onlineSummary({ shown: 4, partial: false }), { count: "(4)", note: "" });
    assert.equal(onlineSummary({ shown: 4, partial: true }).note, "large rooms are not listed in full");
  });
});

describe("token refresh", () => {
  const b64url = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const jwt = (claims) => `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url(claims)}.signature`;

  it("reads exp from a JWT's payload", () => {
    assert.equal(tokenExp(jwt({ sub: "alice", exp: 1900000000 })), 1900000000);
    assert.equal(tokenExp(jwt({ sub: "ünïcödé ✓", exp: 1900000001 })), 1900000001); // UTF-8 payload
    assert.equal(tokenExp(jwt({ sub: "alice" })), null);
    assert.equal(tokenExp(jwt({ sub: "alice", exp: "soon" })), null);
    assert.equal(tokenExp("not.a.jwt"), null);
    assert.equal(tokenExp("two.parts"), null);
    assert.equal(tokenExp(null), null);
  });

  it("schedules the refresh at about 80% of the remaining lifetime, jittered earlier", () => {
    const now = 1_000_000_000_000;
    const exp = now / 1000 + 100; // 100 s left
    assert.equal(refreshDelayMs(exp, now, { random: () => 0 }), 80_000);
    assert.equal(refreshDelayMs(exp, now, { random: () => 0.5 }), 75_000);
    assert.equal(refreshDelayMs(exp, now, { random: () => 0.999999 }), 70_000);
    for (let i = 0; i < 200; i += 1) {
      const delay = refreshDelayMs(exp, now);
      assert.ok(delay > 70_000 - 1 && delay <= 80_000, `delay ${delay} within 70–80% of the lifetime`);
    }
    // A short-lived token: still before expiry; the next one is scheduled from the new exp.
    assert.equal(refreshDelayMs(now / 1000 + 4, now, { random: () => 0 }), 3200);
    assert.equal(refreshDelayMs(now / 1000 + 4, now + 3200, { random: () => 0 }), 640);
  });

  it("schedules nothing for an expired token or one without exp, and never overflows the timer", () => {
    const now = 1_000_000_000_000;
    assert.equal(refreshDelayMs(now / 1000, now), null);
    assert.equal(refreshDelayMs(now / 1000 - 5, now), null);
    assert.equal(refreshDelayMs(null, now), null);
    assert.equal(refreshDelayMs(Number.NaN, now), null);
    assert.equal(refreshDelayMs(now / 1000 + 10 * 365 * 86400, now), 2 ** 31 - 1);
  });

  it("takes a token URL only on the page's own origin", () => {
    const loc = { href: "https://chat.example/?token=x", origin: "https://chat.example" };
    assert.equal(sameOriginUrl("/auth/token", loc), "https://chat.example/auth/token");
    assert.equal(sameOriginUrl("https://chat.example/t?x=1", loc), "https://chat.example/t?x=1");
    assert.equal(sameOriginUrl("https://evil.example/token", loc), null);
    assert.equal(sameOriginUrl("//evil.example/token", loc), null);
    assert.equal(sameOriginUrl("http://chat.example/token", loc), null); // another scheme, another origin
    assert.equal(sameOriginUrl("javascript:alert(1)", loc), null);
    assert.equal(sameOriginUrl("data:application/json,{}", loc), null);
    assert.equal(sameOriginUrl("", loc), null);
    assert.equal(sameOriginUrl(undefined, loc), null);
  });

  it("reads the token from the endpoint's answer", () => {
    assert.equal(tokenFromAnswer({ token: "a.b.c" }), "a.b.c");
    assert.equal(tokenFromAnswer({ token: "" }), null);
    assert.equal(tokenFromAnswer({ token: 5 }), null);
    assert.equal(tokenFromAnswer({ token: "x".repeat(9000) }), null);
    assert.equal(tokenFromAnswer(null), null);
    assert.equal(tokenFromAnswer(["a.b.c"]), null);
  });
});
