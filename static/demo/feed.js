// feed.js — the page's one stream: a changecast.js feed (one EventSource
// on /api/events, resumes, retries) whose topics follow the page, and the
// connection state shown at the top.
import { renderSend } from "./chat.js";
import { el } from "./dom.js";
import { clearNotice, notice, noticeKeys } from "./notices.js";
import { customerName, myName, state, validName } from "./state.js";
import { askForToken } from "./token.js";

/** topics are the feed's topics: tracked orders, the room, the lists switched on. */
export function topics() {
  const list = [...state.orderIDs.map((id) => "orders/" + id), "rooms/" + state.room];
  if (state.boardOn && state.staff) list.push("orders");
  if (state.mineOn && customerName()) list.push("customers/" + customerName());
  return list;
}

/**
 * feedURL names the stream's user in dev mode (no token): the chat's
 * presence list shows the name; with a token the server uses its sub.
 */
export function feedURL() {
  const n = myName();
  return !state.token && validName(n) ? "/api/events?user=" + encodeURIComponent(n) : "/api/events";
}

/**
 * syncTopics moves the feed to the current topics (and user) from the
 * same position. A list or room added to a resumed stream gets no
 * snapshot: the callers read those over REST.
 */
export function syncTopics() {
  const list = topics();
  const url = feedURL();
  for (const key of [...noticeKeys()]) {
    // A refusal notice about a topic no longer watched is stale.
    if (key.startsWith("refused ") && !list.includes(key.slice(8))) clearNotice(key);
  }
  if (state.roomRefused && state.roomRefused.topic !== "rooms/" + state.room) {
    state.roomRefused = null;
    renderSend();
  }
  const before = state.feed.topics.join("\n");
  const urlChanged = state.feed.url !== url;
  state.feed.url = url;
  state.feed.setTopics(list);
  if (urlChanged && before === list.join("\n")) state.feed.reconnect();
}

/** onStatus shows the feed's state; see changecast.js for the states. */
export function onStatus(s) {
  if (s.state === "live") {
    // Problems with the connection are over.
    clearNotice("conn");
    clearNotice("token");
    setConn("live");
    return;
  }
  if (!el.tokenPanel.hidden && !state.token) {
    setConn("signin");
    return;
  }
  if (s.httpStatus === 401) {
    askForToken(state.token ? "The server did not accept this token" + (s.reason ? ` (${s.reason}).` : ".")
      : "This server needs an access token.");
    return;
  }
  if (s.state === "offline") {
    const what = s.httpStatus ? `The server answered ${s.httpStatus}${s.reason ? ": " + s.reason : ""}.` : "The server cannot be reached.";
    notice("conn", `${what} The live feed will resume from the last event it saw.`, "warn");
  }
  setConn(s.state, s.retryInMs);
}

/** setConn shows connection state s (and when an offline feed retries). */
export function setConn(s, retryMs) {
  el.conn.dataset.state = s;
  let label = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", offline: "Offline", signin: "Waiting for sign-in", closed: "Closed" }[s] || s;
  if (s === "offline" && retryMs) label = `Offline, retrying in ${Math.max(1, Math.round(retryMs / 1000))} s`;
  el.connLabel.textContent = label;
  el.reconnect.hidden = s !== "offline" || !el.tokenPanel.hidden;
}
