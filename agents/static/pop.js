// The screen pop (#pop): who is calling and why, shown while the call still rings. Filled from a POP
// (docs/desktop.md) into the skeleton the template renders (#pop-button, #pop-name, #pop-sub, #pop-flags,
// #pop-phase, #pop-body). Every phone number has a "call" button ([data-dial-number], enabled while the desk is
// idle); a contact has "bring in" ([data-contact-number], three-way) during a call and "call" outside one. Only text
// is ever inserted (never HTML from data).
import {$, $$, config, fill, h, label, t, when} from './page.js';
import {SHORTCUTS} from './shortcuts.js';

const LANGUAGE_CODES = ['cmn', 'yue']; // the languages the center speaks (directory validation)

function section(title, ...content) {
  return h('section', {class: 'pop-section'}, h('h3', {}, title), ...content);
}

function facts(rows) {
  return h('dl', {class: 'facts'}, rows.filter(([, value]) => value !== '' && value !== null && value !== undefined)
    .map(([name, value, cls]) => [h('dt', {}, name), h('dd', {class: cls || null}, value)]));
}

function addressText(address) {
  if (!address) return '';
  if (address.text) return address.text;
  return [address.district, address.street, address.community, address.detail].filter(Boolean).join(' ');
}

function coordinates(location) {
  if (!location || typeof location.lat !== 'number' || typeof location.lon !== 'number') return '';
  return `${location.lat.toFixed(5)}, ${location.lon.toFixed(5)}`;
}

function subtitle(elder) {
  const parts = [];
  if (elder.age !== null && elder.age !== undefined) parts.push(t('age_years', {age: elder.age}));
  if (elder.sex) parts.push(label('sex_', elder.sex));
  if (elder.language) parts.push(label('lang_', elder.language));
  return parts.join(' · ');
}

function flags(elder) {
  const list = [];
  if (elder.living_alone) list.push(h('span', {class: 'flag red'}, t('living_alone')));
  if (elder.health_notes) list.push(h('span', {class: 'flag amber', title: elder.health_notes}, elder.health_notes));
  for (const terminal of elder.terminals || []) {
    if (terminal.power === 'lost') list.push(h('span', {class: 'flag red'}, t('power_lost')));
    else if (terminal.power === 'battery') list.push(h('span', {class: 'flag amber'}, t('power_battery')));
    if (terminal.battery === 'low') list.push(h('span', {class: 'flag amber'}, t('battery_low')));
  }
  return list;
}

/** A "call" button for `number` (POST /api/desk/dial through ctx.onDial), enabled while the desk is idle. */
function dialButton(number, ctx, elderId, name) {
  return h('button', {
    type: 'button', class: 'dial-number', disabled: !ctx.canDial, dataset: {dialNumber: number},
    title: t('call_title', {number: name ? `${name} ${number}` : number}),
    onclick: () => ctx.onDial(number, elderId),
  }, t('call_number'));
}

function phoneList(phones, ctx, elderId) {
  return h('span', {class: 'phone-list'}, phones.map((p) => h('span', {class: 'phone'},
    h('span', {class: 'mono'}, p.number), p.kind ? ` (${label('phone_', p.kind)}) ` : ' ',
    dialButton(p.number, ctx, elderId))));
}

function callSection(call, ctx, elderId) {
  const path = Array.isArray(call.ivr_path) ? call.ivr_path : [];
  const steps = path.map((step) => (typeof step === 'string' ? step : step.node || step.name || JSON.stringify(step)));
  const number = call.caller_number || '';
  return section(t('pop_call'), facts([
    [t(call.direction === 'outbound' || call.direction === 'callback' ? 'called_number' : 'caller_number'),
      number ? [number, ' ', dialButton(number, ctx, elderId)] : '', 'mono strong'],
    [t('did'), call.did || '', 'mono'],
    [t('direction'), label('dir_', call.direction)],
    [t('queue'), ((config.queues || []).find((q) => q.name === call.queue) || {}).label || call.queue || ''],
    [t('ivr_path'), steps.length
      ? h('span', {class: 'ivr-path'}, steps.map((s, i) => [i ? ' › ' : '', h('code', {}, s)])) : ''],
    [t('digits'), call.digits ? h('code', {class: 'digits'}, call.digits) : ''],
  ]));
}

