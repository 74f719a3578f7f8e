// The operator desktop (/desk): wires the parts together and owns the desk's state (the operator, the ringing
// offer, the current call, the pop on screen). Everything else is in small modules: page.js (words, DOM),
// api.js (REST), events.js (push), operator.js (state, device, lights), ring.js, softphone.js, pop.js, callbar.js,
// records.js, lists.js, shortcuts.js.
//
// Stable hooks for tests (tests/e2e) — keep them:
//   #pop (data-call-id, data-elder-id; classes phase-offer|phase-call|phase-ended|phase-withdrawn|phase-view,
//   emergency, unknown), #pop-name, #pop-button, #pop-phase, [data-contact-number] (a contact's "bring in" button in
//   the pop, during a call), [data-dial-number] ("call" buttons next to the numbers of the pop, the contacts outside a
//   call, the elder search and the history's calls: POST /api/desk/dial), #dial-number and #btn-dial (call a typed
//   number), #quick-create (unknown caller form), #callbar (data-mode idle|ringing|talking|held|dialling),
//   #btn-answer, #btn-decline, #btn-hangup, #btn-hold, #btn-mute, #btn-dtmf, #dtmf-pad ([data-dtmf] keys),
//   #btn-transfer, #transfer-panel, #btn-conf-120, #btn-conf-110, #call-parties ([data-party-call-id] drop buttons),
//   #call-timer, #record-form, #record-disposition, #record-notes, #btn-save-record, #record-status, #work-order-form,
//   #tab-record, #tab-callbacks, #tab-history, #tab-elders, #history, #history-q, #callbacks-list ([data-callback-id]
//   dial buttons), #elder-q, #elder-results, #state-select, #device-select, #softphone-status (data-state
//   off|connecting|connected|error), #push-status (data-state), #sound-banner, #help.
import {errorText, get, post, del} from './api.js';
import {CallBar} from './callbar.js';
import {PushStream} from './events.js';
import {Callbacks, ElderSearch, History, Tabs, historyRows} from './lists.js';
import {OperatorBar} from './operator.js';
import {$, config, items, label, notify, t} from './page.js';
import {renderPop, setBringIn} from './pop.js';
import {RecordForms} from './records.js';
import {Ringer} from './ring.js';
import {Shortcuts} from './shortcuts.js';
import {Softphone} from './softphone.js';

const POLL_MS = 5000;

const desk = {
  offer: null, // {offer_id, call_id, pop}
  call: null, // CALL, talking or held (or ringing for a callback)
  pop: null, // the pop on screen
  phase: null, // offer | call | ended | withdrawn | view
  note: '', // a line over the pop (why an offer was withdrawn)
  last: null, // {call_id, elder_id, number, name}: what the record form is about after the call
};

// -- the parts ------------------------------------------------------------------------------------------------

const ringer = new Ringer($('#sound-banner'));

let bar = null; // the desk bar (below) shows the softphone's light
const softphone = new Softphone({
  audio: $('#remote-audio'),
  iceServers: config.ice_servers,
  onStatus: (status, detail) => {
    if (bar) bar.softphoneStatus(status, detail);
    // A new media leg takes over a running call (after a reload): ask again what the line is doing.
    if (status === 'connected' && restored) restore();
  },
});
bar = new OperatorBar({softphone});

const callbar = new CallBar({
  answer: (offer) => act(() => post('/api/desk/answer', {offer_id: offer.offer_id}), {stopRing: true}),
  decline: () => act(() => post('/api/desk/hangup', {}), {stopRing: true}),
  hangup: () => act(() => post('/api/desk/hangup', {})),
  hold: (held) => act(() => post('/api/desk/hold', {held})),
  mute: (muted) => act(() => post('/api/desk/mute', {muted})),
  dtmf: (digits) => act(() => post('/api/desk/dtmf', {digits}), {quiet: true}),
  transfer: (target) => act(() => post('/api/desk/transfer', target), {ok: t('transferred')}),
  conference: (body) => act(() => post('/api/desk/conference', body), {ok: t('party_calling')}),
  dropParty: (id) => act(() => del(`/api/desk/conference/${encodeURIComponent(id)}`)),
  dial: (number, elderId) => dial(number, elderId),
});

