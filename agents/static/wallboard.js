// The supervisors' wallboard (/wallboard): queues, operators, today's KPIs with small charts; pause or log out an
// operator. Live from the push stream (`queue`, `operator`) plus a full GET /api/wallboard every 10 s.
// Stable hooks for tests: #wallboard-queues (rows [data-queue]), #wallboard-operators (cards [data-operator] with
// data-state, buttons [data-action="pause"|"logout"|"available"]), #wallboard-kpi, #chart-hourly, #push-status.
import {errorText, get, post} from './api.js';
import {hourlyBars, meter} from './charts.js';
import {PushStream} from './events.js';
import {$, config, duration, fill, h, items, label, notify, t} from './page.js';

const REFRESH_MS = 10000;
const board = {queues: [], operators: new Map(), kpi: null, loadedAt: 0, degraded: false};

function percent(value) {
  return value === null || value === undefined ? '—' : `${Math.round(value * 100)}%`;
}

function seconds(value) {
  return value === null || value === undefined ? '—' : duration(value);
}

// -- queues ---------------------------------------------------------------------------------------------------

function renderQueues() {
  const body = $('#wallboard-queues tbody');
  const labels = new Map((config.queues || []).map((q) => [q.name, q.label]));
  if (!board.queues.length) {
    fill(body, h('tr', {}, h('td', {colspan: 6, class: 'empty'}, t('wb_no_queues'))));
    return;
  }
  fill(body, board.queues.map((q) => h('tr', {dataset: {queue: q.name},
    class: [q.emergency_waiting ? 'emergency' : '', q.waiting ? 'waiting' : ''].filter(Boolean).join(' ') || null},
  h('td', {}, h('b', {}, q.display_name || labels.get(q.name) || q.name)),
  h('td', {class: 'num big'}, q.waiting ?? 0,
    q.emergency_waiting ? h('span', {class: 'badge alarm'}, t('wb_emergency_n', {n: q.emergency_waiting})) : ''),
  h('td', {class: `num mono${(q.longest_wait || 0) >= 60 ? ' late' : ''}`}, seconds(q.longest_wait)),
  h('td', {class: 'num'}, h('span', {class: 'sl'}, meter(q.service_level_today), ' ', percent(q.service_level_today))),
  h('td', {class: 'num'}, q.answered_today ?? '—'),
  h('td', {class: 'num'}, q.abandoned_today ?? '—'))));
}

// -- operators ------------------------------------------------------------------------------------------------

function setOperator(row) {
  const known = board.operators.get(row.name) || {};
  const changed = known.state !== row.state || known.reason !== row.reason;
  const since = row.since !== undefined ? Date.now() - row.since * 1000 : changed ? Date.now() : known.sinceAt;
  board.operators.set(row.name, {...known, ...row, sinceAt: since || Date.now()});
}

function operatorCard(op) {
  const actions = [];
  if (op.state !== 'paused' && op.state !== 'logged_out') {
    actions.push(h('button', {type: 'button', dataset: {action: 'pause'}, onclick: () => setState(op, 'paused')},
      t('wb_pause')));
  }
  if (op.state === 'paused') {
    actions.push(h('button', {type: 'button', dataset: {action: 'available'}, onclick: () => setState(op, 'available')},
      t('wb_resume')));
  }
  if (op.state !== 'logged_out') {
    actions.push(h('button', {type: 'button', dataset: {action: 'logout'}, onclick: () => setState(op, 'logged_out')},
      t('wb_logout')));
  }
  return h('li', {class: `op state-${op.state}`, dataset: {operator: op.name, state: op.state}},
    h('div', {class: 'op-head'}, h('b', {class: 'op-name'}, op.display_name || op.name),
      h('span', {class: 'op-device'}, label('device_', op.device || 'phone'))),
    h('div', {class: 'op-state'}, label('state_', op.state),
      op.reason ? h('span', {class: 'op-reason'}, ` · ${label('reason_', op.reason)}`) : '',
      op.pending ? h('span', {class: 'op-reason'}, ` → ${label('state_', op.pending)}`) : ''),
    h('div', {class: 'op-meta'}, h('span', {class: 'mono op-since', dataset: {since: op.sinceAt}},
      duration((Date.now() - op.sinceAt) / 1000)),
    op.calls_today !== undefined ? h('span', {}, t('wb_calls_today', {n: op.calls_today})) : ''),
    h('div', {class: 'op-actions'}, actions));
}

function renderOperators() {
  const list = $('#wallboard-operators');
  const ops = [...board.operators.values()].sort((a, b) => a.name.localeCompare(b.name));
  if (!ops.length) {
    fill(list, h('li', {class: 'empty'}, t('wb_no_operators')));
    return;
  }
  // Cards are kept while nothing on them changed, so that a click never lands on a card being replaced.
  const old = new Map();
  for (const li of [...list.children]) {
    if (li.dataset.operator) old.set(li.dataset.operator, li);
    else li.remove();
  }
  const cards = ops.map((op) => {
    const sig = JSON.stringify([op.display_name, op.state, op.reason, op.pending, op.device, op.calls_today]);
    const card = old.get(op.name);
    if (card && card.dataset.sig === sig) {
      $('.op-since', card).dataset.since = op.sinceAt;
      return card;
    }
    const fresh = operatorCard(op);
    fresh.dataset.sig = sig;
    return fresh;
  });
  cards.forEach((card, i) => {
    if (list.children[i] !== card) list.insertBefore(card, list.children[i] || null);
  });
  while (list.children.length > cards.length) list.lastElementChild.remove();
  const counts = {};
  for (const op of ops) counts[op.state] = (counts[op.state] || 0) + 1;
  fill($('#operator-counts'), Object.entries(counts).map(([state, n]) =>
    h('span', {class: `count state-${state}`}, `${label('state_', state)} ${n}`)));
}

