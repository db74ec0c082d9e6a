// storage.js — what the page keeps across reloads. Reading and writing
// never throw: private modes can refuse storage, and the page works
// without it.

export const KEY_NAME = "changecast.name";
export const KEY_ORDERS = "changecast.orders";
export const KEY_ROOM = "changecast.room";
export const KEY_TOKEN = "changecast.token";
export const KEY_LAST_ID = "changecast.lastEventId";
export const KEY_BOARD = "changecast.board";
export const KEY_MINE = "changecast.mine";

/** load returns storage's value for key, or fallback. */
export function load(storage, key, fallback) {
  try {
    const v = storage.getItem(key);
    return v === null ? fallback : v;
  } catch {
    return fallback;
  }
}

/** save stores value under key; null or "" removes it. */
export function save(storage, key, value) {
  try {
    if (value === null || value === "") storage.removeItem(key);
    else storage.setItem(key, value);
  } catch {
    // Storage is optional.
  }
}