const history = new History({onDial: (number, elderId) => dial(number, elderId)});
const callbacks = new Callbacks({canDial: () => Boolean(config.operator)});
const tabs = new Tabs((name) => {
  if (name === 'callbacks') callbacks.load();
  if (name === 'history' && !desk.last && !history.elderId) history.search('');
});
const elders = new ElderSearch({onOpen: (id) => openElder(id), onDial: (number, elderId) => dial(number, elderId)});

const forms = new RecordForms({
  context: recordContext,
  onSaved: (kind, ctx) => {
    if (ctx.elder_id === null || ctx.elder_id === undefined) return;
    refreshElder(ctx.elder_id);
    if (kind === 'record') tabs.show('history'); // the saved record, on top of the elder's history
  },
});

new Shortcuts({
  keypadOpen: () => callbar.keypadOpen,
  handlers: {
    answer: () => (callbar.ringing ? (callbar.answer(), true) : false),
    dial: () => {
      const elder = popElder(desk.pop);
      const phone = elder && Array.isArray(elder.phones) ? elder.phones[0] : null;
      const number = phone ? phone.number : (desk.pop && desk.pop.call && desk.pop.call.caller_number) || '';
      return callbar.prefill(number, elder ? elder.id : null);
    },
    hangup: () => callbar.hangup(),
    hold: () => callbar.toggleHold(),
    mute: () => callbar.toggleMute(),
    dtmf: () => callbar.toggleKeypad(),
    digit: (key) => callbar.sendDigit(key),
    transfer: () => callbar.toggleTransfer(),
    conf120: () => callbar.conference({service: '120'}),
    conf110: () => callbar.conference({service: '110'}),
    record: () => {
      tabs.show('record');
      forms.focus();
    },
    save: () => {
      tabs.show('record');
      forms.save();
    },
    search: () => {
      tabs.show('elders');
      elders.focus();
    },
    close: () => {
      callbar.toggleKeypad(false);
      callbar.toggleTransfer(false);
      return false;
    },
  },
});

// -- actions ------------------------------------------------------------------------------------------------

async function act(request, {stopRing = false, quiet = false, ok = null} = {}) {
  if (stopRing) ringer.stop();
  try {
    const answer = await request();
    // The call routes answer {operator, call}: show it now rather than wait for the push event.
    if (answer && typeof answer === 'object' && 'call' in answer) lineIs(answer.call);
    if (ok) notify(ok, 'ok');
  } catch (error) {
    if (!quiet || error.status !== 409) notify(errorText(error), 'error');
    if (stopRing && desk.offer && !desk.call) ringer.start(isEmergency(desk.offer.pop));
  }
}

/** Place an outbound call for this operator (POST /api/desk/dial); the pop and the call bar follow the push. */
async function dial(number, elderId) {
  const text = String(number || '').trim();
  if (!text || !canDial()) return;
  const body = {number: text};
  if (elderId !== null && elderId !== undefined && elderId !== '') body.elder_id = Number(elderId);
  try {
    const answer = await post('/api/desk/dial', body);
    const dialled = (answer && answer.dialling) || {};
    $('#dial-number').value = '';
    tabs.show('record'); // the record of this call, as for a caller
    notify(t(dialled.device === 'phone' ? 'dialling_phone' : 'dialling_number', {number: dialled.number || text}),
      'ok');
    if (answer && answer.call) setCall(answer.call);
  } catch (error) {
    notify(errorText(error), 'error');
  }
}

/** The desk is idle: no offer, no call (a call can be placed). */
function canDial() {
  return Boolean(config.operator) && !desk.offer && !desk.call;
}

/** The line over the pop while a call the operator placed rings. */
function dialNote(kind) {
  return kind === 'callback' ? t('phase_dialling') : t('phase_calling');
}

