// The side tabs besides the record form: callbacks to make (GET /api/callbacks, dial), service history
// (#history: an elder's history, or a search with GET /api/history?q=) and the elder search (GET /api/elders?q=).
// Phone numbers in the search results and the history's calls have a "call" button ([data-dial-number]).
import {errorText, get, post} from './api.js';
import {$, $$, config, fill, h, items, label, notify, t, when} from './page.js';

function empty(text) {
  return h('p', {class: 'empty'}, text);
}

/** A "call" button for `number` (the server refuses while the operator is on a call; a login that is no operator
 * cannot place calls). */
function dialButton(number, onDial, elderId) {
  return h('button', {type: 'button', class: 'dial-number', disabled: !config.operator,
    dataset: {dialNumber: number}, title: t('call_title', {number}), onclick: () => onDial(number, elderId)},
  t('call_number'));
}

function failed(error) {
  return h('p', {class: 'empty error'}, errorText(error));
}

// -- tabs -----------------------------------------------------------------------------------------------------

export class Tabs {
  constructor(onShow) {
    this.onShow = onShow;
    for (const tab of $$('.tabs [data-tab]')) tab.addEventListener('click', () => this.show(tab.dataset.tab));
  }

  get current() {
    const tab = $('.tabs [aria-selected="true"]');
    return tab ? tab.dataset.tab : null;
  }

  show(name) {
    for (const tab of $$('.tabs [data-tab]')) {
      const on = tab.dataset.tab === name;
      tab.setAttribute('aria-selected', String(on));
      $(`#panel-${tab.dataset.tab}`).hidden = !on;
    }
    this.onShow(name);
  }
}

// -- callbacks ------------------------------------------------------------------------------------------------

export class Callbacks {
  constructor({canDial}) {
    this.canDial = canDial;
    $('#btn-callbacks-refresh').addEventListener('click', () => this.load());
  }

  count(n) {
    const badge = $('#callbacks-count');
    badge.textContent = n ? String(n) : '';
    badge.hidden = !n;
  }

  async load() {
    const list = $('#callbacks-list');
    let tasks;
    try {
      tasks = items(await get('/api/callbacks'), 'callbacks');
    } catch (error) {
      fill(list, failed(error));
      return;
    }
    this.count(tasks.filter((task) => task.state === 'open').length);
    if (!tasks.length) {
      fill(list, empty(t('no_callbacks')));
      return;
    }
    fill(list, h('table', {class: 'compact'},
      h('thead', {}, h('tr', {}, h('th', {}, t('number')), h('th', {}, t('reason')), h('th', {}, t('due')),
        h('th', {class: 'num'}, t('attempts')), h('th', {}, ''))),
      h('tbody', {}, tasks.map((task) => h('tr', {class: task.state === 'dialling' ? 'busy' : null},
        h('td', {class: 'mono'}, task.number || ''), h('td', {}, label('cb_reason_', task.reason)),
        h('td', {class: 'nowrap'}, when(task.due_at)), h('td', {class: 'num'}, task.attempts ?? 0),
        h('td', {}, h('button', {type: 'button', class: 'dial', dataset: {callbackId: task.id},
          disabled: task.state !== 'open' || !this.canDial(), onclick: (event) => this.dial(task, event.currentTarget)},
        task.state === 'dialling' ? t('dialling') : t('dial'))))))));
  }

  async dial(task, button) {
    button.disabled = true;
    try {
      await post(`/api/callbacks/${encodeURIComponent(task.id)}/dial`, {});
      notify(t('callback_dialling', {number: task.number || ''}), 'ok');
    } catch (error) {
      notify(errorText(error), 'error');
    }
    this.load();
  }
}

// -- history --------------------------------------------------------------------------------------------------

/** What the "disposition" column says: a call's direction and talk time (or how it ended), else the item's own. */
function outcome(r) {
  if (r.kind === 'call') {
    const talk = typeof r.duration === 'number' ? `${Math.round(r.duration)} s` : (r.end_reason || '');
    return `${label('dir_', r.direction)} ${talk}`.trim();
  }
  return r.disposition_label || r.disposition || r.type || r.state || '';
}

function recordRows(records, onDial) {
  return records.map((r) => h('tr', {},
    h('td', {class: 'mono nowrap'}, when(r.at || r.created_at || r.started_at)),
    h('td', {}, r.elder_name || (r.elder && r.elder.name) || r.number || r.caller_number || ''),
    h('td', {class: 'nowrap'}, label('kind_', r.kind || 'record')),
    h('td', {}, outcome(r)),
    h('td', {}, r.operator || ''),
    h('td', {class: r.kind === 'call' ? 'mono' : 'notes'},
      r.kind === 'call' ? [r.number || '', r.number && onDial ? [' ', dialButton(r.number, onDial, r.elder_id)] : '']
        : (r.notes || (r.reason && label('cb_reason_', r.reason)) || ''))));
}

