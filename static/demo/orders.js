// orders.js — the tracked orders: placing one, tracking one by id or by
// link (/#order=<id>), each as a card with its timeline and the moves
// its `allowed` offers.
import { api } from "./api.js";
import { $, announce, el, make, shortID, timeNode } from "./dom.js";
import { syncTopics } from "./feed.js";
import { renderBoard, renderMine } from "./lists.js";
import { MENU, itemsText } from "./menu.js";
import { STATUS_LABEL, TIMELINE, moveButtons, moveError } from "./moves.js";
import { clearNotice, notice } from "./notices.js";
import { MAX_ORDERS, ORDER_ID_RE, myName, state } from "./state.js";
import { KEY_ORDERS, load, save } from "./storage.js";

/** loadOrderIDs returns the ids of the orders tracked before the reload. */
export function loadOrderIDs() {
  try {
    const ids = JSON.parse(load(localStorage, KEY_ORDERS, "[]"));
    return Array.isArray(ids) ? ids.filter((id) => typeof id === "string" && ORDER_ID_RE.test(id)).slice(0, MAX_ORDERS) : [];
  } catch {
    return [];
  }
}

function saveOrderIDs() {
  save(localStorage, KEY_ORDERS, JSON.stringify(state.orderIDs));
}

/** newEntry is a tracked order not read yet. */
export function newEntry(id) {
  // refused: the status the stream refused the order's topic with, or 0.
  return { id, order: null, history: new Map(), missing: false, deleted: false, busy: false, error: "", refused: 0 };
}

/** placeOrder submits the order form. */
export async function placeOrder(ev) {
  ev.preventDefault();
  el.orderFormError.textContent = "";
  const customer = myName();
  if (!customer) {
    el.orderFormError.textContent = "Enter your name first.";
    el.name.focus();
    return;
  }
  const items = [];
  for (const m of MENU) {
    const qty = Number($("qty-" + m.sku).value);
    if (qty > 0) items.push({ sku: m.sku, qty: Math.floor(qty) });
  }
  if (items.length === 0) {
    el.orderFormError.textContent = "Pick at least one dish.";
    return;
  }
  el.placeOrder.disabled = true;
  try {
    const order = await api("POST", "/api/orders", { customer, items });
    trackOrder(order.id, order);
    announce(`Order ${shortID(order.id)} placed.`);
  } catch (err) {
    el.orderFormError.textContent = err.message;
  } finally {
    el.placeOrder.disabled = false;
  }
}

/** trackOrder adds order id to the tracked ones (order: its JSON if known) and its topic to the feed. */
export function trackOrder(id, order) {
  let entry = state.orders.get(id);
  if (!entry) {
    entry = newEntry(id);
    state.orders.set(id, entry);
    state.orderIDs.unshift(id);
    while (state.orderIDs.length > MAX_ORDERS) untrack(state.orderIDs[state.orderIDs.length - 1], false);
    saveOrderIDs();
  }
  if (order) setOrder(entry, order, !entry.order);
  renderOrderList();
  syncTopics();
  if (!order) refreshOrder(entry);
  return entry;
}

function untrack(id, sync = true) {
  const li = orderElement(id);
  if (li) li.remove();
  state.orders.delete(id);
  state.orderIDs = state.orderIDs.filter((x) => x !== id);
  saveOrderIDs();
  if (sync) {
    renderOrderList();
    syncTopics();
  }
}

/**
 * refreshOrder reads an order over REST; the newer version wins, so it
 * cannot undo an event that arrived meanwhile.
 */
export async function refreshOrder(entry) {
  try {
    const o = await api("GET", "/api/orders/" + encodeURIComponent(entry.id));
    if (state.orders.get(entry.id) !== entry) return;
    if (!entry.order || o.version > entry.order.version) setOrder(entry, o, !entry.order);
  } catch (err) {
    if (state.orders.get(entry.id) !== entry) return;
    if (err.status === 404) {
      entry.missing = !entry.order;
    } else {
      entry.error = err.message;
    }
  }
  renderOrder(entry);
}

async function changeStatus(entry, status) {
  if (!entry.order || entry.busy) return;
  entry.busy = true;
  entry.error = "";
  renderOrder(entry);
  try {
    const o = await api("PATCH", "/api/orders/" + encodeURIComponent(entry.id), { status }, { "If-Match": String(entry.order.version) });
    if (state.orders.get(entry.id) === entry && o.version > (entry.order ? entry.order.version : 0)) {
      setOrder(entry, o, false);
      announce(`Order ${shortID(o.id)} is now ${STATUS_LABEL[o.status] || o.status}.`);
    }
  } catch (err) {
    entry.error = moveError(err, status, "Someone changed this order first; showing the latest.");
    if (err.status === 412 || err.status === 409) refreshOrder(entry);
  } finally {
    entry.busy = false;
    if (state.orders.get(entry.id) === entry) renderOrder(entry);
  }
}