function isEmergency(pop) {
  const call = (pop && pop.call) || {};
  return Boolean(call.emergency || call.button === 'emergency' || call.priority === 'emergency');
}

// -- the line: offer, call, pop -------------------------------------------------------------------------------

function popElder(pop) {
  return pop && !pop.unknown && pop.elder ? pop.elder : null;
}

function remember(pop, callId) {
  const elder = popElder(pop);
  const call = (pop && pop.call) || {};
  desk.last = {call_id: callId || call.call_id || null, elder_id: elder ? elder.id : null,
    number: call.caller_number || null, name: elder ? elder.name : null};
}

function recordContext() {
  const last = desk.last;
  if (!last) return {call_id: null, elder_id: null, number: null, label: ''};
  const who = last.name || last.number || '';
  const what = desk.call ? t('record_about_call') : desk.offer ? t('record_about_offer') : t('record_about_last');
  return {...last, label: [what, who, last.number && last.name ? last.number : ''].filter(Boolean).join(' · ')};
}

function render() {
  const ringing = Boolean(desk.offer && !desk.call);
  callbar.update(desk.offer, desk.call);
  const canBringIn = Boolean(desk.call && (desk.call.state === 'talking' || desk.call.state === 'held'));
  renderPop(desk.pop, {
    phase: desk.phase,
    note: desk.note,
    canBringIn,
    onBringIn: (number) => callbar.conference({number}),
    canDial: canDial(),
    onDial: (number, elderId) => dial(number, elderId),
    onCreate: createElder,
  });
  setBringIn(canBringIn);
  $('#btn-pop-close').hidden = !desk.pop || ringing || Boolean(desk.call);
  const answerable = ringing && desk.offer.offer_id !== null && desk.offer.offer_id !== undefined;
  if (answerable) ringer.start(isEmergency(desk.offer.pop));
  else ringer.stop();
  document.title = ringing ? `☎ ${t('line_ringing')} · ${t('desk_title')}`
    : `${t('desk_title')} · ${t('app_title')}`;
  forms.refresh();
}

function popCallId(pop) {
  return pop && pop.call ? pop.call.call_id : null;
}

function setOffer(offer) {
  const samePop = popCallId(desk.pop) === offer.call_id;
  const fresh = !desk.offer || desk.offer.call_id !== offer.call_id;
  desk.offer = {...offer, pop: offer.pop || (fresh ? null : desk.offer.pop) || (samePop ? desk.pop : null)};
  if (!desk.call) {
    if (fresh && !samePop) tabs.show('record'); // a new caller: the record form, not the last one's history
    desk.pop = desk.offer.pop;
    desk.phase = 'offer';
    const placedKind = String(offer.call_id || '').startsWith('outbound-') ? 'outbound' : 'callback';
    desk.note = offer.offer_id === null || offer.offer_id === undefined ? dialNote(placedKind) : '';
    remember(desk.pop, offer.call_id);
    showElderHistory();
  }
  render();
}

function withdraw(data) {
  if (!desk.offer || desk.offer.call_id !== data.call_id) return;
  desk.offer = null;
  if (!desk.call) {
    if (data.reason === 'answered') {
      desk.phase = 'call'; // the call event follows
    } else {
      desk.phase = 'withdrawn';
      desk.note = t('withdrawn_because', {reason: label('withdrawn_', data.reason)});
    }
  }
  render();
}

/** What a call route answered: the operator's call now (null: none). */
function lineIs(call) {
  if (call) setCall(call);
  else if (desk.call) setCall({...desk.call, state: 'ended', pop: null});
  else if (desk.offer) withdraw({call_id: desk.offer.call_id, reason: 'declined'});
}

