// lists.js — the live lists: the kitchen board (topic `orders`, staff:
// every active order, moved along from here) and "my orders" (topic
// `customers/<name>`: the name's 50 most recent orders). Their order
// events carry the order's own topic, so one event updates the tracked
// card, the board and my orders alike.
import { api } from "./api.js";
import { announce, el, make, shortID, timeNode } from "./dom.js";
import { syncTopics } from "./feed.js";
import { itemsText } from "./menu.js";
import { STATUS_LABEL, active, moveButtons, moveError } from "./moves.js";
import { orderElement, renderOrder, setOrder, trackOrder } from "./orders.js";
import { BOARD_LIMIT, MINE_LIMIT, customerName, state } from "./state.js";

/**
 * applyBoard keeps the board's copy of an order unless it has a newer
 * one; a delivered, cancelled or deleted order leaves the board.
 */
export function applyBoard(o, op) {
  if (!state.boardOn || typeof o.id !== "string") return "not tracked";
  const entry = state.board.get(o.id);
  if (op === "delete") {
    state.board.set(o.id, { order: { id: o.id, status: "deleted", version: Infinity }, busy: false, error: "" });
    renderBoard();
    return "";
  }
  if (entry && !(o.version > entry.order.version)) return "stale";
  if (entry) entry.order = o;
  else state.board.set(o.id, { order: o, busy: false, error: "" });
  trimBoard();
  renderBoard();
  return "";
}

// trimBoard forgets the oldest finished orders beyond a bound.
function trimBoard() {
  if (state.board.size <= 4 * BOARD_LIMIT) return;
  const done = [...state.board.keys()].filter((id) => !active(state.board.get(id).order)).sort();
  for (const id of done.slice(0, state.board.size - 4 * BOARD_LIMIT)) state.board.delete(id);
}

/** applyMine keeps my orders: the customer's own orders, newest first. */
export function applyMine(o, op) {
  if (!state.mineOn || typeof o.id !== "string") return "not tracked";
  if (op === "delete") {
    if (!state.mine.delete(o.id)) return "not tracked";
    renderMine();
    return "";
  }
  if (!state.mineFor || o.customer !== state.mineFor) return "not tracked";
  const have = state.mine.get(o.id);
  if (have && !(o.version > have.version)) return "stale";
  state.mine.set(o.id, o);
  const ids = [...state.mine.keys()].sort().reverse();
  for (const id of ids.slice(MINE_LIMIT)) state.mine.delete(id);
  renderMine();
  return "";
}

/** applyListSnapshot replaces a list with its snapshot. */
export function applyListSnapshot(topic, data) {
  const orders = Array.isArray(data.orders) ? data.orders : [];
  if (topic === "orders") {
    if (!state.boardOn) return "not shown";
    state.board = new Map();
    for (const o of orders) {
      if (o && typeof o.id === "string") state.board.set(o.id, { order: o, busy: false, error: "" });
    }
    renderBoard();
    return "";
  }
  if (!state.mineOn || topic !== "customers/" + customerName()) return "not shown";
  state.mineFor = customerName();
  state.mine = new Map();
  for (const o of orders) {
    if (o && typeof o.id === "string") state.mine.set(o.id, o);
  }
  renderMine();
  return "";
}

/** applyListRefused says that the stream refused a list's topic. */
export function applyListRefused(topic, status, error) {
  const why = `${status}${error ? ": " + error : ""}`;
  if (topic === "orders") el.boardError.textContent = `The server does not show the board to this token (${why}).`;
  else el.mineError.textContent = `The server does not show these orders (${why}).`;
}

/**
 * loadBoard reads the active orders over REST, for a resumed stream (it
 * sends no snapshot); newer versions win, so events are never undone.
 */
export async function loadBoard() {
  try {
    const body = await api("GET", `/api/orders?status=active&limit=${BOARD_LIMIT}`);
    if (!state.boardOn) return;
    el.boardError.textContent = "";
    for (const o of Array.isArray(body.orders) ? body.orders : []) {
      const entry = state.board.get(o.id);
      if (!entry) state.board.set(o.id, { order: o, busy: false, error: "" });
      else if (o.version > entry.order.version) entry.order = o;
    }
    renderBoard();
  } catch (err) {
    if (state.boardOn) el.boardError.textContent = "Could not load the board: " + err.message;
  }
}

/** loadMine reads my orders over REST, for a resumed stream. */
export async function loadMine() {
  const name = customerName();
  if (!name) return;
  try {
    const body = await api("GET", `/api/orders?customer=${encodeURIComponent(name)}&limit=${MINE_LIMIT}`);
    if (!state.mineOn || customerName() !== name) return;
    el.mineError.textContent = "";
    state.mineFor = name;
    for (const o of Array.isArray(body.orders) ? body.orders : []) {
      const have = state.mine.get(o.id);
      if (!have || o.version > have.version) state.mine.set(o.id, o);
    }
    renderMine();
  } catch (err) {
    if (state.mineOn) el.mineError.textContent = "Could not load your orders: " + err.message;
  }
}

