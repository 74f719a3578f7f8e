// The desk bar (.deskbar): who the operator is, their state (available / a pause reason / logged out; POST
// /api/operators/{name}/state) and where their calls ring (browser softphone or desk phone; POST /api/desk/device),
// with the lights of the softphone (#softphone-status, a click reconnects) and of the push stream (#push-status).
import {errorText, post} from './api.js';
import {$, config, fill, h, label, notify, t} from './page.js';

const BUSY_STATES = ['reserved', 'talking', 'wrap_up']; // shown, never chosen: the engine sets them

export class OperatorBar {
  /** @param {{softphone: import('./softphone.js').Softphone}} options */
  constructor({softphone}) {
    this.softphone = softphone;
    this.op = null; // {name, display_name, state, reason, device, pending}
    this.known = false; // the server has said who (or that nobody) this login's operator is
    const select = $('#state-select');
    fill(select,
      h('option', {value: 'available'}, t('state_available')),
      (config.pause_reasons || []).map((reason) => h('option', {value: `paused:${reason}`},
        `${t('state_paused')} · ${label('reason_', reason)}`)),
      h('option', {value: 'logged_out'}, t('state_logged_out')),
      BUSY_STATES.map((state) => h('option', {value: state, disabled: true, hidden: true}, label('state_', state))));
    select.addEventListener('change', () => this.changeState(select.value));
    $('#device-select').addEventListener('change', (event) => this.changeDevice(event.target.value));
    $('#softphone-status').addEventListener('click', () => {
      if (this.op && this.op.device === 'browser') softphone.restart();
    });
    this.show();
    this.softphoneStatus('off');
  }

  get name() {
    return this.op ? this.op.name : null;
  }

  /** The operator as the server reports it (null: this login is not an operator). */
  set(op) {
    this.op = op ? {...op} : null;
    this.known = true;
    this.show();
  }

  /** A change pushed by the server (`operator` event) or answered by it. */
  update(fields) {
    if (!this.op) return;
    this.op = {...this.op, ...fields};
    this.show();
  }

  show() {
    const op = this.op;
    const select = $('#state-select');
    const device = $('#device-select');
    select.disabled = !op;
    device.disabled = !op;
    if (!op) {
      fill($('#operator-name'), config.user_label || config.user || '');
      fill($('#state-note'), this.known || !config.operator ? t('not_an_operator') : t('loading'));
      select.value = '';
      this.softphone.stop();
      return;
    }
    fill($('#operator-name'), op.display_name || config.operator_label || op.name);
    let value = op.state;
    if (op.state === 'paused') {
      value = `paused:${op.reason || 'break'}`;
      if (![...select.options].some((o) => o.value === value)) {
        select.append(h('option', {value}, `${t('state_paused')} · ${label('reason_', op.reason)}`));
      }
    }
    for (const option of select.options) {
      if (BUSY_STATES.includes(option.value)) option.hidden = option.value !== op.state;
    }
    select.value = value;
    select.dataset.state = op.state;
    fill($('#state-note'), op.pending ? t('state_pending', {state: label('state_', op.pending)}) : '');
    device.value = op.device === 'browser' ? 'browser' : 'phone';
    if (device.value === 'browser') this.softphone.start();
    else this.softphone.stop();
  }

  async changeState(value) {
    if (!this.op) return;
    const [state, reason] = value.split(':');
    try {
      const answer = await post(`/api/operators/${encodeURIComponent(this.op.name)}/state`,
        reason ? {state, reason} : {state});
      const pending = answer.pending || null; // during a call the change waits for its end
      this.op = {...this.op, state: answer.state || state, pending,
        reason: pending ? this.op.reason : reason || null};
    } catch (error) {
      notify(errorText(error), 'error');
    }
    this.show();
  }

  async changeDevice(device) {
    if (!this.op) return;
    try {
      await post('/api/desk/device', {device});
      this.op = {...this.op, device};
    } catch (error) {
      notify(errorText(error), 'error');
    }
    this.show();
  }

  softphoneStatus(status, detail) {
    const light = $('#softphone-status');
    const browser = this.op && this.op.device === 'browser';
    const text = status === 'off' && !browser ? t('sp_desk_phone') : label('sp_', status);
    light.dataset.state = status;
    light.title = detail || text;
    fill(light, text);
  }

  pushStatus(status, retryInMs) {
    const light = $('#push-status');
    light.dataset.state = status;
    fill(light, label('push_', status));
    light.title = status === 'down' ? t('push_retry', {seconds: Math.ceil((retryInMs || 0) / 1000)}) : '';
  }
}