function setCall(call) {
  if (call.state === 'ringing' && call.offer_id !== null && call.offer_id !== undefined) {
    // The offer ringing this operator, as call control reports it: answered with the offer id.
    if (desk.call && desk.call.call_id === call.call_id) desk.call = null;
    setOffer({offer_id: call.offer_id, call_id: call.call_id, pop: call.pop || null});
    return;
  }
  if (call.state === 'ended') {
    const ours = (desk.call && call.call_id === desk.call.call_id) || popCallId(desk.pop) === call.call_id;
    if (desk.offer && desk.offer.call_id === call.call_id) desk.offer = null;
    if (desk.call && desk.call.call_id === call.call_id) desk.call = null;
    if (ours && !desk.call && !desk.offer && desk.phase !== 'withdrawn') {
      if (call.pop) desk.pop = call.pop;
      desk.phase = 'ended';
      desk.note = '';
    }
    render();
    return;
  }
  // A call the operator placed is popped under its own id ("outbound-…", an offer without offer_id); the call then
  // goes on under the elder's SIP call id: that pop is the call's.
  const placed = desk.offer && (desk.offer.offer_id === null || desk.offer.offer_id === undefined)
    && call.kind && call.kind !== 'queue' ? desk.offer : null;
  const pop = call.pop || (popCallId(desk.pop) === call.call_id ? desk.pop : null)
    || (desk.offer && desk.offer.call_id === call.call_id ? desk.offer.pop : null) || (placed ? placed.pop : null);
  const newCall = !desk.call || desk.call.call_id !== call.call_id;
  desk.call = call;
  if (placed || (desk.offer && desk.offer.call_id === call.call_id)) desk.offer = null;
  if (pop) desk.pop = pop;
  desk.phase = 'call';
  desk.note = call.state === 'ringing' ? dialNote(call.kind) : '';
  const unknownSoFar = desk.last && desk.last.call_id === call.call_id && desk.last.elder_id === null
    && !desk.last.number;
  if (newCall || (call.pop && unknownSoFar)) {
    // The pop of this call (a call placed from the desk gets its pop with the push event, not in the answer).
    remember(pop, call.call_id);
    showElderHistory();
  }
  render();
}

function showElderHistory() {
  const elder = popElder(desk.pop);
  if (elder && elder.id !== undefined && history.elderId !== elder.id) history.showElder(elder.id, elder.name);
}

/** After a record or work order was saved: the elder's history, and the pop's lists with it. */
async function refreshElder(elderId) {
  const data = await history.showElder(elderId, popElder(desk.pop) ? popElder(desk.pop).name : '');
  const elder = popElder(desk.pop);
  if (!data || !elder || elder.id !== elderId) return;
  const rows = historyRows({history: items(data, 'history')});
  desk.pop = {...desk.pop,
    records: rows.filter((r) => (r.kind || 'record') === 'record').slice(0, 10),
    work_orders: rows.filter((r) => r.kind === 'work_order'),
    callbacks: Array.isArray(data.callbacks)
      ? data.callbacks.filter((c) => !c.state || c.state === 'open') : desk.pop.callbacks};
  render();
}

async function createElder(fields, form) {
  const button = $('button[type="submit"]', form);
  button.disabled = true;
  const body = {name: fields.name, number: fields.number, language: fields.language};
  if (fields.address) body.address = fields.address; // building, unit, room: the district etc. come later
  try {
    const created = await post('/api/elders', body);
    const elder = await get(`/api/elders/${encodeURIComponent(created.id)}`);
    const profile = elder && elder.elder ? elder.elder : elder;
    if (desk.pop) {
      desk.pop = {...desk.pop, unknown: false, elder: profile, records: [], work_orders: [], callbacks: []};
      remember(desk.pop, desk.last && desk.last.call_id);
    }
    notify(t('elder_created', {name: profile.name || fields.name}), 'ok');
    render();
    refreshElder(profile.id);
  } catch (error) {
    notify(errorText(error), 'error');
    button.disabled = false;
  }
}

