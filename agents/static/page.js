// What every page script shares: the page's words and configuration (JSON blocks rendered by the server, never
// executed), small DOM helpers that only ever set text (never HTML from data), formatting, and the notice bar.

function readJson(id) {
  const node = document.getElementById(id);
  if (!node) return {};
  try {
    return JSON.parse(node.textContent);
  } catch {
    return {};
  }
}

export const strings = readJson('desk-strings');
export const config = readJson('desk-config');

/** The word for `key` in the page's language; `{name}` placeholders are filled from `vars`. */
export function t(key, vars) {
  let text = Object.prototype.hasOwnProperty.call(strings, key) ? strings[key] : key;
  if (vars) {
    for (const [name, value] of Object.entries(vars)) text = text.split(`{${name}}`).join(String(value));
  }
  return text;
}

/** `t(prefix + value)` when the page has such a word, else the value itself (codes the server may extend). */
export function label(prefix, value) {
  if (value === null || value === undefined || value === '') return '';
  const key = prefix + value;
  return Object.prototype.hasOwnProperty.call(strings, key) ? strings[key] : String(value);
}

/** An element: `h('button', {id: 'x', class: 'big', dataset: {n: 1}, onclick: fn}, 'text', child…)`. */
export function h(tag, attrs, ...children) {
  const node = tag.includes(':')
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.split(':')[1])
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') node.setAttribute('class', value);
    else if (name === 'dataset') Object.assign(node.dataset, value);
    else if (name.startsWith('on') && typeof value === 'function') node.addEventListener(name.slice(2), value);
    else if (value === true) node.setAttribute(name, '');
    else node.setAttribute(name, String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

/** "m:ss", or "h:mm:ss" from an hour on. */
export function duration(seconds) {
  const total = Math.max(0, Math.floor(Number(seconds) || 0));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const secs = String(total % 60).padStart(2, '0');
  return hours ? `${hours}:${String(minutes).padStart(2, '0')}:${secs}` : `${minutes}:${secs}`;
}

/** A time from the API (ISO text or epoch seconds) as milliseconds, or NaN. */
export function millis(value) {
  if (value === null || value === undefined || value === '') return NaN;
  if (typeof value === 'number') return value * 1000;
  return Date.parse(value);
}

/** A local date and time, short: "05-01 14:03" (this year) or "2024-05-01 14:03". */
export function when(value) {
  const ms = millis(value);
  if (Number.isNaN(ms)) return value ? String(value) : '';
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, '0');
  const day = `${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  const year = d.getFullYear() === new Date().getFullYear() ? '' : `${d.getFullYear()}-`;
  return `${year}${day} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** Items of a list answer, whatever the envelope: `[…]`, `{items: […]}`, `{<key>: […]}`. */
export function items(data, ...keys) {
  if (Array.isArray(data)) return data;
  if (!data || typeof data !== 'object') return [];
  for (const key of [...keys, 'items', 'results']) {
    if (Array.isArray(data[key])) return data[key];
  }
  return [];
}

let noticeTimer = null;

/** A message in the notice bar: `kind` "error" stays until replaced or closed, "ok"/"info" fade after 6 s. */
export function notify(message, kind = 'info') {
  const bar = document.getElementById('notice');
  if (!bar) return;
  clearTimeout(noticeTimer);
  bar.className = `notice-bar ${kind}`;
  fill(bar, h('span', {class: 'notice-text'}, message),
    h('button', {type: 'button', class: 'notice-close', 'aria-label': t('close'),
      onclick: () => { bar.hidden = true; }}, '×'));
  bar.hidden = false;
  if (kind !== 'error') noticeTimer = setTimeout(() => { bar.hidden = true; }, 6000);
}
