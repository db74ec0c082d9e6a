// menu.js — the dishes the order form offers.
import { el, make } from "./dom.js";

export const MENU = [
  { sku: "margherita", label: "Margherita pizza", qty: 1 },
  { sku: "pad-thai", label: "Pad thai", qty: 0 },
  { sku: "green-salad", label: "Green salad", qty: 0 },
  { sku: "lemonade", label: "Lemonade", qty: 0 },
];

/** menuLabel is a dish's name, or its sku for one not on the menu. */
export function menuLabel(sku) {
  const m = MENU.find((x) => x.sku === sku);
  return m ? m.label : sku;
}

/** itemsText lists an order's items, like "2× Pad thai, 1× Lemonade". */
export function itemsText(o) {
  return (Array.isArray(o.items) ? o.items : []).map((i) => `${i.qty}× ${menuLabel(i.sku)}`).join(", ");
}

/** renderMenu fills the order form with a quantity per dish. */
export function renderMenu() {
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
