// changecast demo: an order tracker and a chat room fed by one stream.
//
// The stream is a changecast.js feed (the client module this server serves
// at /changecast.js): one EventSource on /api/events with one `topic` per
// tracked order and one for the chat room. The feed keeps the last event id
// across reloads, recreates the EventSource with backoff whenever the
// browser gives up, and keeps its position when the topics change. A topic
// the server refuses (a mistyped order id, a room the token does not open)
// arrives as a `refused` event: that card or the chat says so, and the rest
// of the page stays live.
//
// The same feed carries two live lists when they are switched on: the
// kitchen board (topic `orders`, staff: every active order) and "my orders"
// (topic `customers/<name>`: the name's 50 most recent orders). Room
// streams also carry `presence` events: the chat lists who is here. In dev
// mode (no token) the page says who it is with the `user` parameter (the
// name above).
//
// The page is ES modules by feature, with no build step: this one starts
// it; feed.js (the stream and its topics), events.js (each event to its
// feature), orders.js (tracked orders), moves.js (the moves an order's
// `allowed` offers), lists.js (board and my orders), chat.js, presence.js,
// token.js, log.js (the event log), api.js (REST), and small helpers
// (dom.js, notices.js, storage.js, state.js, menu.js).
import { EVENTS, connect } from "../changecast.js";
import { loadHistory, onJoin, postMessage, renderMessages, renderSend } from "./chat.js";
import { el } from "./dom.js";
import { handleEvent } from "./events.js";
import { feedURL, onStatus, setConn, topics } from "./feed.js";
import { loadBoard, loadMine, onListAction, renderBoard, renderMine, setLists } from "./lists.js";
import { renderMenu } from "./menu.js";
import { loadOrderIDs, newEntry, onOrderAction, onTrack, placeOrder, refreshOrder, renderOrderList, trackFromHash } from "./orders.js";
import { renderPresence } from "./presence.js";
import { customerName, myName, state } from "./state.js";
import { KEY_BOARD, KEY_LAST_ID, KEY_MINE, KEY_NAME, load, save } from "./storage.js";
import { applyTokenName, onToken, setToken } from "./token.js";

// checkDevMode shows the dev-mode banner when a request without any
// credentials is answered.
async function checkDevMode() {
  try {
    const res = await fetch(`/api/rooms/${encodeURIComponent(state.room)}/messages?limit=1`, { method: "HEAD", credentials: "omit", cache: "no-store" });
    el.devBanner.hidden = !res.ok;
  } catch {
    // Unknown: leave the banner as it is.
  }
}

function start() {
  renderMenu();
  el.name.value = load(localStorage, KEY_NAME, "");
  applyTokenName();
  el.room.value = state.room;
  el.roomLabel.textContent = state.room;
  for (const id of loadOrderIDs()) {
    state.orders.set(id, newEntry(id));
    state.orderIDs.push(id);
  }
  renderOrderList();
  renderMessages();
  renderSend();

  el.name.addEventListener("change", () => {
    if (el.name.readOnly) return;
    save(localStorage, KEY_NAME, myName());
    // The name is the dev-mode user (presence) and whose orders "my
    // orders" follows.
    setLists();
    renderPresence();
  });
  el.boardOn.addEventListener("change", () => {
    state.boardOn = el.boardOn.checked;
    save(localStorage, KEY_BOARD, state.boardOn ? "1" : "");
    setLists();
  });
  el.mineOn.addEventListener("change", () => {
    state.mineOn = el.mineOn.checked;
    save(localStorage, KEY_MINE, state.mineOn ? "1" : "");
    setLists();
  });
  el.board.addEventListener("click", onListAction);
  el.mine.addEventListener("click", onListAction);
  el.orderForm.addEventListener("submit", placeOrder);
  el.trackForm.addEventListener("submit", onTrack);
  el.orders.addEventListener("click", onOrderAction);
  el.roomForm.addEventListener("submit", onJoin);
  el.messageForm.addEventListener("submit", postMessage);
  el.tokenForm.addEventListener("submit", onToken);
  el.tokenForget.addEventListener("click", () => {
    setToken("");
    el.token.value = "";
    el.token.focus();
  });
  el.reconnect.addEventListener("click", () => state.feed.reconnect());
  window.addEventListener("hashchange", trackFromHash);

  setConn("connecting");
  state.mineFor = state.mineOn ? customerName() : "";
  renderBoard();
  renderMine();
  renderPresence();
  state.feed = connect({ url: feedURL(), topics: topics(), token: state.token, storageKey: KEY_LAST_ID });
  for (const name of EVENTS) state.feed.on(name, handleEvent);
  state.feed.on("status", onStatus);
  // After a reload the feed resumes from the last id it saw, so it sends
  // no snapshots: read the current state over REST (newer versions and
  // message ids make the merge with events exact).
  if (state.feed.lastEventId) {
    for (const entry of state.orders.values()) refreshOrder(entry);
    loadHistory(state.room);
    if (state.boardOn && state.staff) loadBoard();
    if (state.mineOn) loadMine();
  }
  trackFromHash();
  checkDevMode();
}

start();
