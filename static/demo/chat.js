// chat.js — the chat room: joining one, its messages (the snapshot, the
// history read over REST after a resume, live events), and sending.
import { api } from "./api.js";
import { announce, el, make, timeNode } from "./dom.js";
import { syncTopics } from "./feed.js";
import { notice } from "./notices.js";
import { renderPresence } from "./presence.js";
import { HISTORY_LIMIT, MAX_MESSAGES, ROOM_RE, myName, state } from "./state.js";
import { KEY_ROOM, save } from "./storage.js";

/** onJoin submits the room form. */
export function onJoin(ev) {
  ev.preventDefault();
  el.roomError.textContent = "";
  const room = el.room.value.trim().toLowerCase();
  if (!ROOM_RE.test(room)) {
    el.roomError.textContent = "A room name is 1–64 characters: a–z, 0–9, - and _, starting with a letter or digit.";
    el.room.focus();
    return;
  }
  el.room.value = room;
  if (room === state.room) return;
  state.room = room;
  state.messages = new Map();
  // The new room's sync comes with the reconnect.
  state.presence = new Map();
  renderPresence();
  save(localStorage, KEY_ROOM, room);
  el.roomLabel.textContent = room;
  renderMessages();
  const resuming = state.feed.lastEventId !== "";
  syncTopics();
  // A resumed stream sends only what comes after the last id, so read the
  // room's history over REST; message ids make the merge exact.
  if (resuming) loadHistory(room);
  announce(`Joined room ${room}.`);
}

/** loadHistory reads a room's latest messages over REST, for a resumed stream. */
export async function loadHistory(room) {
  try {
    const body = await api("GET", `/api/rooms/${encodeURIComponent(room)}/messages?limit=${HISTORY_LIMIT}`);
    if (room !== state.room) return;
    let added = false;
    for (const m of Array.isArray(body.messages) ? body.messages : []) {
      if (m && typeof m.id === "string" && !state.messages.has(m.id)) {
        state.messages.set(m.id, m);
        added = true;
      }
    }
    if (added) renderMessages();
  } catch (err) {
    if (room === state.room) el.roomError.textContent = "Could not load the history: " + err.message;
  }
}

/** postMessage submits the message form. */
export async function postMessage(ev) {
  ev.preventDefault();
  el.messageError.textContent = "";
  if (state.roomRefused) return;
  const text = el.messageText.value;
  if (text.trim() === "") {
    el.messageText.focus();
    return;
  }
  const body = { text };
  if (!state.token) {
    const author = myName();
    if (!author) {
      el.messageError.textContent = "Enter your name first.";
      el.name.focus();
      return;
    }
    body.author = author;
  }
  const room = state.room;
  state.sending = true;
  renderSend();
  try {
    const m = await api("POST", `/api/rooms/${encodeURIComponent(room)}/messages`, body);
    if (el.messageText.value === text) el.messageText.value = "";
    if (room === state.room) applyMessage(m);
  } catch (err) {
    el.messageError.textContent = err.message;
  } finally {
    state.sending = false;
    renderSend();
    el.messageText.focus();
  }
}

/** applyMessage shows a message of the room, once. */
export function applyMessage(m) {
  if (typeof m.id !== "string" || m.room !== state.room) return "not shown";
  if (state.messages.has(m.id)) return "already shown";
  state.messages.set(m.id, m);
  insertMessage(m);
  return "";
}

/** applyRoomSnapshot replaces the room's messages with its snapshot. */
export function applyRoomSnapshot(topic, data) {
  if (topic !== "rooms/" + state.room) return "not shown";
  state.messages = new Map();
  for (const m of Array.isArray(data.messages) ? data.messages : []) {
    if (m && typeof m.id === "string") state.messages.set(m.id, m);
  }
  renderMessages();
  return "";
}

/** applyRoomRefused: the stream refused the room; the chat cannot send. */
export function applyRoomRefused(topic, status, error) {
  state.roomRefused = { topic, status, error };
  renderSend();
  notice("refused " + topic, `Room ${topic.slice(6)}: ${status === 403 ? "your token does not open this room" : "refused"}${error ? ` (${error})` : ""}. Other updates keep coming.`, "error");
}

/** renderSend enables chat's Send unless the room is refused, and says why. */
export function renderSend() {
  const r = state.roomRefused;
  const why = r ? `You cannot use room ${state.room}: ${r.status === 403 ? "your token does not open it" : r.error || "the server refused it"}.` : "";
  el.send.disabled = Boolean(r) || state.sending;
  el.messageText.disabled = Boolean(r);
  el.sendReason.textContent = why;
  el.sendReason.hidden = !r;
}

function messageElement(m) {
  const li = make("li", "msg");
  li.dataset.messageId = m.id;
  if (m.author && m.author === myName()) li.classList.add("mine");
  const head = make("p", "msg-head");
  head.append(make("span", "msg-author", m.author || "anonymous"), timeNode(m.createdAt));
  li.append(head, make("p", "msg-text", m.text || ""));
  return li;
}

function nearBottom() {
  const box = el.messages;
  return box.scrollHeight - box.scrollTop - box.clientHeight < 48;
}

function scrollToBottom() {
  el.messages.scrollTop = el.messages.scrollHeight;
}

function trimMessages() {
  if (state.messages.size <= MAX_MESSAGES) return;
  const ids = [...state.messages.keys()].sort();
  for (const id of ids.slice(0, ids.length - MAX_MESSAGES)) {
    state.messages.delete(id);
    el.messages.querySelector(`[data-message-id="${CSS.escape(id)}"]`)?.remove();
  }
}

// insertMessage places a message by id: ids order like the writes in a room.
function insertMessage(m) {
  const stick = nearBottom();
  const li = messageElement(m);
  let before = null;
  for (let n = el.messages.lastElementChild; n; n = n.previousElementSibling) {
    if (n.dataset.messageId < m.id) break;
    before = n;
  }
  el.messages.insertBefore(li, before);
  trimMessages();
  el.messagesEmpty.hidden = true;
  if (stick || m.author === myName()) scrollToBottom();
}

/** renderMessages rebuilds the room's messages. */
export function renderMessages() {
  const ids = [...state.messages.keys()].sort();
  el.messages.replaceChildren(...ids.map((id) => messageElement(state.messages.get(id))));
  trimMessages();
  el.messagesEmpty.hidden = state.messages.size > 0;
  el.messages.setAttribute("aria-label", `Messages in room ${state.room}`);
  scrollToBottom();
}