function historyTable(rows, onDial) {
  if (!rows.length) return empty(t('no_history'));
  return h('table', {class: 'compact'},
    h('thead', {}, h('tr', {}, h('th', {}, t('at')), h('th', {}, t('elder')), h('th', {}, t('kind')),
      h('th', {}, t('disposition')), h('th', {}, t('operator')), h('th', {}, t('notes')))),
    h('tbody', {}, recordRows(rows, onDial)));
}

/**
 * An elder's history (`{history: [calls, records, work orders and callbacks, each with kind], callbacks: […]}`) or
 * a search answer (`{history: […]}`), as the rows of one table, newest first (an open callback listed in both once).
 */
export function historyRows(data) {
  const rows = [...items(data, 'history')];
  const seen = new Set(rows.map((r) => `${r.kind}:${r.id}`));
  const kinds = [['records', 'record'], ['calls', 'call'], ['work_orders', 'work_order'], ['callbacks', 'callback']];
  for (const [key, kind] of kinds) {
    const list = data && !Array.isArray(data) && Array.isArray(data[key]) ? data[key] : [];
    for (const row of list) {
      if (seen.has(`${kind}:${row.id}`)) continue;
      seen.add(`${kind}:${row.id}`);
      rows.push({kind, ...row});
    }
  }
  const time = (r) => Date.parse(r.at || r.created_at || r.started_at || r.due_at || '') || 0;
  return rows.sort((a, b) => time(b) - time(a));
}

export class History {
  constructor({onDial} = {}) {
    this.onDial = onDial || null;
    this.elderId = null;
    $('#history-search').addEventListener('submit', (event) => {
      event.preventDefault();
      this.search($('#history-q').value.trim());
    });
  }

  async search(query) {
    this.elderId = null;
    const box = $('#history');
    fill($('#history-title'), query ? t('history_for_query', {q: query}) : t('history_recent'));
    try {
      fill(box, historyTable(historyRows(await get(`/api/history?q=${encodeURIComponent(query)}`)), this.onDial));
    } catch (error) {
      fill(box, failed(error));
    }
  }

  /** The history of one elder (after a pop, after saving a record). */
  async showElder(elderId, name) {
    this.elderId = elderId;
    fill($('#history-title'), t('history_of', {name: name || `#${elderId}`}));
    try {
      const data = await get(`/api/elders/${encodeURIComponent(elderId)}/history`);
      if (this.elderId === elderId) fill($('#history'), historyTable(historyRows(data), this.onDial));
      return data;
    } catch (error) {
      if (this.elderId === elderId) fill($('#history'), failed(error));
      return null;
    }
  }
}

// -- elder search -------------------------------------------------------------------------------------------

export class ElderSearch {
  constructor({onOpen, onDial}) {
    this.onOpen = onOpen;
    this.onDial = onDial;
    $('#elder-search').addEventListener('submit', (event) => {
      event.preventDefault();
      this.search($('#elder-q').value.trim());
    });
  }

  focus() {
    $('#elder-q').focus();
    $('#elder-q').select();
  }

  async search(query) {
    const box = $('#elder-results');
    if (!query) {
      fill(box, empty(t('search_hint')));
      return;
    }
    let elders;
    try {
      elders = items(await get(`/api/elders?q=${encodeURIComponent(query)}&limit=20`), 'elders');
    } catch (error) {
      fill(box, failed(error));
      return;
    }
    if (!elders.length) {
      fill(box, empty(t('no_elders')));
      return;
    }
    fill(box, h('table', {class: 'compact'},
      h('thead', {}, h('tr', {}, h('th', {}, t('name')), h('th', {}, t('age')), h('th', {}, t('phones')),
        h('th', {}, t('address')), h('th', {}, ''))),
      h('tbody', {}, elders.map((e) => h('tr', {},
        h('td', {}, h('b', {}, e.name || ''),
          e.living_alone ? h('span', {class: 'flag red small'}, t('living_alone')) : ''),
        h('td', {}, e.age ?? ''),
        h('td', {class: 'mono'}, h('div', {class: 'phone-list'}, (e.phones || [])
          .map((p) => (typeof p === 'string' ? p : p.number))
          .map((number) => h('span', {class: 'phone'}, number, ' ', dialButton(number, this.onDial, e.id))))),
        h('td', {}, typeof e.address === 'string' ? e.address : (e.address && e.address.text) || ''),
        h('td', {}, h('button', {type: 'button', dataset: {elderId: e.id}, onclick: () => this.onOpen(e.id)},
          t('open'))))))));
  }
}