/** setLists switches the lists on or off and follows the current name. */
export function setLists() {
  const resuming = state.feed.lastEventId !== "";
  const name = customerName();
  const mineChanged = state.mineOn && name !== state.mineFor;
  if (!state.mineOn || mineChanged) {
    state.mine = new Map();
    state.mineFor = state.mineOn ? name : "";
  }
  if (!state.boardOn) state.board = new Map();
  const boardAdded = state.boardOn && state.staff && !state.feed.topics.includes("orders");
  renderBoard();
  renderMine();
  syncTopics();
  if (resuming && boardAdded) loadBoard();
  if (resuming && mineChanged && name) loadMine();
}

async function moveOnBoard(id, status) {
  const entry = state.board.get(id);
  if (!entry || entry.busy) return;
  entry.busy = true;
  entry.error = "";
  renderBoard();
  try {
    const o = await api("PATCH", "/api/orders/" + encodeURIComponent(id), { status }, { "If-Match": String(entry.order.version) });
    applyBoard(o, "update");
    applyMine(o, "update");
    const tracked = state.orders.get(id);
    if (tracked && (!tracked.order || o.version > tracked.order.version)) {
      setOrder(tracked, o, false);
      renderOrder(tracked);
    }
    announce(`Order ${shortID(id)} is now ${STATUS_LABEL[o.status] || o.status}.`);
  } catch (err) {
    entry.error = moveError(err, status, "Someone changed this order first.");
  } finally {
    entry.busy = false;
    renderBoard();
  }
}

/** onListAction handles a click on a list row's buttons. */
export function onListAction(ev) {
  const button = ev.target.closest("button[data-action]");
  const row = button && button.closest("[data-order-id]");
  if (!row) return;
  const id = row.dataset.orderId;
  switch (button.dataset.action) {
    case "advance":
    case "cancel":
      moveOnBoard(id, button.dataset.next);
      break;
    case "track": {
      const o = state.board.get(id)?.order || state.mine.get(id);
      trackOrder(id, o && Number.isFinite(o.version) ? o : null);
      orderElement(id)?.querySelector("h3")?.focus();
      break;
    }
  }
}

// listRow renders one order of a list; board rows can move it along.
function listRow(o, board, entry) {
  const li = make("li", "list-row");
  li.dataset.orderId = o.id;
  li.dataset.status = o.status;
  li.dataset.version = String(o.version);
  const main = make("div", "row-main");
  const badge = make("span", "badge", STATUS_LABEL[o.status] || o.status);
  badge.dataset.status = o.status;
  const id = make("code", "row-id", shortID(o.id));
  id.title = o.id;
  main.append(badge, id, make("span", "row-customer", o.customer || ""));
  const meta = make("span", "row-meta", itemsText(o) + " · ");
  meta.append(timeNode(o.createdAt));
  main.append(meta);
  const actions = make("div", "row-actions");
  // The board is for staff: a customer's own moves are on its cards.
  if (board && state.staff) actions.append(...moveButtons(o, true, entry.busy));
  if (!state.orders.has(o.id)) {
    const b = make("button", "btn btn-ghost btn-small", "Track");
    b.type = "button";
    b.dataset.action = "track";
    b.setAttribute("aria-label", `Track order ${shortID(o.id)}`);
    actions.append(b);
  }
  li.append(main, actions);
  if (entry && entry.error) {
    const p = make("p", "form-error", entry.error);
    p.setAttribute("role", "alert");
    li.append(p);
  }
  return li;
}

// renderList rebuilds a list, keeping keyboard focus on the same control.
function renderList(ul, rows) {
  const row = ul.contains(document.activeElement) ? document.activeElement.closest("[data-order-id]") : null;
  const focus = row ? { id: row.dataset.orderId, action: document.activeElement.dataset.action } : null;
  ul.replaceChildren(...rows);
  if (focus) {
    const r = [...ul.children].find((li) => li.dataset.orderId === focus.id);
    const target = r?.querySelector(`[data-action="${focus.action}"]:not(:disabled)`) || r?.querySelector("button:not(:disabled)");
    if (target) target.focus();
  }
}

/** renderBoard rebuilds the kitchen board. */
export function renderBoard() {
  el.boardCard.hidden = !state.staff;
  el.boardOn.checked = state.boardOn;
  const ids = [...state.board.keys()].filter((id) => active(state.board.get(id).order)).sort().reverse();
  renderList(el.board, state.boardOn ? ids.map((id) => listRow(state.board.get(id).order, true, state.board.get(id))) : []);
  el.boardEmpty.hidden = !state.boardOn || ids.length > 0;
  if (!state.boardOn) el.boardError.textContent = "";
}

/** renderMine rebuilds my orders. */
export function renderMine() {
  el.mineOn.checked = state.mineOn;
  const ids = [...state.mine.keys()].sort().reverse();
  renderList(el.mine, state.mineOn ? ids.map((id) => listRow(state.mine.get(id), false, null)) : []);
  el.mineEmpty.hidden = !state.mineOn || !state.mineFor || ids.length > 0;
  el.mineHint.textContent = state.mineOn && !customerName()
    ? "Enter your name above (without /) to see your orders."
    : "Your 50 most recent orders, for the name above; a new one shows up without reloading.";
  if (!state.mineOn) el.mineError.textContent = "";
}