async function setState(op, state) {
  const body = state === 'paused' ? {state, reason: 'supervisor'} : {state};
  try {
    const answer = await post(`/api/operators/${encodeURIComponent(op.name)}/state`, body);
    if (answer && answer.pending) notify(t('wb_pending', {name: op.display_name || op.name}), 'info');
  } catch (error) {
    notify(errorText(error), 'error');
  }
  load();
}

function tick() {
  for (const node of document.querySelectorAll('#wallboard-operators .op-since')) {
    node.textContent = duration((Date.now() - Number(node.dataset.since)) / 1000);
  }
}

// -- KPIs -----------------------------------------------------------------------------------------------------

function renderKpi() {
  const kpi = board.kpi;
  const box = $('#wallboard-kpi');
  if (!kpi) {
    fill(box, h('p', {class: 'empty'}, t('wb_no_kpi')));
    fill($('#chart-hourly'));
    return;
  }
  const tile = (name, value, cls) => h('div', {class: `tile ${cls || ''}`, 'data-kpi': name},
    h('div', {class: 'label'}, t(name)), h('div', {class: 'value'}, value));
  const emergencyRate = kpi.emergency_answer_rate;
  fill(box,
    tile('wb_offered', kpi.offered ?? 0),
    tile('wb_answered', kpi.answered ?? 0),
    tile('wb_abandoned', kpi.abandoned ?? 0, kpi.abandoned ? 'warn' : ''),
    tile('wb_answer_rate', percent(kpi.answer_rate)),
    tile('wb_service_level', percent(kpi.service_level)),
    tile('wb_asa', seconds(kpi.asa)),
    tile('wb_emergency_rate', percent(emergencyRate),
      emergencyRate !== null && emergencyRate !== undefined && emergencyRate < 1 ? 'alarm' : ''));
  fill($('#chart-hourly'), hourlyBars(Array.isArray(kpi.hourly) ? kpi.hourly : []),
    h('div', {class: 'legend'}, h('span', {class: 'key offered'}, t('wb_offered')), h('span', {class: 'key answered'},
      t('wb_answered'))));
}

// -- loading --------------------------------------------------------------------------------------------------

async function load() {
  try {
    const data = await get('/api/wallboard');
    board.degraded = false;
    board.queues = items(data, 'queues');
    board.operators = new Map();
    for (const row of items(data, 'operators')) setOperator(row);
    board.kpi = data.kpi || null;
  } catch (error) {
    if (!error.missing) {
      notify(errorText(error), 'error');
      return;
    }
    await loadFallback();
  }
  board.loadedAt = Date.now();
  const time = new Date().toLocaleTimeString(config.lang === 'en' ? 'en-GB' : 'zh-CN');
  fill($('#wallboard-updated'), t('wb_updated', {time}));
  renderQueues();
  renderOperators();
  renderKpi();
}

/** An engine without /api/wallboard: live queues and operators from the older routes, no KPIs. */
async function loadFallback() {
  if (!board.degraded) notify(t('wb_api_missing'), 'error');
  board.degraded = true;
  try {
    const [queues, operators] = await Promise.all([get('/api/queues'), get('/api/operators')]);
    board.queues = Object.entries(queues.queues || {}).map(([name, q]) => ({name, waiting: q.waiting,
      longest_wait: q.longest_wait,
      emergency_waiting: (q.calls || []).filter((c) => c.priority === 'emergency').length}));
    board.operators = new Map();
    for (const row of items(operators, 'operators')) setOperator(row);
  } catch (error) {
    notify(errorText(error), 'error');
  }
  board.kpi = null;
}

function onEvent(kind, data) {
  if (kind === 'queue') {
    board.queues = items(data, 'queues');
    renderQueues();
    if (data.kpi) {  // today's figures move with the queues, not only at the 10 s refresh
      board.kpi = data.kpi;
      renderKpi();
    }
  } else if (kind === 'operator') {
    setOperator({...(board.operators.get(data.name) || {name: data.name}), since: undefined, state: data.state,
      reason: data.reason, device: data.device, call_id: data.call_id, pending: null});
    renderOperators();
  }
}

function showPush(status) {
  const light = $('#push-status');
  light.dataset.state = status;
  fill(light, label('push_', status));
}

new PushStream('/api/desk/events', {onEvent, onOpen: () => load(), onStatus: showPush}).start();
setInterval(() => {
  if (document.visibilityState === 'visible') load();
}, REFRESH_MS);
setInterval(tick, 1000);
renderQueues();
renderOperators();
renderKpi();
load();
