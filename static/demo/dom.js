// dom.js — the page's elements and small helpers to build and announce.
// All user text goes into the DOM through textContent, never innerHTML.

export const $ = (id) => document.getElementById(id);

export const el = {
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

/** make returns a new element with a class and text, each optional. */
export function make(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** shortID is the end of an id, enough to tell orders apart on screen. */
export function shortID(id) {
  return "…" + String(id).slice(-6);
}

export const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
export const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

/** timeNode is a <time> showing iso's time of day, with the date as its title. */
export function timeNode(iso) {
  const d = new Date(iso);
  const t = make("time");
  if (!iso || Number.isNaN(d.getTime())) return t;
  t.dateTime = d.toISOString();
  t.title = dateFormat.format(d);
  t.textContent = timeFormat.format(d);
  return t;
}

/** announce has screen readers speak text. */
export function announce(text) {
  el.announcer.textContent = "";
  // A new text node after clearing makes screen readers speak it again.
  setTimeout(() => {
    el.announcer.textContent = text;
  }, 50);
}