async function openElder(id) {
  let elder;
  try {
    const data = await get(`/api/elders/${encodeURIComponent(id)}`);
    elder = data && data.elder ? data.elder : data;
  } catch (error) {
    notify(errorText(error), 'error');
    return;
  }
  if (desk.offer || desk.call) { // never cover the pop of a live call: the history tab shows this elder instead
    tabs.show('history');
    history.showElder(elder.id, elder.name);
    return;
  }
  desk.pop = {call: null, unknown: false, elder, records: [], work_orders: [], callbacks: []};
  desk.phase = 'view';
  desk.note = '';
  desk.last = {call_id: null, elder_id: elder.id, number: null, name: elder.name};
  render();
  refreshElder(elder.id);
}

function closePop() {
  if (desk.offer || desk.call) return;
  desk.pop = null;
  desk.phase = null;
  desk.note = '';
  render();
}

// -- restore and push -----------------------------------------------------------------------------------------

let restoring = null;
let restored = false;
let recheck = null;
let rechecks = 0; // at most a few, then the push events tell

async function restore() {
  if (restoring) return restoring;
  restoring = (async () => {
    try {
      const current = await get('/api/desk/current');
      bar.set(current.operator);
      const call = current.call;
      if (call && call.state !== 'ringing') {
        if (desk.offer && desk.offer.call_id !== call.call_id) desk.offer = null;
        setCall(call);
      } else if (current.offer) {
        desk.call = null;
        setOffer(current.offer);
      } else if (call) {
        desk.call = null;
        setCall(call);
      } else {
        if (desk.call) { // ended while the page was away
          desk.call = null;
          desk.phase = 'ended';
        } else if (desk.offer) {
          desk.phase = 'withdrawn';
          desk.note = '';
        }
        desk.offer = null;
        render();
        // The engine says the operator is busy but reports no call yet (a call being re-bound to this page's
        // new media leg after a reload): look again shortly.
        if (current.operator && ['reserved', 'talking'].includes(current.operator.state) && rechecks < 5) {
          rechecks += 1;
          clearTimeout(recheck);
          recheck = setTimeout(restore, 1500);
        }
      }
      if (current.call || current.offer) rechecks = 0;
      restored = true;
    } catch (error) {
      if (error.missing) await restoreWithoutDesk();
      else notify(t('restore_failed', {message: errorText(error)}), 'error');
    } finally {
      restoring = null;
    }
  })();
  return restoring;
}

/** An engine without the desk API: show the operator's state from /api/operators and say what is missing. */
async function restoreWithoutDesk() {
  notify(t('desk_api_missing'), 'error');
  if (!config.operator) return;
  try {
    const data = await get('/api/operators');
    const op = (data.operators || []).find((o) => o.name === config.operator);
    if (op) {
      bar.set({name: op.name, display_name: op.display_name, state: op.state, reason: op.reason,
        device: op.device || 'phone', pending: op.pending});
    }
  } catch {
    // keep what we have
  }
  render();
}

function onEvent(kind, data) {
  switch (kind) {
    case 'operator':
      if (data.name === bar.name) {
        const device = data.device ? {device: data.device} : {};
        bar.update({state: data.state, reason: data.reason, pending: null, ...device});
      }
      break;
    case 'offer':
      if (!config.operator || !data.operator || data.operator === config.operator) setOffer(data);
      break;
    case 'offer_withdrawn':
      withdraw(data);
      break;
    case 'call':
      setCall(data);
      break;
    case 'callbacks':
      callbacks.count(data.open);
      if (tabs.current === 'callbacks') callbacks.load();
      break;
    default:
      break;
  }
}

const push = new PushStream('/api/desk/events', {
  onEvent,
  onOpen: () => restore(),
  onStatus: (status, retryInMs) => bar.pushStatus(status, retryInMs),
});

// While the push stream is down, poll the desk so that an offer still shows (and a ring still sounds).
setInterval(() => {
  if (!push.connected && document.visibilityState === 'visible') restore();
}, POLL_MS);

// -- start ----------------------------------------------------------------------------------------------------

$('#btn-pop-close').addEventListener('click', closePop);
render();
forms.load();
callbacks.load();
push.start();
