// changecast demo: an order tracker and a chat room fed by one EventSource.
//
// The page keeps exactly one EventSource per tab, on /api/events with one
// `topic` parameter per tracked order and one for the chat room. When the set
// of topics changes it opens a new EventSource that resumes from the last
// event id seen (`lastEventId`), then closes the old one. The browser
// reconnects by itself after a network error; after a non-200 answer the
// EventSource is closed for good, and the page opens a new one with
// exponential backoff.
//
// All user text goes into the DOM through textContent, never innerHTML.
"use strict";

(() => {
  const STATUS_FLOW = ["placed", "preparing", "out_for_delivery", "delivered"];
  const STATUS_LABEL = {
    placed: "Placed",
    preparing: "Preparing",
    out_for_delivery: "Out for delivery",
    delivered: "Delivered",
    cancelled: "Cancelled",
  };
  const NEXT_STATUS = { placed: "preparing", preparing: "out_for_delivery", out_for_delivery: "delivered" };
  const NEXT_ACTION = { placed: "Start preparing", preparing: "Send out", out_for_delivery: "Mark delivered" };
  const CANCELLABLE = new Set(["placed", "preparing"]);
  const MENU = [
    { sku: "margherita", label: "Margherita pizza", qty: 1 },
    { sku: "pad-thai", label: "Pad thai", qty: 0 },
    { sku: "green-salad", label: "Green salad", qty: 0 },
    { sku: "lemonade", label: "Lemonade", qty: 0 },
  ];
  const ROOM_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/;
  const ORDER_ID_RE = /^[0-9a-f]{24}$/;
  const EVENT_NAMES = ["snapshot", "reset", "expired", "order", "message"];

  // Limits. MAX_ORDERS keeps the topic list of one connection short;
  // MAX_MESSAGES and MAX_LOG bound the DOM; MAX_SEEN bounds the duplicate check.
  const MAX_ORDERS = 10;
  const MAX_MESSAGES = 200;
  const HISTORY_LIMIT = 50;
  const MAX_LOG = 300;
  const MAX_SEEN = 5000;
  // Backoff for recreating a closed EventSource: 0.5 s doubling to 10 s, jittered.
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_CAP_MS = 10000;

  const KEY_NAME = "changecast.name";
  const KEY_ORDERS = "changecast.orders";
  const KEY_ROOM = "changecast.room";
  const KEY_TOKEN = "changecast.token";

  const $ = (id) => document.getElementById(id);
  const el = {
    conn: $("conn"),
    connLabel: $("conn-label"),
    eventCount: $("event-count"),
    eventCountUnit: $("event-count-unit"),
    reconnect: $("reconnect"),
    notices: $("notices"),
    tokenPanel: $("token-panel"),
    tokenReason: $("token-reason"),
    tokenForm: $("token-form"),
    token: $("token"),
    tokenForget: $("token-forget"),
    name: $("name"),
    nameHint: $("name-hint"),
    menu: $("menu"),
    orderForm: $("order-form"),
    placeOrder: $("place-order"),
    orderFormError: $("order-form-error"),
    trackForm: $("track-form"),
    trackID: $("track-id"),
    trackError: $("track-error"),
    orders: $("orders"),
    ordersEmpty: $("orders-empty"),
    roomForm: $("room-form"),
    room: $("room"),
    roomLabel: $("room-label"),
    roomError: $("room-error"),
    messages: $("messages"),
    messagesEmpty: $("messages-empty"),
    messageForm: $("message-form"),
    messageText: $("message-text"),
    send: $("send"),
    messageError: $("message-error"),
    eventLog: $("event-log"),
    announcer: $("announcer"),
  };

  // ---- storage (never throws: private modes can refuse it) ----

  function load(storage, key, fallback) {
    try {
      const v = storage.getItem(key);
      return v === null ? fallback : v;
    } catch {
      return fallback;
    }
  }

  function save(storage, key, value) {
    try {
      if (value === null || value === "") storage.removeItem(key);
      else storage.setItem(key, value);
    } catch {
      // Storage is optional.
    }
  }

  function loadOrderIDs() {
    try {
      const ids = JSON.parse(load(localStorage, KEY_ORDERS, "[]"));
      return Array.isArray(ids) ? ids.filter((id) => typeof id === "string" && ORDER_ID_RE.test(id)).slice(0, MAX_ORDERS) : [];
    } catch {
      return [];
    }
  }

  // ---- state ----

  const storedRoom = load(localStorage, KEY_ROOM, "lobby");
  const state = {
    token: load(sessionStorage, KEY_TOKEN, ""),
    staff: true, // may move orders along: no token (dev mode) or a staff token
    // id → {id, order, history: Map(status → time), missing, deleted, busy, error}
    orders: new Map(),
    orderIDs: [], // newest first
    room: ROOM_RE.test(storedRoom) ? storedRoom : "lobby",
    messages: new Map(), // id → message, for state.room
    lastID: "", // id of the last SSE event received
    events: 0,
    seen: new Set(), // "<event> <id> <topic>" of order and message events
  };

  // ---- the one EventSource ----

  const stream = {
    es: null,
    topicsKey: "",
    retryTimer: 0,
    attempt: 0,
    // Why the page stopped connecting: "token" (401 or `expired`: until a
    // token is given), "refused" (403, 404, 400: until the topics change),
    // or "" (it is not stopped).
    blocked: "",
    probe: null, // AbortController of a running diagnosis
  };

  function topics() {
    return [...state.orderIDs.map((id) => "orders/" + id), "rooms/" + state.room];
  }

  function streamURL(list) {
    const q = new URLSearchParams();
    for (const t of list) q.append("topic", t);
    if (state.lastID) q.set("lastEventId", state.lastID);
    if (state.token) q.set("access_token", state.token);
    return "/api/events?" + q.toString();
  }

  // connect opens a new EventSource for the current topics, resuming from the
  // last id seen, and only then closes the previous one.
  function connect() {
    clearTimeout(stream.retryTimer);
    stream.retryTimer = 0;
    if (stream.probe) stream.probe.abort();
    stream.probe = null;
    stream.blocked = "";
    const list = topics();
    const old = stream.es;
    const es = new EventSource(streamURL(list));
    stream.es = es;
    stream.topicsKey = list.join(" ");
    for (const name of EVENT_NAMES) {
      es.addEventListener(name, (e) => {
        if (stream.es === es) handleEvent(name, e);
      });
    }
    es.addEventListener("open", () => {
      if (stream.es !== es) return;
      stream.attempt = 0;
      setConn("live");
    });
    es.addEventListener("error", () => {
      if (stream.es !== es) return;
      if (es.readyState === EventSource.CONNECTING) {
        setConn("reconnecting");
        return;
      }
      // CLOSED: the server answered with something other than a 200 event
      // stream (a router's 503 during a deploy, a 401...). The browser will
      // not retry; find out why, then retry with backoff or ask for a token.
      es.close();
      stream.es = null;
      diagnose(list);
    });
    if (old) old.close();
    if (!old || old.readyState !== EventSource.OPEN) setConn("connecting");
  }

  // syncTopics reconnects when the set of topics changed.
  function syncTopics() {
    if (stream.blocked === "token") return;
    const key = topics().join(" ");
    if (!stream.es || key !== stream.topicsKey) connect();
  }

  function stop(reason) {
    clearTimeout(stream.retryTimer);
    stream.retryTimer = 0;
    if (stream.probe) stream.probe.abort();
    stream.probe = null;
    if (stream.es) stream.es.close();
    stream.es = null;
    stream.blocked = reason;
  }

  // diagnose asks the same URL with fetch to learn the status EventSource
  // saw, then decides: token needed, forbidden, or retry later.
  async function diagnose(list) {
    setConn("offline");
    const ctrl = new AbortController();
    stream.probe = ctrl;
    let status = 0;
    let message = "";
    let retryAfterMs = 0;
    try {
      const res = await fetch(streamURL(list), { headers: authHeaders(), signal: ctrl.signal, cache: "no-store" });
      status = res.status;
      retryAfterMs = 1000 * (Number(res.headers.get("Retry-After")) || 0);
      if (!res.ok) message = await errorText(res);
    } catch {
      status = 0; // network error or aborted
    } finally {
      ctrl.abort(); // do not keep the probe's stream open
    }
    if (stream.probe !== ctrl) return; // connect() or stop() took over
    stream.probe = null;
    if (status === 401) {
      askForToken(state.token ? "The server did not accept this token." : "This server needs an access token.");
      return;
    }
    if (status === 403 || status === 400 || status === 404) {
      stop("refused");
      setConn("offline");
      notice(`The server refused the live feed (${status}${message ? ": " + message : ""}). Change the room or stop tracking an order to try again.`, "error");
      // Show which tracked order is not (or no longer) readable.
      for (const entry of state.orders.values()) refreshOrder(entry);
      return;
    }
    scheduleRetry(Math.min(retryAfterMs, BACKOFF_CAP_MS));
  }

  // scheduleRetry recreates the EventSource after an exponential, jittered
  // delay (at least minMs, as a Retry-After asked).
  function scheduleRetry(minMs) {
    clearTimeout(stream.retryTimer);
    stream.attempt++;
    const cap = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (stream.attempt - 1));
    const delay = Math.max(minMs || 0, Math.round(cap / 2 + Math.random() * (cap / 2)));
    setConn("offline", delay);
    stream.retryTimer = setTimeout(() => {
      stream.retryTimer = 0;
      connect();
    }, delay);
  }

  function setConn(s, retryMs) {
    el.conn.dataset.state = s;
    let label = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", offline: "Offline" }[s];
    if (s === "offline" && retryMs) label = `Offline, retrying in ${Math.max(1, Math.round(retryMs / 1000))} s`;
    el.connLabel.textContent = label;
    el.reconnect.hidden = s !== "offline" || !el.tokenPanel.hidden;
  }

  // ---- events ----

  let lastResetNotice = 0;

  function handleEvent(name, e) {
    state.events++;
    el.eventCount.textContent = String(state.events);
    el.eventCountUnit.textContent = state.events === 1 ? "event" : "events";
    if (e.lastEventId) state.lastID = e.lastEventId;
    let data;
    try {
      data = JSON.parse(e.data);
    } catch {
      logEvent(name, e.lastEventId, "", "", "unreadable data", "");
      return;
    }
    if (!data || typeof data !== "object") data = {};
    const topic = typeof data.topic === "string" ? data.topic : "";
    switch (name) {
      case "snapshot":
        logEvent(name, e.lastEventId, topic, snapshotKey(data), applySnapshot(data), "");
        break;
      case "reset":
        logEvent(name, e.lastEventId, topic, String(data.reason || ""), "", "");
        // One notice for the resets of all topics of a connection.
        if (Date.now() - lastResetNotice > 2000) notice(resetText(data), "warn");
        lastResetNotice = Date.now();
        break;
      case "expired":
        logEvent(name, e.lastEventId, topic, "", "", "");
        askForToken("Your access token has expired. Enter a new one to continue.");
        break;
      case "order": {
        const dup = checkDuplicate(name, e.lastEventId, topic);
        const o = data.order || {};
        logEvent(name, e.lastEventId, topic, "v" + (o.version ?? "?") + " " + (o.status || data.op || ""), dup || applyOrder(o, data.op), "");
        break;
      }
      case "message": {
        const dup = checkDuplicate(name, e.lastEventId, topic);
        const m = data.message || {};
        logEvent(name, e.lastEventId, topic, String(m.id || ""), dup || applyMessage(m), `${m.author || "?"}: ${m.text || ""}`);
        break;
      }
    }
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
    if (Array.isArray(data.messages)) return data.messages.length + (data.messages.length === 1 ? " message" : " messages");
    if (data.order) return "v" + data.order.version + " " + data.order.status;
    return "not found";
  }

  function applySnapshot(data) {
    const topic = String(data.topic || "");
    if (topic.startsWith("orders/")) {
      const entry = state.orders.get(topic.slice(7));
      if (!entry) return "not tracked";
      if (data.order && typeof data.order === "object") {
        setOrder(entry, data.order, true);
      } else {
        entry.order = null;
        entry.missing = true;
      }
      renderOrder(entry);
      return "";
    }
    if (topic === "rooms/" + state.room) {
      state.messages = new Map();
      for (const m of Array.isArray(data.messages) ? data.messages : []) {
        if (m && typeof m.id === "string") state.messages.set(m.id, m);
      }
      renderMessages();
      return "";
    }
    return "not shown";
  }

  // applyOrder shows an order event unless what is shown is as new or newer.
  function applyOrder(o, op) {
    const entry = state.orders.get(o.id);
    if (!entry) return "not tracked";
    if (op === "delete") {
      entry.deleted = true;
      renderOrder(entry);
      return "";
    }
    if (entry.order && !(o.version > entry.order.version)) return "ignored: v" + entry.order.version + " shown";
    setOrder(entry, o, false);
    renderOrder(entry);
    announce(`Order ${shortID(o.id)} is now ${STATUS_LABEL[o.status] || o.status}.`);
    return "";
  }

  function setOrder(entry, o, replace) {
    const before = entry.order;
    entry.order = o;
    entry.missing = false;
    entry.deleted = false;
    if (replace || !before) {
      // A snapshot tells only the current status: keep the times we saw for
      // earlier steps, drop any for later ones.
      const idx = STATUS_FLOW.indexOf(o.status);
      for (const s of [...entry.history.keys()]) {
        const i = STATUS_FLOW.indexOf(s);
        if (o.status !== "cancelled" && (i > idx || s === "cancelled")) entry.history.delete(s);
      }
      if (!entry.history.has("placed") && o.createdAt) entry.history.set("placed", o.createdAt);
    }
    if (!entry.history.has(o.status)) entry.history.set(o.status, o.updatedAt || o.createdAt || "");
  }

  function applyMessage(m) {
    if (typeof m.id !== "string" || m.room !== state.room) return "not shown";
    if (state.messages.has(m.id)) return "already shown";
    state.messages.set(m.id, m);
    insertMessage(m);
    return "";
  }

  // ---- REST ----

  function authHeaders() {
    return state.token ? { Authorization: "Bearer " + state.token } : {};
  }

  class APIError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function errorText(res) {
    try {
      const body = await res.json();
      if (body && typeof body.error === "string") return body.error;
    } catch {
      // not JSON
    }
    return res.statusText || "request failed";
  }

  async function api(method, path, body, extraHeaders) {
    const headers = { Accept: "application/json", ...authHeaders(), ...(extraHeaders || {}) };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch {
      throw new APIError(0, "The server cannot be reached. Try again in a moment.");
    }
    if (!res.ok) {
      const msg = await errorText(res);
      if (res.status === 401) askForToken(state.token ? "The server did not accept this token." : "This server needs an access token.");
      throw new APIError(res.status, msg);
    }
    try {
      return await res.json();
    } catch {
      throw new APIError(res.status, "The server sent an unreadable answer.");
    }
  }

  // ---- orders ----

  function myName() {
    return el.name.value.trim();
  }

  async function placeOrder(ev) {
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

  function trackOrder(id, order) {
    let entry = state.orders.get(id);
    if (!entry) {
      entry = { id, order: null, history: new Map(), missing: false, deleted: false, busy: false, error: "" };
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

  function saveOrderIDs() {
    save(localStorage, KEY_ORDERS, JSON.stringify(state.orderIDs));
  }

  // refreshOrder reads an order over REST; the newer version wins, so it
  // cannot undo an event that arrived meanwhile.
  async function refreshOrder(entry) {
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
      entry.error = err.status === 412 ? "Someone changed this order first; showing the latest."
        : err.status === 409 ? `It cannot move to ${STATUS_LABEL[status] || status} now: ${err.message}.`
          : err.message;
      if (err.status === 412 || err.status === 409) refreshOrder(entry);
    } finally {
      entry.busy = false;
      if (state.orders.get(entry.id) === entry) renderOrder(entry);
    }
  }

  function onOrderAction(ev) {
    const button = ev.target.closest("button[data-action]");
    if (!button) return;
    const li = button.closest("[data-order-id]");
    const entry = li && state.orders.get(li.dataset.orderId);
    if (!entry) return;
    switch (button.dataset.action) {
      case "advance":
        if (entry.order && NEXT_STATUS[entry.order.status]) changeStatus(entry, NEXT_STATUS[entry.order.status]);
        break;
      case "cancel":
        changeStatus(entry, "cancelled");
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

  function onTrack(ev) {
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

  // ---- chat ----

  function onJoin(ev) {
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
    save(localStorage, KEY_ROOM, room);
    el.roomLabel.textContent = room;
    renderMessages();
    const resuming = state.lastID !== "";
    syncTopics();
    // A resumed stream sends only what comes after the last id, so read the
    // room's history over REST; message ids make the merge exact.
    if (resuming) loadHistory(room);
    announce(`Joined room ${room}.`);
  }

  async function loadHistory(room) {
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

  async function postMessage(ev) {
    ev.preventDefault();
    el.messageError.textContent = "";
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
    el.send.disabled = true;
    try {
      const m = await api("POST", `/api/rooms/${encodeURIComponent(room)}/messages`, body);
      if (el.messageText.value === text) el.messageText.value = "";
      if (room === state.room) applyMessage(m);
    } catch (err) {
      el.messageError.textContent = err.message;
    } finally {
      el.send.disabled = false;
      el.messageText.focus();
    }
  }

  // ---- token ----

  function askForToken(reason) {
    stop("token");
    setConn("offline");
    el.tokenReason.textContent = reason;
    el.tokenPanel.hidden = false;
    el.reconnect.hidden = true;
    el.token.focus();
  }

  function onToken(ev) {
    ev.preventDefault();
    const t = el.token.value.trim();
    if (!t) {
      el.token.focus();
      return;
    }
    setToken(t);
    el.token.value = "";
    el.tokenPanel.hidden = true;
    for (const entry of state.orders.values()) renderOrder(entry);
    connect();
    for (const entry of state.orders.values()) if (!entry.order) refreshOrder(entry);
  }

  function setToken(t) {
    state.token = t;
    save(sessionStorage, KEY_TOKEN, t);
    applyTokenName();
  }

  // applyTokenName shows the token's subject as the name: the server uses it
  // as the customer and the author, whatever the page sends. It also notes
  // the role: only staff move orders along (without a token, anyone may).
  function applyTokenName() {
    const claims = tokenClaims(state.token);
    const sub = typeof claims.sub === "string" ? claims.sub : "";
    state.staff = !state.token || claims.role === "staff";
    el.name.readOnly = Boolean(sub);
    if (sub) {
      el.name.value = sub;
      el.nameHint.textContent = "Signed in with a token; the server uses its subject as your name.";
    } else {
      el.nameHint.textContent = "Used as the customer on new orders and as your name in chat.";
    }
  }

  // tokenClaims reads a JWT's claims for display only; the server checks
  // the signature.
  function tokenClaims(token) {
    const part = token.split(".")[1];
    if (!part) return {};
    try {
      const json = atob(part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "="));
      const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(json, (c) => c.charCodeAt(0))));
      return claims && typeof claims === "object" ? claims : {};
    } catch {
      return {};
    }
  }

  // ---- rendering ----

  function make(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function shortID(id) {
    return "…" + String(id).slice(-6);
  }

  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

  function timeNode(iso) {
    const d = new Date(iso);
    const t = make("time");
    if (!iso || Number.isNaN(d.getTime())) return t;
    t.dateTime = d.toISOString();
    t.title = dateFormat.format(d);
    t.textContent = timeFormat.format(d);
    return t;
  }

  function orderElement(id) {
    for (const li of el.orders.children) if (li.dataset.orderId === id) return li;
    return null;
  }

  function renderOrderList() {
    // Put the cards in state.orderIDs order, creating missing ones.
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
  }

  function renderOrder(entry, existing) {
    const li = existing || orderElement(entry.id);
    if (!li) return;
    // Remember which control had focus, to give it back after the rebuild.
    const focused = li.contains(document.activeElement) ? document.activeElement.dataset.action || "heading" : "";
    const o = entry.order;
    const status = entry.deleted ? "deleted" : entry.missing ? "missing" : o ? o.status : "loading";
    li.dataset.status = status;
    li.dataset.version = o ? String(o.version) : "0";
    li.replaceChildren();

    const head = make("div", "order-head");
    const h = make("h3", "order-title");
    h.tabIndex = -1;
    h.append("Order ", make("code", "", shortID(entry.id)));
    h.title = entry.id;
    const badge = make("span", "badge", STATUS_LABEL[status] || { deleted: "Deleted", missing: "Not found", loading: "Loading…" }[status]);
    badge.dataset.status = status;
    head.append(h, badge);
    li.append(head);

    if (o) {
      const items = (Array.isArray(o.items) ? o.items : []).map((i) => `${i.qty}× ${menuLabel(i.sku)}`).join(", ");
      const meta = make("p", "order-meta");
      meta.append(make("span", "customer", o.customer || ""), make("span", "sep", " · "), make("span", "", items), make("span", "sep", " · "), make("span", "version", "v" + o.version));
      li.append(meta, renderTimeline(entry));
    } else if (entry.missing) {
      li.append(make("p", "muted", "No order with this id."));
    } else if (entry.deleted) {
      li.append(make("p", "muted", "This order was deleted."));
    }

    const actions = make("div", "order-actions");
    if (o && !entry.deleted) {
      const next = state.staff && NEXT_STATUS[o.status];
      if (next) {
        const b = make("button", "btn btn-primary btn-small", NEXT_ACTION[o.status]);
        b.type = "button";
        b.dataset.action = "advance";
        b.dataset.next = next;
        b.disabled = entry.busy;
        b.setAttribute("aria-label", `${NEXT_ACTION[o.status]}: order ${shortID(entry.id)}`);
        actions.append(b);
      }
      if (state.staff ? CANCELLABLE.has(o.status) : o.status === "placed") {
        const b = make("button", "btn btn-danger btn-small", "Cancel");
        b.type = "button";
        b.dataset.action = "cancel";
        b.disabled = entry.busy;
        b.setAttribute("aria-label", `Cancel order ${shortID(entry.id)}`);
        actions.append(b);
      }
    }
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
      steps = STATUS_FLOW;
    }
    const current = steps.indexOf(o.status);
    steps.forEach((s, i) => {
      const state = i < current ? "done" : i === current ? "current" : "todo";
      const step = make("li", "step " + state);
      step.dataset.step = s;
      if (state === "current") step.setAttribute("aria-current", "step");
      step.append(make("span", "step-dot"), make("span", "step-label", STATUS_LABEL[s]));
      if (state !== "todo" && entry.history.get(s)) step.append(timeNode(entry.history.get(s)));
      ol.append(step);
    });
    return ol;
  }

  function menuLabel(sku) {
    const m = MENU.find((x) => x.sku === sku);
    return m ? m.label : sku;
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

  function renderMessages() {
    const ids = [...state.messages.keys()].sort();
    el.messages.replaceChildren(...ids.map((id) => messageElement(state.messages.get(id))));
    trimMessages();
    el.messagesEmpty.hidden = state.messages.size > 0;
    el.messages.setAttribute("aria-label", `Messages in room ${state.room}`);
    scrollToBottom();
  }

  // logEvent adds an entry to the event log. detail identifies the event
  // (order version and status, message id) in data-detail; shown, when
  // set, is displayed in its place.
  function logEvent(name, id, topic, detail, note, shown) {
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
      make("span", "log-detail", (shown || detail) + (note ? ` (${note})` : "")),
    );
    if (id) li.title = "id " + id;
    el.eventLog.prepend(li);
    while (el.eventLog.childElementCount > MAX_LOG) el.eventLog.lastElementChild.remove();
  }

  let noticeCount = 0;
  function notice(text, kind) {
    const div = make("div", "notice notice-" + (kind || "info"));
    div.dataset.kind = kind || "info";
    div.setAttribute("role", kind === "error" ? "alert" : "status");
    const p = make("p", "", text);
    const b = make("button", "btn btn-ghost btn-small", "Dismiss");
    b.type = "button";
    b.setAttribute("aria-label", "Dismiss notice");
    b.addEventListener("click", () => div.remove());
    div.append(p, b);
    div.id = "notice-" + ++noticeCount;
    el.notices.prepend(div);
    while (el.notices.childElementCount > 3) el.notices.lastElementChild.remove();
  }

  function announce(text) {
    el.announcer.textContent = "";
    // A new text node after clearing makes screen readers speak it again.
    setTimeout(() => {
      el.announcer.textContent = text;
    }, 50);
  }

  function renderMenu() {
    for (const m of MENU) {
      const row = make("div", "menu-item");
      const label = make("label", "", m.label);
      label.htmlFor = "qty-" + m.sku;
      const input = make("input");
      input.type = "number";
      input.id = "qty-" + m.sku;
      input.name = m.sku;
      input.min = "0";
      input.max = "20";
      input.step = "1";
      input.value = String(m.qty);
      input.inputMode = "numeric";
      row.append(label, input);
      el.menu.append(row);
    }
  }

  // ---- start ----

  function start() {
    renderMenu();
    el.name.value = load(localStorage, KEY_NAME, "");
    applyTokenName();
    el.room.value = state.room;
    el.roomLabel.textContent = state.room;
    for (const id of loadOrderIDs()) {
      state.orders.set(id, { id, order: null, history: new Map(), missing: false, deleted: false, busy: false, error: "" });
      state.orderIDs.push(id);
    }
    renderOrderList();
    renderMessages();

    el.name.addEventListener("change", () => {
      if (!el.name.readOnly) save(localStorage, KEY_NAME, myName());
    });
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
    el.reconnect.addEventListener("click", () => {
      stream.attempt = 0;
      connect();
    });
    window.addEventListener("online", () => {
      if (!stream.es && !stream.blocked) connect();
    });

    connect();
  }

  start();
})();