/** onOrderAction handles a click on a card's buttons. */
export function onOrderAction(ev) {
  const button = ev.target.closest("button[data-action]");
  if (!button) return;
  const li = button.closest("[data-order-id]");
  const entry = li && state.orders.get(li.dataset.orderId);
  if (!entry) return;
  switch (button.dataset.action) {
    case "advance":
    case "cancel":
      changeStatus(entry, button.dataset.next);
      break;
    case "copy":
      copyOrderID(entry);
      break;
    case "untrack": {
      const idx = state.orderIDs.indexOf(entry.id);
      untrack(entry.id);
      // Keep keyboard focus in the list.
      const next = state.orderIDs[Math.min(idx, state.orderIDs.length - 1)];
      const target = next ? orderElement(next)?.querySelector("h3") : el.trackID;
      if (target) target.focus();
      announce(`Stopped tracking order ${shortID(entry.id)}.`);
      break;
    }
  }
}

/** onTrack submits the "track an order by id" form. */
export function onTrack(ev) {
  ev.preventDefault();
  el.trackError.textContent = "";
  const id = el.trackID.value.trim().toLowerCase();
  if (!ORDER_ID_RE.test(id)) {
    el.trackError.textContent = "An order id is 24 characters 0–9 and a–f.";
    el.trackID.focus();
    return;
  }
  el.trackID.value = "";
  trackOrder(id, null);
}

/** setOrder puts order o on the tracked entry; replace: o replaces what is known (a snapshot). */
export function setOrder(entry, o, replace) {
  const before = entry.order;
  entry.order = o;
  entry.missing = false;
  entry.deleted = false;
  if (Array.isArray(o.history) && o.history.length > 0) {
    // The order carries its own story: every step with its time, the
    // same after a reload, a reset or in a second tab.
    entry.history = new Map(o.history.map((h) => [h.status, h.at]));
    return;
  }
  if (replace || !before) {
    // An order stored before history was kept tells only its current
    // status: keep the times we saw for earlier steps, drop later ones.
    const idx = TIMELINE.indexOf(o.status);
    for (const s of [...entry.history.keys()]) {
      const i = TIMELINE.indexOf(s);
      if (o.status !== "cancelled" && (i > idx || s === "cancelled")) entry.history.delete(s);
    }
    if (!entry.history.has("placed") && o.createdAt) entry.history.set("placed", o.createdAt);
  }
  if (!entry.history.has(o.status)) entry.history.set(o.status, o.updatedAt || o.createdAt || "");
}

/** applyOrder shows an order event unless what is shown is as new or newer. */
export function applyOrder(o, op) {
  const entry = state.orders.get(o.id);
  if (!entry) return "not tracked";
  entry.refused = 0;
  if (op === "delete") {
    entry.deleted = true;
    renderOrder(entry);
    return "";
  }
  if (entry.order && !(o.version > entry.order.version)) return "stale";
  setOrder(entry, o, false);
  renderOrder(entry);
  announce(`Order ${shortID(o.id)} is now ${STATUS_LABEL[o.status] || o.status}.`);
  return "";
}

/** applyOrderSnapshot shows an order's snapshot (no order: not found). */
export function applyOrderSnapshot(topic, data) {
  const entry = state.orders.get(topic.slice("orders/".length));
  if (!entry) return "not tracked";
  entry.refused = 0;
  if (data.order && typeof data.order === "object") {
    setOrder(entry, data.order, true);
  } else {
    entry.order = null;
    entry.missing = true;
  }
  renderOrder(entry);
  return "";
}

/** applyOrderRefused shows that the stream refused an order's topic. */
export function applyOrderRefused(topic, status, error) {
  const entry = state.orders.get(topic.slice("orders/".length));
  if (!entry) return;
  entry.refused = status;
  if (status === 404) entry.missing = true;
  renderOrder(entry);
  notice("refused " + topic, `Order ${entry.id}: ${status === 404 ? "not found" : "not yours to watch"}${error ? ` (${error})` : ""}. Other updates keep coming.`, "error");
}

/** orderElement is the card of order id, or null. */
export function orderElement(id) {
  for (const li of el.orders.children) if (li.dataset.orderId === id) return li;
  return null;
}

/** renderOrderList puts the cards in state.orderIDs order, creating missing ones. */
export function renderOrderList() {
  let prev = null;
  for (const id of state.orderIDs) {
    let li = orderElement(id);
    if (!li) {
      li = make("li", "order");
      li.dataset.orderId = id;
      renderOrder(state.orders.get(id), li);
    }
    const want = prev ? prev.nextSibling : el.orders.firstChild;
    if (want !== li) el.orders.insertBefore(li, want);
    prev = li;
  }
  el.ordersEmpty.hidden = state.orderIDs.length > 0;
  // The lists offer Track for orders not tracked yet.
  if (state.boardOn) renderBoard();
  if (state.mineOn) renderMine();
}

