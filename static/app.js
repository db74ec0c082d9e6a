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
// (topic `customers/<name>`: the name's 50 most recent orders). Their order
// events carry the order's own topic, so one event updates the tracked
// card, the board and my orders alike. Room streams also carry `presence`
// events: the chat lists who is here. In dev mode (no token) the page says
// who it is with the `user` parameter (the name above).
//
// All user text goes into the DOM through textContent, never innerHTML.
import { connect } from "./changecast.js";

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
  const EVENT_NAMES = ["snapshot", "reset", "expired", "refused", "order", "message", "presence"];
  const ACTIVE = new Set(["placed", "preparing", "out_for_delivery"]);
  // A customer name usable in a topic (customers/<name>) and as a dev-mode
  // user: 1–128 bytes of UTF-8 without control characters (and without "/"
  // for the topic).
  const USER_RE = /^[^\x00-\x1f\x7f-\x9f]+$/;
  // What the event log says about an event the page did not apply.
  const NOTE_TEXT = {
    "duplicate event": "received twice: this should never happen",
    "not tracked": "not shown: this tab no longer tracks that order",
    stale: "already on the card (the answer to this tab's own change, or a newer event, came first)",
    "not shown": "not shown: it is for another room",
    "already shown": "already in the chat (the answer to Send came first)",
    "unreadable data": "not shown: its data is not JSON",
  };

  // Limits. MAX_ORDERS keeps the topic list of one connection short;
  // MAX_MESSAGES and MAX_LOG bound the DOM; MAX_SEEN bounds the duplicate check.
  const MAX_ORDERS = 10;
  const MAX_MESSAGES = 200;
  const HISTORY_LIMIT = 50;
  const MAX_LOG = 300;
  const MAX_SEEN = 5000;
  // The lists' bounds: what their snapshots hold (docs/api.md).
  const BOARD_LIMIT = 200;
  const MINE_LIMIT = 50;

  const KEY_NAME = "changecast.name";
  const KEY_ORDERS = "changecast.orders";
  const KEY_ROOM = "changecast.room";
  const KEY_TOKEN = "changecast.token";
  const KEY_LAST_ID = "changecast.lastEventId";
  const KEY_BOARD = "changecast.board";
  const KEY_MINE = "changecast.mine";

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
    sendReason: $("send-reason"),
    devBanner: $("dev-banner"),
    messageError: $("message-error"),
    eventLog: $("event-log"),
    announcer: $("announcer"),
    mineOn: $("mine-on"),
    mine: $("mine"),
    mineEmpty: $("mine-empty"),
    mineError: $("mine-error"),
    mineHint: $("mine-hint"),
    boardCard: $("board-card"),
    boardOn: $("board-on"),
    board: $("board"),
    boardEmpty: $("board-empty"),
    boardError: $("board-error"),
    presence: $("presence"),
    presenceCount: $("presence-count"),
    presenceEmpty: $("presence-empty"),
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
    feed: null, // the changecast.js feed
    roomRefused: null, // {topic, status, error} when the server refused the room
    sending: false, // a message is being posted
    events: 0,
    seen: new Set(), // "<event> <id> <topic>" of order and message events
    boardOn: load(localStorage, KEY_BOARD, "") === "1",
    // id → {order, busy, error}: every order the board heard of; delivered,
    // cancelled and deleted ones stay (not shown) so that an older copy
    // (a late REST answer) cannot bring them back.
    board: new Map(),
    mineOn: load(localStorage, KEY_MINE, "") === "1",
    mineFor: "", // the customer whose orders state.mine holds
    mine: new Map(), // id → order
    presence: new Map(), // user → since, for state.room
  };

  // ---- the one feed (changecast.js: one EventSource, resumes, retries) ----

  // state.feed is created in start().
  function topics() {
    const list = [...state.orderIDs.map((id) => "orders/" + id), "rooms/" + state.room];
    if (state.boardOn && state.staff) list.push("orders");
    if (state.mineOn && customerName()) list.push("customers/" + customerName());
    return list;
  }

  // validName reports whether s is a name the server takes as a user: 1–128
  // bytes of UTF-8 without control characters.
  function validName(s) {
    return USER_RE.test(s) && new TextEncoder().encode(s).length <= 128;
  }

  // customerName is the name whose orders "my orders" follows, or "".
  function customerName() {
    const n = myName();
    return validName(n) && !n.includes("/") ? n : "";
  }

  // feedURL names the stream's user in dev mode (no token): the chat's
  // presence list shows the name; with a token the server uses its sub.
  function feedURL() {
    const n = myName();
    return !state.token && validName(n) ? "/api/events?user=" + encodeURIComponent(n) : "/api/events";
  }

  // syncTopics moves the feed to the current topics (and user) from the
  // same position. A list or room added to a resumed stream gets no
  // snapshot: the callers read those over REST.
  function syncTopics() {
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

  // onStatus shows the feed's state; see changecast.js for the states.
  function onStatus(s) {
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

  function setConn(s, retryMs) {
    el.conn.dataset.state = s;
    let label = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", offline: "Offline", signin: "Waiting for sign-in", closed: "Closed" }[s] || s;
    if (s === "offline" && retryMs) label = `Offline, retrying in ${Math.max(1, Math.round(retryMs / 1000))} s`;
    el.connLabel.textContent = label;
    el.reconnect.hidden = s !== "offline" || !el.tokenPanel.hidden;
  }

  // ---- events ----

  // handleEvent takes one event from the feed: {type, id, topic, data}.
  function handleEvent({ type: name, id, topic, data }) {
    state.events++;
    el.eventCount.textContent = String(state.events);
    el.eventCountUnit.textContent = state.events === 1 ? "event" : "events";
    if (!data || typeof data !== "object") {
      logEvent(name, id, "", "", "unreadable data", "");
      return;
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

  // applyRefused shows a topic the server left out of the stream: the order's
  // card says so, or the chat cannot send; the rest of the feed goes on.
  function applyRefused(topic, data) {
    const status = Number(data.status) || 0;
    const error = typeof data.error === "string" ? data.error : "";
    if (topic.startsWith("orders/")) {
      const entry = state.orders.get(topic.slice(7));
      if (!entry) return;
      entry.refused = status;
      if (status === 404) entry.missing = true;
      renderOrder(entry);
      notice("refused " + topic, `Order ${entry.id}: ${status === 404 ? "not found" : "not yours to watch"}${error ? ` (${error})` : ""}. Other updates keep coming.`, "error");
    } else if (topic === "orders") {
      el.boardError.textContent = `The server does not show the board to this token (${status}${error ? ": " + error : ""}).`;
    } else if (topic.startsWith("customers/")) {
      el.mineError.textContent = `The server does not show these orders (${status}${error ? ": " + error : ""}).`;
    } else if (topic.startsWith("rooms/")) {
      state.roomRefused = { topic, status, error };
      renderSend();
      notice("refused " + topic, `Room ${topic.slice(6)}: ${status === 403 ? "your token does not open this room" : "refused"}${error ? ` (${error})` : ""}. Other updates keep coming.`, "error");
    }
  }

  // renderSend enables chat's Send unless the room is refused, and says why.
  function renderSend() {
    const r = state.roomRefused;
    const why = r ? `You cannot use room ${state.room}: ${r.status === 403 ? "your token does not open it" : r.error || "the server refused it"}.` : "";
    el.send.disabled = Boolean(r) || state.sending;
    el.messageText.disabled = Boolean(r);
    el.sendReason.textContent = why;
    el.sendReason.hidden = !r;
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

  function applySnapshot(data) {
    const topic = String(data.topic || "");
    if (topic === "orders") {
      if (!state.boardOn) return "not shown";
      state.board = new Map();
      for (const o of Array.isArray(data.orders) ? data.orders : []) {
        if (o && typeof o.id === "string") state.board.set(o.id, { order: o, busy: false, error: "" });
      }
      renderBoard();
      return "";
    }
    if (topic.startsWith("customers/")) {
      if (!state.mineOn || topic !== "customers/" + customerName()) return "not shown";
      state.mineFor = customerName();
      state.mine = new Map();
      for (const o of Array.isArray(data.orders) ? data.orders : []) {
        if (o && typeof o.id === "string") state.mine.set(o.id, o);
      }
      renderMine();
      return "";
    }
    if (topic.startsWith("orders/")) {
      const entry = state.orders.get(topic.slice(7));
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

  function setOrder(entry, o, replace) {
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

  // ---- live lists: the kitchen board and my orders ----

  // applyBoard keeps the board's copy of an order unless it has a newer one;
  // a delivered, cancelled or deleted order leaves the board.
  function applyBoard(o, op) {
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
    const done = [...state.board.keys()].filter((id) => !ACTIVE.has(state.board.get(id).order.status)).sort();
    for (const id of done.slice(0, state.board.size - 4 * BOARD_LIMIT)) state.board.delete(id);
  }

  // applyMine keeps my orders: the customer's own orders, newest first.
  function applyMine(o, op) {
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

  // loadBoard reads the active orders over REST, for a resumed stream (it
  // sends no snapshot); newer versions win, so events are never undone.
  async function loadBoard() {
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

  async function loadMine() {
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

  // setLists switches the lists on or off and follows the current name.
  function setLists() {
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

  async function advanceOnBoard(id, status) {
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
      entry.error = err.status === 412 ? "Someone changed this order first."
        : err.status === 409 ? `It cannot move to ${STATUS_LABEL[status] || status} now: ${err.message}.`
          : err.message;
    } finally {
      entry.busy = false;
      renderBoard();
    }
  }

  function onListAction(ev) {
    const button = ev.target.closest("button[data-action]");
    const row = button && button.closest("[data-order-id]");
    if (!row) return;
    const id = row.dataset.orderId;
    switch (button.dataset.action) {
      case "advance": {
        const entry = state.board.get(id);
        if (entry && NEXT_STATUS[entry.order.status]) advanceOnBoard(id, NEXT_STATUS[entry.order.status]);
        break;
      }
      case "cancel":
        advanceOnBoard(id, "cancelled");
        break;
      case "track": {
        const o = state.board.get(id)?.order || state.mine.get(id);
        trackOrder(id, o && Number.isFinite(o.version) ? o : null);
        orderElement(id)?.querySelector("h3")?.focus();
        break;
      }
    }
  }

  // ---- presence ----

  function presenceKey(data) {
    if (data.op === "sync") {
      const n = Array.isArray(data.users) ? data.users.length : 0;
      return `sync ${n} ${n === 1 ? "user" : "users"}`;
    }
    return `${data.op || ""} ${data.user || ""}`.trim();
  }

  // applyPresence keeps the chat's list of who is here: sync replaces it
  // (every connection starts with one), join and leave change it.
  function applyPresence(topic, data) {
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

  function newEntry(id) {
    // refused: the status the stream refused the order's topic with, or 0.
    return { id, order: null, history: new Map(), missing: false, deleted: false, busy: false, error: "", refused: 0 };
  }

  function trackOrder(id, order) {
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

  // ---- token ----

  // askForToken shows the token form; the feed retries slowly meanwhile
  // and at once when a token is given.
  function askForToken(reason) {
    setConn(state.token ? "offline" : "signin");
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
    // The token may change the name (my orders, presence) and the role
    // (the board is for staff): the feed reconnects with both.
    if (state.mineOn && customerName() !== state.mineFor) {
      state.mine = new Map();
      state.mineFor = customerName();
    }
    renderBoard();
    renderMine();
    renderPresence();
    state.feed.url = feedURL();
    state.feed.topics = topics();
    state.feed.setToken(t);
    for (const entry of state.orders.values()) if (!entry.order) refreshOrder(entry);
    if (state.feed.lastEventId) {
      if (state.boardOn && state.staff) loadBoard();
      if (state.mineOn) loadMine();
    }
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
    // The lists offer Track for orders not tracked yet.
    if (state.boardOn) renderBoard();
    if (state.mineOn) renderMine();
  }

  function renderOrder(entry, existing) {
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
      const items = (Array.isArray(o.items) ? o.items : []).map((i) => `${i.qty}× ${menuLabel(i.sku)}`).join(", ");
      const meta = make("p", "order-meta");
      meta.append(make("span", "customer", o.customer || ""), make("span", "sep", " · "), make("span", "", items), make("span", "sep", " · "), make("span", "version", "v" + o.version));
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
    const items = (Array.isArray(o.items) ? o.items : []).map((i) => `${i.qty}× ${menuLabel(i.sku)}`).join(", ");
    const meta = make("span", "row-meta", items + " · ");
    meta.append(timeNode(o.createdAt));
    main.append(meta);
    const actions = make("div", "row-actions");
    if (board && state.staff && NEXT_STATUS[o.status]) {
      const b = make("button", "btn btn-primary btn-small", NEXT_ACTION[o.status]);
      b.type = "button";
      b.dataset.action = "advance";
      b.disabled = entry.busy;
      b.setAttribute("aria-label", `${NEXT_ACTION[o.status]}: order ${shortID(o.id)}`);
      actions.append(b);
    }
    if (board && state.staff && CANCELLABLE.has(o.status)) {
      const b = make("button", "btn btn-danger btn-small", "Cancel");
      b.type = "button";
      b.dataset.action = "cancel";
      b.disabled = entry.busy;
      b.setAttribute("aria-label", `Cancel order ${shortID(o.id)}`);
      actions.append(b);
    }
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

  function renderBoard() {
    el.boardCard.hidden = !state.staff;
    el.boardOn.checked = state.boardOn;
    const ids = [...state.board.keys()].filter((id) => ACTIVE.has(state.board.get(id).order.status)).sort().reverse();
    renderList(el.board, state.boardOn ? ids.map((id) => listRow(state.board.get(id).order, true, state.board.get(id))) : []);
    el.boardEmpty.hidden = !state.boardOn || ids.length > 0;
    if (!state.boardOn) el.boardError.textContent = "";
  }

  function renderMine() {
    el.mineOn.checked = state.mineOn;
    const ids = [...state.mine.keys()].sort().reverse();
    renderList(el.mine, state.mineOn ? ids.map((id) => listRow(state.mine.get(id), false, null)) : []);
    el.mineEmpty.hidden = !state.mineOn || !state.mineFor || ids.length > 0;
    el.mineHint.textContent = state.mineOn && !customerName()
      ? "Enter your name above (without /) to see your orders."
      : "Your 50 most recent orders, for the name above; a new one shows up without reloading.";
    if (!state.mineOn) el.mineError.textContent = "";
  }

  function renderPresence() {
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
      make("span", "log-detail", (shown || detail) + (note ? ` — ${NOTE_TEXT[note] || note}` : "")),
      make("code", "log-id", id ? "id " + id : "no id"),
    );
    li.querySelector(".log-id").title = id ? "The event's id: a stream resumes after it (Last-Event-ID)" : "Not part of the log: it has no id";
    el.eventLog.prepend(li);
    while (el.eventLog.childElementCount > MAX_LOG) el.eventLog.lastElementChild.remove();
  }

  // notice shows text under key: a notice with the same key is replaced,
  // never stacked.
  function notice(key, text, kind) {
    let div = noticeElement(key);
    if (!div) {
      div = make("div");
      div.dataset.key = key;
      const b = make("button", "btn btn-ghost btn-small", "Dismiss");
      b.type = "button";
      b.addEventListener("click", () => div.remove());
      div.append(make("p"), b);
      el.notices.prepend(div);
    }
    div.className = "notice notice-" + (kind || "info");
    div.dataset.kind = kind || "info";
    div.setAttribute("role", kind === "error" ? "alert" : "status");
    div.firstChild.textContent = text;
    div.lastChild.setAttribute("aria-label", "Dismiss notice: " + text.slice(0, 60));
    while (el.notices.childElementCount > 5) el.notices.lastElementChild.remove();
  }

  function noticeElement(key) {
    for (const n of el.notices.children) if (n.dataset.key === key) return n;
    return null;
  }

  function noticeKeys() {
    return [...el.notices.children].map((n) => n.dataset.key);
  }

  function clearNotice(key) {
    noticeElement(key)?.remove();
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

  // ---- sharing an order: /#order=<id> opens the page tracking it ----

  function orderFromHash() {
    const m = /^#order=([^&]*)/.exec(location.hash);
    return m ? decodeURIComponent(m[1]).trim().toLowerCase() : "";
  }

  function trackFromHash() {
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

  // ---- dev mode: a request without any credentials is answered ----

  async function checkDevMode() {
    try {
      const res = await fetch(`/api/rooms/${encodeURIComponent(state.room)}/messages?limit=1`, { method: "HEAD", credentials: "omit", cache: "no-store" });
      el.devBanner.hidden = !res.ok;
    } catch {
      // Unknown: leave the banner as it is.
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
    for (const name of EVENT_NAMES) state.feed.on(name, handleEvent);
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
})();
