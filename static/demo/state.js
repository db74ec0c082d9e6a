// state.js — the page's state, shared by the feature modules, and what
// the page checks of names and ids before the server does.
import { el } from "./dom.js";
import { KEY_BOARD, KEY_MINE, KEY_ROOM, KEY_TOKEN, load } from "./storage.js";

export const ROOM_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/;
export const ORDER_ID_RE = /^[0-9a-f]{24}$/;
// A customer name usable in a topic (customers/<name>) and as a dev-mode
// user: 1–128 bytes of UTF-8 without control characters (and without "/"
// for the topic).
const USER_RE = /^[^\x00-\x1f\x7f-\x9f]+$/;

// Limits. MAX_ORDERS keeps the topic list of one connection short;
// MAX_MESSAGES and MAX_LOG bound the DOM; MAX_SEEN bounds the duplicate check.
export const MAX_ORDERS = 10;
export const MAX_MESSAGES = 200;
export const HISTORY_LIMIT = 50;
export const MAX_LOG = 300;
export const MAX_SEEN = 5000;
// The lists' bounds: what their snapshots hold (docs/api.md).
export const BOARD_LIMIT = 200;
export const MINE_LIMIT = 50;

const storedRoom = load(localStorage, KEY_ROOM, "lobby");

export const state = {
  token: load(sessionStorage, KEY_TOKEN, ""),
  staff: true, // may move orders along: no token (dev mode) or a staff token
  // id → {id, order, history: Map(status → time), missing, deleted, busy, error, refused}
  orders: new Map(),
  orderIDs: [], // newest first
  room: ROOM_RE.test(storedRoom) ? storedRoom : "lobby",
  messages: new Map(), // id → message, for state.room
  feed: null, // the changecast.js feed, made by main.js
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

/** myName is the name typed (or the token's subject). */
export function myName() {
  return el.name.value.trim();
}

/**
 * validName reports whether s is a name the server takes as a user: 1–128
 * bytes of UTF-8 without control characters.
 */
export function validName(s) {
  return USER_RE.test(s) && new TextEncoder().encode(s).length <= 128;
}

/** customerName is the name whose orders "my orders" follows, or "". */
export function customerName() {
  const n = myName();
  return validName(n) && !n.includes("/") ? n : "";
}
