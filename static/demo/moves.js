// moves.js — order statuses as the page shows them, and the moves it
// offers. The moves are the order's `allowed`: the server's status
// machine, sent with every order (answers, events, snapshots). The page
// keeps no copy of it.
import { make, shortID } from "./dom.js";

export const STATUS_LABEL = {
  placed: "Placed",
  preparing: "Preparing",
  out_for_delivery: "Out for delivery",
  delivered: "Delivered",
  cancelled: "Cancelled",
};

// The steps a timeline shows for an order on its way to delivery, in
// the order it passes them (a cancelled order shows the steps it had).
export const TIMELINE = ["placed", "preparing", "out_for_delivery", "delivered"];

// A move's button label, by the status it moves to.
const MOVE_LABEL = { preparing: "Start preparing", out_for_delivery: "Send out", delivered: "Mark delivered" };

/**
 * moves returns the statuses the page offers to move order o to: for
 * staff (and dev mode), its allowed moves; for a customer, only
 * cancelling a placed order, the one move the server lets a customer
 * make (docs/api.md).
 */
export function moves(o, staff) {
  const allowed = Array.isArray(o.allowed) ? o.allowed.filter((s) => typeof s === "string") : [];
  if (staff) return allowed;
  return o.status === "placed" && allowed.includes("cancelled") ? ["cancelled"] : [];
}

/**
 * moveButtons returns a button per move of o: data-action "cancel" for
 * cancelled, else "advance"; data-next is the status it moves to.
 */
export function moveButtons(o, staff, busy) {
  const name = shortID(o.id);
  return moves(o, staff).map((s) => {
    const cancel = s === "cancelled";
    const label = cancel ? "Cancel" : MOVE_LABEL[s] || `Move to ${STATUS_LABEL[s] || s}`;
    const b = make("button", cancel ? "btn btn-danger btn-small" : "btn btn-primary btn-small", label);
    b.type = "button";
    b.dataset.action = cancel ? "cancel" : "advance";
    b.dataset.next = s;
    b.disabled = busy;
    b.setAttribute("aria-label", cancel ? `Cancel order ${name}` : `${label}: order ${name}`);
    return b;
  });
}

/** moveError is what a card says when a move to status failed with err. */
export function moveError(err, status, first) {
  if (err.status === 412) return first;
  if (err.status === 409) return `It cannot move to ${STATUS_LABEL[status] || status} now: ${err.message}.`;
  return err.message;
}

/** active reports whether order o has a move left: not yet delivered or cancelled (nor deleted). */
export function active(o) {
  return Array.isArray(o.allowed) && o.allowed.length > 0;
}
