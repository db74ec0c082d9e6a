// token.js — signing in with an access token (kept for this tab only),
// and what the page reads of it: the subject as the name, the role.
import { el } from "./dom.js";
import { feedURL, setConn, topics } from "./feed.js";
import { loadBoard, loadMine, renderBoard, renderMine } from "./lists.js";
import { refreshOrder, renderOrder } from "./orders.js";
import { renderPresence } from "./presence.js";
import { customerName, state } from "./state.js";
import { KEY_TOKEN, save } from "./storage.js";

/**
 * askForToken shows the token form; the feed retries slowly meanwhile
 * and at once when a token is given.
 */
export function askForToken(reason) {
  setConn(state.token ? "offline" : "signin");
  el.tokenReason.textContent = reason;
  el.tokenPanel.hidden = false;
  el.reconnect.hidden = true;
  el.token.focus();
}

/** onToken submits the token form. */
export function onToken(ev) {
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

/** setToken keeps token t ("" for none) for this tab and shows its name. */
export function setToken(t) {
  state.token = t;
  save(sessionStorage, KEY_TOKEN, t);
  applyTokenName();
}

/**
 * applyTokenName shows the token's subject as the name: the server uses it
 * as the customer and the author, whatever the page sends. It also notes
 * the role: only staff move orders along (without a token, anyone may).
 */
export function applyTokenName() {
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

/**
 * tokenClaims reads a JWT's claims for display only; the server checks
 * the signature.
 */
export function tokenClaims(token) {
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
