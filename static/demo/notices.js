// notices.js — the notices above the page: one per key, replaced, never
// stacked, at most five.
import { el, make } from "./dom.js";

const MAX_NOTICES = 5;

/** notice shows text under key (kind: info, warn or error). */
export function notice(key, text, kind) {
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
  while (el.notices.childElementCount > MAX_NOTICES) el.notices.lastElementChild.remove();
}

function noticeElement(key) {
  for (const n of el.notices.children) if (n.dataset.key === key) return n;
  return null;
}

/** noticeKeys lists the keys of the notices shown. */
export function noticeKeys() {
  return [...el.notices.children].map((n) => n.dataset.key);
}

/** clearNotice removes the notice under key, if any. */
export function clearNotice(key) {
  noticeElement(key)?.remove();
}