function terminalRows(terminals) {
  return terminals.map((terminal) => h('li', {},
    h('b', {}, terminal.type || t('terminal')),
    terminal.installed ? h('span', {class: 'muted'}, ` ${t('installed_on', {date: terminal.installed})}`) : '',
    h('span', {class: `chip ${terminal.battery === 'low' ? 'amber' : 'ok'}`},
      `${t('battery')} ${label('battery_is_', terminal.battery)}`),
    h('span', {class: `chip ${terminal.power === 'lost' ? 'red' : terminal.power === 'battery' ? 'amber' : 'ok'}`},
      `${t('power')} ${label('power_is_', terminal.power)}`),
    terminal.last_heartbeat
      ? h('span', {class: 'muted'}, ` ${t('heartbeat_at', {at: when(terminal.last_heartbeat)})}`) : ''));
}

/** Contacts: "bring in" (three-way) while there is a call or an offer; "call" when the desk is idle. */
function contactRows(contacts, ctx, elderId) {
  const sorted = [...contacts].sort((a, b) => (a.order ?? 99) - (b.order ?? 99));
  const bringIn = (contact) => h('button', {
    type: 'button', class: 'bring-in', disabled: !ctx.canBringIn,
    dataset: {contactNumber: contact.number}, title: t('bring_in_title', {name: contact.name || contact.number}),
    onclick: () => ctx.onBringIn(contact.number, contact.name),
  }, t('bring_in'));
  return sorted.map((contact) => h('li', {class: 'contact'},
    h('span', {class: 'contact-who'}, h('b', {}, contact.name || ''),
      contact.relation ? ` (${label('rel_', contact.relation)})` : ''),
    h('span', {class: 'mono'}, contact.number || ''),
    !contact.number ? '' : ctx.canDial ? dialButton(contact.number, ctx, elderId, contact.name) : bringIn(contact)));
}

function recordsTable(records) {
  if (!records.length) return h('p', {class: 'empty'}, t('no_records'));
  return h('table', {class: 'compact'},
    h('thead', {}, h('tr', {}, h('th', {}, t('at')), h('th', {}, t('operator')), h('th', {}, t('disposition')),
      h('th', {}, t('notes')))),
    h('tbody', {}, records.slice(0, 10).map((r) => h('tr', {},
      h('td', {class: 'mono nowrap'}, when(r.at || r.created_at)), h('td', {}, r.operator || ''),
      h('td', {}, r.disposition_label || r.disposition || ''), h('td', {class: 'notes'}, r.notes || '')))));
}

function workOrderRows(orders) {
  if (!orders.length) return h('p', {class: 'empty'}, t('no_work_orders'));
  return h('ul', {class: 'plain'}, orders.map((o) => h('li', {},
    h('b', {}, o.type || ''), ' → ', o.assignee || '',
    o.due_at ? h('span', {class: 'muted'}, ` ${t('due_at', {at: when(o.due_at)})}`) : '',
    ' ', h('span', {class: 'chip'}, label('wo_', o.status)), o.notes ? h('div', {class: 'muted'}, o.notes) : '')));
}

function callbackRows(callbacks) {
  if (!callbacks.length) return h('p', {class: 'empty'}, t('no_callbacks'));
  return h('ul', {class: 'plain'}, callbacks.map((c) => h('li', {},
    c.reason || '', c.due_at ? h('span', {class: 'muted'}, ` ${t('due_at', {at: when(c.due_at)})}`) : '',
    h('span', {class: 'muted'}, ` ${t('attempts_n', {n: c.attempts ?? 0})}`))));
}

function quickCreateForm(number, onCreate) {
  const form = h('form', {id: 'quick-create', class: 'quick-create', autocomplete: 'off'},
    h('p', {class: 'muted'}, t('quick_create_hint')),
    h('label', {for: 'qc-name'}, t('name')), h('input', {id: 'qc-name', name: 'name', required: true, maxlength: 64}),
    h('label', {for: 'qc-number'}, t('number')),
    h('input', {id: 'qc-number', name: 'number', value: number || '', required: true, maxlength: 32, class: 'mono'}),
    h('label', {for: 'qc-address'}, t('address')), h('input', {id: 'qc-address', name: 'address', maxlength: 200}),
    h('label', {for: 'qc-language'}, t('language')),
    h('select', {id: 'qc-language', name: 'language'},
      LANGUAGE_CODES.map((code) => h('option', {value: code}, label('lang_', code)))),
    h('div', {class: 'form-actions'}, h('button', {type: 'submit', class: 'primary'}, t('quick_create'))));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(form).entries());
    onCreate({name: data.name.trim(), number: data.number.trim(), address: data.address.trim(),
      language: data.language}, form);
  });
  return form;
}

