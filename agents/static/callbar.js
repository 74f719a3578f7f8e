// The call bar (#callbar): what the operator's line is doing and the buttons for it — answer/decline while an
// offer rings; hang up, hold, mute, keypad (DTMF), blind transfer and three-way calls while talking; one drop
// button per added party; while idle, a number to call (#dial-number, #btn-dial); while a call the operator placed
// rings ("dialling": the desk phone, then the elder's phone), "calling…" and a cancel (the hang-up button). It only
// shows state and forwards clicks to `actions`; desk.js owns the state.
import {$, config, duration, fill, h, millis, t} from './page.js';

const DTMF_KEYS = ['1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '0', '#'];

export class CallBar {
  /**
   * @param {{answer: Function, decline: Function, hangup: Function, hold: Function, mute: Function, dtmf: Function,
   *          transfer: Function, conference: Function, dropParty: Function, dial: Function}} actions
   */
  constructor(actions) {
    this.actions = actions;
    this.offer = null;
    this.call = null;
    this.placing = false;
    this.prefilled = null; // {number, elderId}: what prefill() put in #dial-number
    this.since = NaN;
    this.root = $('#callbar');
    this.buildKeypad();
    this.buildTransfer();
    const on = (id, fn) => $(id).addEventListener('click', fn);
    on('#btn-answer', () => this.answer());
    on('#btn-decline', () => this.actions.decline());
    on('#btn-hangup', () => this.hangup());
    on('#btn-hold', () => this.toggleHold());
    on('#btn-mute', () => this.toggleMute());
    on('#btn-dtmf', () => this.toggleKeypad());
    on('#btn-transfer', () => this.toggleTransfer());
    on('#btn-conf-120', () => this.conference({service: '120'}));
    on('#btn-conf-110', () => this.conference({service: '110'}));
    $('#dial-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.dialTyped();
    });
    setInterval(() => this.tick(), 500);
    this.update(null, null);
  }

  get talking() {
    return Boolean(this.call && (this.call.state === 'talking' || this.call.state === 'held'));
  }

  get ringing() {
    return Boolean(this.offer && !this.talking);
  }

  /**
   * Show the line: `offer` {offer_id, call_id, pop} ringing, `call` CALL (docs/desktop.md), either may be null. An
   * offer without an offer_id, or a call that is not talking, is a call the operator places: "dialling".
   */
  update(offer, call) {
    this.offer = offer;
    this.call = call && call.state !== 'ended' ? call : null;
    const talking = this.talking;
    const ringing = this.ringing;
    const answerable = Boolean(offer && offer.offer_id !== null && offer.offer_id !== undefined);
    this.placing = !talking && Boolean(this.call || (offer && !answerable));
    const popCall = (offer && offer.pop && offer.pop.call) || (call && call.pop && call.pop.call) || {};
    let mode = 'idle';
    if (talking) mode = this.call.held ? 'held' : 'talking';
    else if (this.placing) mode = 'dialling';
    else if (ringing) mode = 'ringing';
    this.root.dataset.mode = mode;
    this.root.classList.toggle('emergency', Boolean(popCall.emergency) && mode !== 'idle');
    fill($('#call-state'), t(`line_${mode}`));
    const firstParty = this.call && Array.isArray(this.call.parties) ? this.call.parties[0] : null;
    const who = popCall.caller_number || (firstParty && firstParty.number) || '';
    fill($('#call-caller'), who);
    this.since = talking || this.call ? millis(this.call.started_at) : ringing ? millis(popCall.offered_at) : NaN;
    if (Number.isNaN(this.since) && mode !== 'idle') {
      this.sinceFallback = this.sinceFallback || Date.now();
      this.since = this.sinceFallback;
    }
    if (mode === 'idle') this.sinceFallback = null;

    $('#btn-answer').disabled = !ringing || !answerable;
    $('#btn-decline').disabled = !ringing || this.placing;
    $('#btn-answer').hidden = mode !== 'ringing'; // idle: the number to call takes their place
    $('#btn-decline').hidden = mode !== 'ringing';
    $('#btn-hangup').disabled = !(talking || this.placing);
    fill($('#btn-hangup .btn-text'), this.placing ? t('cancel_call') : t('hangup'));
    const canDial = mode === 'idle' && Boolean(config.operator);
    $('#dial-form').hidden = mode !== 'idle';
    $('#dial-number').disabled = !canDial;
    $('#btn-dial').disabled = !canDial;
    for (const id of ['#btn-hold', '#btn-mute', '#btn-dtmf', '#btn-transfer', '#btn-conf-120', '#btn-conf-110']) {
      $(id).disabled = !talking;
    }
    const held = Boolean(talking && this.call.held);
    const muted = Boolean(talking && this.call.muted);
    $('#btn-hold').setAttribute('aria-pressed', String(held));
    $('#btn-mute').setAttribute('aria-pressed', String(muted));
    fill($('#btn-hold .btn-text'), held ? t('resume') : t('hold'));
    fill($('#btn-mute .btn-text'), muted ? t('unmute') : t('mute'));
    if (!talking) {
      this.toggleKeypad(false);
      this.toggleTransfer(false);
    }
    this.renderParties();
    this.tick();
  }

  renderParties() {
    const list = $('#call-parties');
    const call = this.talking ? this.call : null;
    const parties = call && Array.isArray(call.parties) ? call.parties.filter((p) => p.call_id !== call.call_id) : [];
    fill(list, parties.map((party) => h('li', {class: 'party'},
      h('span', {class: 'party-name'}, party.label || party.number || party.call_id),
      party.label && party.number && party.label !== party.number
        ? h('span', {class: 'mono muted'}, ` ${party.number}`) : '',
      party.state === 'ringing' ? h('span', {class: 'muted'}, ` ${t('party_ringing')}`) : '',
      h('button', {type: 'button', class: 'drop', dataset: {partyCallId: party.call_id},
        title: t('drop_party_title', {name: party.label || party.number || ''}),
        onclick: () => this.actions.dropParty(party.call_id)}, t('drop_party')))));
    list.hidden = parties.length === 0;
  }

  tick() {
    const timer = $('#call-timer');
    if (Number.isNaN(this.since) || this.root.dataset.mode === 'idle') {
      timer.textContent = '0:00';
      return;
    }
    timer.textContent = duration((Date.now() - this.since) / 1000);
  }

  answer() {
    const answerable = this.ringing && this.offer.offer_id !== null && this.offer.offer_id !== undefined;
    if (answerable) this.actions.answer(this.offer);
  }

  hangup() {
    if (this.talking || this.placing) this.actions.hangup();
    else if (this.ringing) this.actions.decline();
  }

  // -- placing a call ----------------------------------------------------------------------------------------

  /** Put a number (e.g. the elder's on screen) in #dial-number and focus it: Enter dials. False when idle is not. */
  prefill(number, elderId) {
    const input = $('#dial-number');
    if (input.disabled) return false;
    if (number) {
      input.value = number;
      this.prefilled = {number, elderId};
    }
    input.focus();
    input.select();
    return true;
  }

  dialTyped() {
    const input = $('#dial-number');
    const number = input.value.trim();
    if (!number || input.disabled) {
      input.focus();
      return;
    }
    const elderId = this.prefilled && this.prefilled.number === number ? this.prefilled.elderId : null;
    this.actions.dial(number, elderId);
  }

  toggleHold() {
    if (this.talking) this.actions.hold(!this.call.held);
  }

  toggleMute() {
    if (this.talking) this.actions.mute(!this.call.muted);
  }

  conference(body) {
    if (this.talking) this.actions.conference(body);
  }

  // -- keypad ---------------------------------------------------------------------------------------------

  buildKeypad() {
    const pad = $('#dtmf-pad');
    const sent = h('output', {id: 'dtmf-sent', class: 'mono'});
    fill(pad, sent, h('div', {class: 'keys'}, DTMF_KEYS.map((key) => h('button', {
      type: 'button', class: 'key mono', dataset: {dtmf: key}, onclick: () => this.sendDigit(key),
    }, key))), h('p', {class: 'muted small'}, t('dtmf_hint')));
  }

  get keypadOpen() {
    return !$('#dtmf-pad').hidden;
  }

  toggleKeypad(force) {
    const pad = $('#dtmf-pad');
    const open = force === undefined ? pad.hidden && this.talking : force && this.talking;
    pad.hidden = !open;
    $('#btn-dtmf').setAttribute('aria-expanded', String(open));
    if (open) {
      this.toggleTransfer(false);
      fill($('#dtmf-sent'));
    }
  }

  sendDigit(key) {
    if (!this.talking || !DTMF_KEYS.includes(key)) return;
    const sent = $('#dtmf-sent');
    sent.textContent = (sent.textContent + key).slice(-24);
    this.actions.dtmf(key);
  }

  // -- transfer and three-way ------------------------------------------------------------------------------

  buildTransfer() {
    const panel = $('#transfer-panel');
    const number = h('input', {id: 'transfer-number', class: 'mono', inputmode: 'tel', maxlength: 32,
      placeholder: t('number'), autocomplete: 'off'});
    const queue = h('select', {id: 'transfer-queue'},
      (config.queues || []).map((q) => h('option', {value: q.name}, q.label)));
    const operator = h('select', {id: 'transfer-operator'}, (config.operators || [])
      .filter((o) => o.name !== config.operator).map((o) => h('option', {value: o.name}, o.label)));
    const numberValue = () => number.value.replace(/[\s-]/g, '');
    fill(panel,
      h('div', {class: 'row'}, h('label', {for: 'transfer-number'}, t('to_number')), number,
        h('button', {type: 'button', id: 'btn-transfer-number',
          onclick: () => this.actions.transfer({number: numberValue()})},
          t('transfer')),
        h('button', {type: 'button', id: 'btn-conf-number', onclick: () => this.conference({number: numberValue()})},
          t('add_party'))),
      h('div', {class: 'row'}, h('label', {for: 'transfer-queue'}, t('to_queue')), queue,
        h('button', {type: 'button', id: 'btn-transfer-queue',
          onclick: () => this.actions.transfer({queue: queue.value})},
          t('transfer'))),
      h('div', {class: 'row'}, h('label', {for: 'transfer-operator'}, t('to_operator')), operator,
        h('button', {type: 'button', id: 'btn-transfer-operator', disabled: operator.options.length === 0,
          onclick: () => this.actions.transfer({operator: operator.value})}, t('transfer'))));
    number.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') {
        event.preventDefault();
        this.actions.transfer({number: numberValue()});
      }
    });
  }

  toggleTransfer(force) {
    const panel = $('#transfer-panel');
    const open = force === undefined ? panel.hidden && this.talking : force && this.talking;
    panel.hidden = !open;
    $('#btn-transfer').setAttribute('aria-expanded', String(open));
    if (open) {
      this.toggleKeypad(false);
      $('#transfer-number').focus();
    }
  }
}
