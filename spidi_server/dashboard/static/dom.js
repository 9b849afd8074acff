/*
 * DOM helpers: element and SVG builders, writes that touch the DOM only on a change, keyed
 * reconciliation of table rows, and the toast.
 */

export const $ = (sel, root) => (root || document).querySelector(sel);
const SVG_NS = "http://www.w3.org/2000/svg";

export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c) node.append(c);
  return node;
}

export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

export function setClass(node, cls) {
  if (node.getAttribute("class") !== cls) node.setAttribute("class", cls);
}

/**
 * Bring a tbody to the rows of ``items`` in order, keyed by data-<attr>: existing rows are
 * updated in place (a click or a text selection in the table survives live updates).
 */
export function reconcile(tbody, items, attr, key, create, update) {
  const existing = new Map();
  for (const tr of tbody.rows) existing.set(tr.dataset[attr], tr);
  let prev = null;
  for (const item of items) {
    const k = String(key(item));
    let tr = existing.get(k);
    if (tr) existing.delete(k);
    else {
      tr = create(item);
      tr.dataset[attr] = k;
    }
    update(tr, item);
    const want = prev ? prev.nextSibling : tbody.firstChild;
    if (tr !== want) tbody.insertBefore(tr, want);
    prev = tr;
  }
  for (const tr of existing.values()) tr.remove();
}

let toastTimer = null;
export function toast(message, kind) {
  const box = $("#toast");
  box.textContent = message;
  box.className = "toast show " + (kind || "error");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (box.className = "toast"), 6000);
}