/** renderOrder rebuilds an order's card. */
export function renderOrder(entry, existing) {
  const li = existing || orderElement(entry.id);
  if (!li) return;
  // Remember which control had focus, to give it back after the rebuild.
  const focused = li.contains(document.activeElement) ? document.activeElement.dataset.action || "heading" : "";
  const o = entry.order;
  const status = entry.deleted ? "deleted" : entry.missing ? "missing" : entry.refused === 403 ? "forbidden" : o ? o.status : "loading";
  li.dataset.status = status;
  li.dataset.version = o ? String(o.version) : "0";
  li.replaceChildren();

  const head = make("div", "order-head");
  const h = make("h3", "order-title");
  h.tabIndex = -1;
  h.append("Order ", make("code", "", shortID(entry.id)));
  h.title = entry.id;
  const badge = make("span", "badge", STATUS_LABEL[status] || { deleted: "Deleted", missing: "Not found", forbidden: "Not allowed", loading: "Loading…" }[status]);
  badge.dataset.status = status;
  head.append(h, badge);
  li.append(head);

  if (o) {
    const meta = make("p", "order-meta");
    meta.append(make("span", "customer", o.customer || ""), make("span", "sep", " · "), make("span", "", itemsText(o)), make("span", "sep", " · "), make("span", "version", "v" + o.version));
    li.append(meta, renderTimeline(entry));
  } else if (entry.missing) {
    li.append(make("p", "muted", "No order with this id: check it for a typo. Chat and other orders stay live."));
  } else if (status === "forbidden") {
    li.append(make("p", "muted", "This token may not watch this order."));
  } else if (entry.deleted) {
    li.append(make("p", "muted", "This order was deleted."));
  }

  const share = make("p", "order-share");
  const link = make("a", "order-link", "Link");
  link.href = orderLink(entry.id);
  link.setAttribute("aria-label", `Link to order ${shortID(entry.id)}`);
  const copy = make("button", "btn btn-ghost btn-small", "Copy id");
  copy.type = "button";
  copy.dataset.action = "copy";
  copy.setAttribute("aria-label", `Copy the id of order ${shortID(entry.id)}`);
  share.append(make("code", "order-id", entry.id), copy, link);
  li.append(share);

  const actions = make("div", "order-actions");
  if (o && !entry.deleted) actions.append(...moveButtons(o, state.staff, entry.busy));
  const u = make("button", "btn btn-ghost btn-small", "Stop tracking");
  u.type = "button";
  u.dataset.action = "untrack";
  u.setAttribute("aria-label", `Stop tracking order ${shortID(entry.id)}`);
  actions.append(u);
  li.append(actions);

  if (entry.error) {
    const p = make("p", "form-error", entry.error);
    p.setAttribute("role", "alert");
    li.append(p);
  }

  if (focused) {
    const target = focused === "heading" ? h : li.querySelector(`[data-action="${focused}"]:not(:disabled)`) || h;
    target.focus();
  }
}

function renderTimeline(entry) {
  const o = entry.order;
  const ol = make("ol", "timeline");
  ol.setAttribute("aria-label", "Status timeline");
  let steps;
  if (o.status === "cancelled") {
    steps = ["placed"];
    if (entry.history.has("preparing")) steps.push("preparing");
    steps.push("cancelled");
  } else {
    steps = TIMELINE;
  }
  const current = steps.indexOf(o.status);
  steps.forEach((s, i) => {
    const phase = i < current ? "done" : i === current ? "current" : "todo";
    const step = make("li", "step " + phase);
    step.dataset.step = s;
    if (phase === "current") step.setAttribute("aria-current", "step");
    step.append(make("span", "step-dot"), make("span", "step-label", STATUS_LABEL[s]));
    if (phase !== "todo" && entry.history.get(s)) step.append(timeNode(entry.history.get(s)));
    ol.append(step);
  });
  return ol;
}

// ---- sharing an order: /#order=<id> opens the page tracking it ----

function orderFromHash() {
  const m = /^#order=([^&]*)/.exec(location.hash);
  return m ? decodeURIComponent(m[1]).trim().toLowerCase() : "";
}

/** trackFromHash tracks the order the page's link names, if any. */
export function trackFromHash() {
  const id = orderFromHash();
  if (!id) return;
  if (!ORDER_ID_RE.test(id)) {
    notice("hash", `The link names order "${id}", which is not an order id (24 characters 0–9 and a–f).`, "error");
    return;
  }
  clearNotice("hash");
  if (!state.orders.has(id)) trackOrder(id, null);
  orderElement(id)?.querySelector("h3")?.focus();
}

function orderLink(id) {
  return new URL("/#order=" + id, location.href).href;
}

async function copyOrderID(entry) {
  let ok = false;
  try {
    await navigator.clipboard.writeText(entry.id);
    ok = true;
  } catch {
    // No clipboard API here (an http page on another host): select the
    // id so that the user can copy it.
    const code = orderElement(entry.id)?.querySelector(".order-id");
    if (code) {
      const r = document.createRange();
      r.selectNodeContents(code);
      getSelection().removeAllRanges();
      getSelection().addRange(r);
    }
  }
  const b = orderElement(entry.id)?.querySelector('[data-action="copy"]');
  if (b) b.textContent = ok ? "Copied" : "Selected: press Ctrl+C";
  announce(ok ? `Order id ${entry.id} copied.` : "The order id is selected: copy it with Ctrl+C.");
}
