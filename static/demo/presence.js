// presence.js — who is here: the chat's list of users with a stream open
// on the room, from its `presence` events (sync, join, leave; no id: they
// are not part of the change log).
import { dateFormat, el, make } from "./dom.js";
import { myName, state } from "./state.js";
import { tokenClaims } from "./token.js";

/** presenceKey is how the event log names a presence event. */
export function presenceKey(data) {
  if (data.op === "sync") {
    const n = Array.isArray(data.users) ? data.users.length : 0;
    return `sync ${n} ${n === 1 ? "user" : "users"}`;
  }
  return `${data.op || ""} ${data.user || ""}`.trim();
}

/**
 * applyPresence keeps the chat's list of who is here: sync replaces it
 * (every connection starts with one), join and leave change it.
 */
export function applyPresence(topic, data) {
  if (topic !== "rooms/" + state.room) return "not shown";
  if (data.op === "sync") {
    state.presence = new Map();
    for (const u of Array.isArray(data.users) ? data.users : []) {
      if (u && typeof u.user === "string") state.presence.set(u.user, u.since || "");
    }
  } else if (data.op === "join" && typeof data.user === "string") {
    if (!state.presence.has(data.user)) state.presence.set(data.user, new Date().toISOString());
  } else if (data.op === "leave" && typeof data.user === "string") {
    state.presence.delete(data.user);
  } else {
    return "unreadable data";
  }
  renderPresence();
  return "";
}

/** renderPresence rebuilds the list of who is here. */
export function renderPresence() {
  const users = [...state.presence.keys()].sort();
  const me = state.token ? tokenClaims(state.token).sub : myName();
  el.presence.replaceChildren(...users.map((u) => {
    const li = make("li", u === me ? "me" : "", u === me ? u + " (you)" : u);
    li.dataset.user = u;
    const since = new Date(state.presence.get(u));
    if (!Number.isNaN(since.getTime())) li.title = "Here since " + dateFormat.format(since);
    return li;
  }));
  el.presenceCount.textContent = `(${users.length})`;
  el.presenceEmpty.hidden = users.length > 0;
}
