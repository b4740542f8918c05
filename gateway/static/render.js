// Rendering for the chat page: small pure functions that build DOM nodes from server events.
// Every string from the network goes into the page as text (textContent / text nodes), never as
// HTML, so a name like <img src=x onerror=...> shows as those characters. `doc` is the document
// to build with, passed in so the functions can be unit-tested without a browser.

import { compareIds } from "./protocol.js";

/** An element with an optional class and text; the text is set with textContent, never as HTML. */
export function el(doc, tag, className = "", text = null) {
  const node = doc.createElement(tag);
  if (className) node.className = className;
  if (text !== null && text !== undefined) node.textContent = String(text);
  return node;
}

/** "14:05" in the viewer's time zone for a ts in epoch seconds, epoch milliseconds or ISO text. */
export function formatTime(ts) {
  let date;
  if (typeof ts === "number" && Number.isFinite(ts)) {
    date = new Date(ts < 1e12 ? ts * 1000 : ts);
  } else if (typeof ts === "string" && ts !== "") {
    date = /^\d+(\.\d+)?$/.test(ts) ? new Date(Number(ts) * 1000) : new Date(ts);
  } else {
    return "";
  }
  if (Number.isNaN(date.getTime())) return "";
  const hh = String(date.getHours()).padStart(2, "0");
  const mm = String(date.getMinutes()).padStart(2, "0");
  return `${hh}:${mm}`;
}

function line(doc, classes, ts, who, text) {
  const item = el(doc, "li", classes);
  const time = el(doc, "time", "ts", formatTime(ts));
  item.append(time, el(doc, "span", "from", who), el(doc, "span", "text", text));
  return item;
}

/** A room message: <li class="msg" data-id data-from> time, sender, text; class "api" when the
 * server's publish API sent it (`source: "api"`), so it never passes for a user's. */
export function renderMessage(doc, msg, me, epoch = 0) {
  const api = msg.source === "api";
  const mine = msg.from === me && !api;
  const classes = api ? "msg api" : mine ? "msg mine" : "msg";
  const item = line(doc, classes, msg.ts, msg.from ?? "?", msg.text ?? "");
  item.setAttribute("data-id", String(msg.id));
  item.setAttribute("data-epoch", String(epoch));
  item.setAttribute("data-from", String(msg.from ?? ""));
  return item;
}

/** A direct message, labelled "alice → bob". */
export function renderDirect(doc, msg, me) {
  const mine = msg.from === me;
  const who = `${msg.from ?? "?"} → ${msg.to ?? "?"}`;
  const item = line(doc, mine ? "msg direct mine" : "msg direct", msg.ts, who, msg.text ?? "");
  item.setAttribute("data-from", String(msg.from ?? ""));
  item.setAttribute("data-to", String(msg.to ?? ""));
  return item;
}

/** A line from the page itself: joins, leaves, errors, connection changes. */
export function renderNotice(doc, text, kind = "info") {
  return el(doc, "li", `notice ${kind}`, text);
}

/** "a", "a and b", "a, b and c", "a, b, c and 4 others": at most `max` names spelled out. */
export function nameList(names, max = 3) {
  if (names.length <= max) {
    return names.length <= 1 ? names.join("") : `${names.slice(0, -1).join(", ")} and ${names.at(-1)}`;
  }
  const rest = names.length - max;
  return `${names.slice(0, max).join(", ")} and ${rest} ${rest === 1 ? "other" : "others"}`;
}

/**
 * The log line of a presence event, or null when there is nothing to say: a change about the
 * viewer, a `diff` that only names the viewer, and `count` events (a room too large to name who
 * comes and goes: the count beside "Online" shows them).
 */
export function presenceText(event, me) {
  if (event.event === "diff") {
    const names = (list) => (Array.isArray(list) ? list.map(String).filter((name) => name !== me) : []);
    const joined = names(event.joined);
    const left = names(event.left);
    const parts = [];
    if (joined.length) parts.push(`${nameList(joined)} joined ${event.room}`);
    if (left.length) parts.push(`${nameList(left)} left ${event.room}`);
    return parts.length ? parts.join("; ") : null;
  }
  if (event.event === "count") return null;
  if (event.user === me) return null;
  const verb = event.event === "left" ? "left" : "joined";
  return `${event.user} ${verb} ${event.room}`;
}

/**
 * The count beside "Online" and the note under the list: `(7)`, and when the list is partial
 * (a room over the server's names limit) "showing 2 of 7: too many to list everyone". A null
 * `count` means the list spans several rooms (the direct-messages view).
 */
export function onlineSummary({ count = null, shown, partial }) {
  if (count === null) {
    // Several rooms at once (the direct-messages view): the distinct people listed.
    return { count: `(${shown})`, note: partial ? "large rooms are not listed in full" : "" };
  }
  const total = Math.max(count, shown);
  return {
    count: `(${total})`,
    note: partial ? `showing ${shown} of ${total}: too many to list everyone` : "",
  };
}

/** The text of an `error` event. */
export function errorText(event) {
  const code = event.code ?? "error";
  return event.detail ? `${code}: ${event.detail}` : String(code);
}

/** Fills `list` with one <li data-user> per distinct user, sorted, the viewer marked "(you)". */
export function renderOnline(doc, list, users, me) {
  const names = [...new Set((users ?? []).map(String))].sort((a, b) => a.localeCompare(b));
  const items = names.map((name) => {
    const item = el(doc, "li", name === me ? "user me" : "user");
    item.setAttribute("data-user", name);
    item.append(el(doc, "span", "name", name));
    if (name === me) item.append(el(doc, "span", "you", " (you)"));
    return item;
  });
  list.replaceChildren(...items);
  return names.length;
}

/** The words of the connection indicator: connected, connecting, reconnecting in Ns, offline. */
export function statusText(state, remainingMs = 0) {
  if (state === "reconnecting") return `reconnecting in ${Math.max(0, Math.ceil(remainingMs / 1000))}s`;
  return state;
}

/**
 * Adds a rendered message to a room's list in id order. Messages normally arrive in order and are
 * appended; a replayed one that is older than what is shown goes before the first newer one of the
 * same epoch (ids restart when the server's history was lost, so epochs are never mixed up).
 */
export function insertInOrder(list, item) {
  const id = item.getAttribute("data-id");
  const epoch = item.getAttribute("data-epoch");
  let before = null;
  for (let node = list.lastElementChild; node; node = node.previousElementSibling) {
    if (!node.hasAttribute("data-id")) continue;
    if (node.getAttribute("data-epoch") !== epoch) break;
    if (compareIds(node.getAttribute("data-id"), id) <= 0) break;
    before = node;
  }
  list.insertBefore(item, before);
}
