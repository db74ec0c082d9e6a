// events.js — each event the feed delivers ({type, id, topic, data}),
// handed to the feature it is about and written to the event log.
import { applyRoomRefused, applyMessage, applyRoomSnapshot, renderSend } from "./chat.js";
import { el } from "./dom.js";
import { applyBoard, applyListRefused, applyListSnapshot, applyMine } from "./lists.js";
import { logEvent } from "./log.js";
import { clearNotice, notice } from "./notices.js";
import { applyOrder, applyOrderRefused, applyOrderSnapshot } from "./orders.js";
import { applyPresence, presenceKey } from "./presence.js";
import { MAX_SEEN, state } from "./state.js";
import { askForToken } from "./token.js";

/** handleEvent takes one event from the feed. */
export function handleEvent({ type: name, id, topic, data }) {
  state.events++;
  el.eventCount.textContent = String(state.events);
  el.eventCountUnit.textContent = state.events === 1 ? "event" : "events";
  if (!data || typeof data !== "object") {
    logEvent(name, id, "", "", "unreadable data", "");
    return;
  }
  if (name !== "refused" && state.roomRefused && state.roomRefused.topic === topic) {
    // The room streams again (a 503 refusal is retried): the chat can send.
    state.roomRefused = null;
    clearNotice("refused " + topic);
    renderSend();
  }
  switch (name) {
    case "snapshot":
      logEvent(name, id, topic, snapshotKey(data), applySnapshot(data), "");
      break;
    case "reset":
      logEvent(name, id, topic, String(data.reason || ""), "", "");
      // One notice for the resets of all topics of a connection.
      notice("reset", resetText(data), "warn");
      break;
    case "expired":
      logEvent(name, id, topic, "", "", "");
      askForToken("Your access token has expired. Enter a new one to continue.");
      break;
    case "refused":
      logEvent(name, id, topic, String(data.status || ""), "", `${data.status || ""} ${data.error || ""}`.trim());
      applyRefused(topic, data);
      break;
    case "order": {
      const dup = checkDuplicate(name, id, topic);
      const o = data.order || {};
      let note = dup;
      if (!dup) {
        // One event serves the tracked card, the board and my orders.
        const notes = [applyOrder(o, data.op), applyBoard(o, data.op), applyMine(o, data.op)];
        note = notes.includes("") ? "" : notes.includes("stale") ? "stale" : notes[0];
      }
      logEvent(name, id, topic, "v" + (o.version ?? "?") + " " + (o.status || data.op || ""), note, "");
      break;
    }
    case "presence":
      logEvent(name, id, topic, presenceKey(data), applyPresence(topic, data), "");
      break;
    case "message": {
      const dup = checkDuplicate(name, id, topic);
      const m = data.message || {};
      logEvent(name, id, topic, String(m.id || ""), dup || applyMessage(m), `${m.author || "?"}: ${m.text || ""}`);
      break;
    }
  }
}

// applyRefused shows a topic the server left out of the stream: the
// order's card says so, or the list, or the chat cannot send; the rest
// of the feed goes on.
function applyRefused(topic, data) {
  const status = Number(data.status) || 0;
  const error = typeof data.error === "string" ? data.error : "";
  if (topic.startsWith("orders/")) applyOrderRefused(topic, status, error);
  else if (topic === "orders" || topic.startsWith("customers/")) applyListRefused(topic, status, error);
  else if (topic.startsWith("rooms/")) applyRoomRefused(topic, status, error);
}

// applySnapshot replaces what the page shows of the snapshot's topic.
function applySnapshot(data) {
  const topic = String(data.topic || "");
  if (topic === "orders" || topic.startsWith("customers/")) return applyListSnapshot(topic, data);
  if (topic.startsWith("orders/")) return applyOrderSnapshot(topic, data);
  if (topic.startsWith("rooms/")) return applyRoomSnapshot(topic, data);
  return "not shown";
}

// checkDuplicate reports an order or message event delivered twice: it
// should never happen, and the event log shows it if it does.
function checkDuplicate(name, id, topic) {
  if (!id) return "";
  const key = name + " " + id + " " + topic;
  if (state.seen.has(key)) return "duplicate event";
  state.seen.add(key);
  if (state.seen.size > MAX_SEEN) state.seen.delete(state.seen.values().next().value);
  return "";
}

function resetText(data) {
  const why = data.reason === "history-lost" ? "the server no longer keeps the changes since the last event this tab saw"
    : data.reason === "invalid-id" ? "the server does not know the last event this tab saw"
      : "the server could not resume it";
  return `The live feed started over because ${why}. The page now shows the current state; steps in between are not in the timeline.`;
}

function snapshotKey(data) {
  if (Array.isArray(data.orders)) return data.orders.length + (data.orders.length === 1 ? " order" : " orders");
  if (Array.isArray(data.messages)) return data.messages.length + (data.messages.length === 1 ? " message" : " messages");
  if (data.order) return "v" + data.order.version + " " + data.order.status;
  return "not found";
}