/**
 * Show a pop. `phase`: "offer" (ringing), "call" (talking/held), "ended", "withdrawn", "view" (opened from a search),
 * or null with `pop` null for the idle desk.
 * @param {object|null} pop
 * @param {{phase: string|null, note?: string, canBringIn: boolean, onBringIn: Function, canDial: boolean,
 *          onDial: Function, onCreate: Function}} ctx
 */
export function renderPop(pop, ctx) {
  const root = $('#pop');
  const call = (pop && pop.call) || {};
  const elder = pop && !pop.unknown ? pop.elder : null;
  const emergency = Boolean(call.emergency || call.button === 'emergency' || call.priority === 'emergency');
  root.className = ['pop', pop ? `phase-${ctx.phase}` : 'idle', emergency ? 'emergency' : '',
    pop && !elder ? 'unknown' : ''].filter(Boolean).join(' ');
  root.dataset.callId = call.call_id || '';
  root.dataset.elderId = elder && elder.id !== undefined ? String(elder.id) : '';

  const button = $('#pop-button');
  // The server's label is in the center's language (Chinese); an English page uses its own word when it has one.
  const own = call.button ? label('button_', call.button) : '';
  const buttonText = (config.lang === 'en' && own !== call.button ? own : call.button_label) || own;
  fill(button, buttonText);
  button.hidden = !buttonText;
  button.classList.toggle('emergency', emergency);

  fill($('#pop-phase'), pop ? (ctx.note || label('phase_', ctx.phase)) : '');
  if (!pop) {
    fill($('#pop-name'), t('waiting_for_calls'));
    fill($('#pop-sub'), t('waiting_hint'));
    fill($('#pop-flags'));
    fill($('#pop-body'), h('div', {class: 'idle-hints'}, SHORTCUTS.filter((s) => s.action).map((s) => h('div', {},
      h('kbd', {}, s.keys[0]), t(s.text)))));
    return;
  }
  if (!elder) {
    fill($('#pop-name'), t('unknown_caller'));
    fill($('#pop-sub'), call.caller_number ? t('from_number', {number: call.caller_number}) : '');
    fill($('#pop-flags'));
    fill($('#pop-body'), section(t('quick_create_title'), quickCreateForm(call.caller_number, ctx.onCreate)),
      call.call_id ? callSection(call, ctx, null) : '');
    return;
  }
  fill($('#pop-name'), elder.name || '');
  fill($('#pop-sub'), subtitle(elder));
  fill($('#pop-flags'), flags(elder));
  const address = elder.address || {};
  fill($('#pop-body'),
    h('div', {class: 'pop-grid'},
      h('div', {class: 'pop-col'},
        section(t('address'), facts([
          [t('address'), addressText(address), 'strong'],
          [t('community'), address.community || ''],
          [t('coordinates'), coordinates(elder.location), 'mono'],
          [t('phones'), (elder.phones || []).length ? phoneList(elder.phones, ctx, elder.id) : ''],
          [t('health'), elder.health_notes || '', elder.health_notes ? 'amber-text' : null],
          [t('care_level'), elder.care_level || ''],
          [t('id_number'), elder.id_number || '', 'mono'],
        ])),
        call.call_id ? callSection(call, ctx, elder.id) : '',
        (elder.terminals || []).length
          ? section(t('terminals'), h('ul', {class: 'plain'}, terminalRows(elder.terminals))) : ''),
      h('div', {class: 'pop-col'},
        section(t('contacts'), (elder.contacts || []).length
          ? h('ul', {class: 'contacts'}, contactRows(elder.contacts, ctx, elder.id))
          : h('p', {class: 'empty'}, t('no_contacts'))),
        section(t('recent_records'), recordsTable(pop.records || [])),
        section(t('open_work_orders'), workOrderRows((pop.work_orders || [])
          .filter((o) => !o.status || o.status === 'open' || o.status === 'in_progress'))),
        section(t('open_callbacks'), callbackRows(pop.callbacks || [])))));
}

/** Enable or disable the contacts' "bring in" buttons without redrawing the pop. */
export function setBringIn(enabled) {
  for (const button of $$('#pop [data-contact-number]')) button.disabled = !enabled;
}
