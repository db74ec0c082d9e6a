// log.js — the event log: every event the feed delivered, newest first,
// with its id (or "no id" for the events outside the change log).
import { el, make, timeFormat } from "./dom.js";
import { MAX_LOG } from "./state.js";

// What the event log says about an event the page did not apply.
const NOTE_TEXT = {
  "duplicate event": "received twice: this should never happen",
  "not tracked": "not shown: this tab no longer tracks that order",
  stale: "already on the card (the answer to this tab's own change, or a newer event, came first)",
  "not shown": "not shown: it is for another room",
  "already shown": "already in the chat (the answer to Send came first)",
  "unreadable data": "not shown: its data is not JSON",
};

/**
 * logEvent adds an entry to the event log. detail identifies the event
 * (order version and status, message id) in data-detail; shown, when
 * set, is displayed in its place; note says why it was not applied.
 */
export function logEvent(name, id, topic, detail, note, shown) {
  const li = make("li", "log-entry");
  li.dataset.event = name;
  li.dataset.id = id || "";
  li.dataset.topic = topic;
  li.dataset.detail = detail;
  if (note) {
    li.dataset.note = note;
    li.classList.add("noted");
  }
  li.append(
    make("span", "log-time", timeFormat.format(new Date())),
    make("span", "log-name", name),
    make("span", "log-topic", topic),
    make("span", "log-detail", (shown || detail) + (note ? ` — ${NOTE_TEXT[note] || note}` : "")),
    make("code", "log-id", id ? "id " + id : "no id"),
  );
  li.querySelector(".log-id").title = id ? "The event's id: a stream resumes after it (Last-Event-ID)" : "Not part of the log: it has no id";
  el.eventLog.prepend(li);
  while (el.eventLog.childElementCount > MAX_LOG) el.eventLog.lastElementChild.remove();
}
