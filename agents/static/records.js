// The service-record form (#record-form) and the work-order form (#work-order-form), shown during and after a
// call. Disposition codes, work-order types and assignees come from GET /api/dispositions. Keys 1–9 pick a
// disposition while the record form has focus (outside the notes); Ctrl+S saves (see shortcuts.js).
import {errorText, get, post} from './api.js';
import {$, fill, h, items, notify, t} from './page.js';

/** A code list entry as {value, text}: the API may give plain strings or objects with a code and a label. */
function option(entry) {
  if (typeof entry === 'string') return {value: entry, text: entry};
  const value = entry.code ?? entry.value ?? entry.name ?? entry.id ?? '';
  return {value: String(value), text: String(entry.label ?? entry.text ?? entry.name ?? value)};
}

function localInput(date) {
  const pad = (n) => String(n).padStart(2, '0');
  const day = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
  return `${day}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

/** "2024-05-01T14:00" (local, from datetime-local) as ISO-8601 with this browser's offset. */
function isoWithOffset(value) {
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return null;
  const offset = -date.getTimezoneOffset();
  const sign = offset >= 0 ? '+' : '-';
  const pad = (n) => String(Math.floor(Math.abs(n))).padStart(2, '0');
  return `${value.length === 16 ? `${value}:00` : value}${sign}${pad(offset / 60)}:${pad(offset % 60)}`;
}

export class RecordForms {
  /**
   * @param {{context: () => {call_id: string|null, elder_id: number|null, number: string|null, label: string},
   *          onSaved: (kind: 'record'|'work_order', context: object) => void}} options
   */
  constructor({context, onSaved}) {
    this.context = context;
    this.onSaved = onSaved;
    this.form = $('#record-form');
    this.disposition = $('#record-disposition');
    this.notes = $('#record-notes');
    this.orderForm = $('#work-order-form');
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.save();
    });
    this.orderForm.addEventListener('submit', (event) => {
      event.preventDefault();
      this.saveWorkOrder();
    });
    this.form.addEventListener('keydown', (event) => this.quickPick(event));
    this.notes.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        this.save();
      }
    });
    this.saving = false;
    this.shownCallId = undefined;
  }

  async load() {
    let data;
    try {
      data = await get('/api/dispositions');
    } catch (error) {
      fill($('#record-status'), t('dispositions_unavailable', {message: errorText(error)}));
      $('#record-status').className = 'form-status error';
      return;
    }
    const dispositions = items(data, 'dispositions', 'codes').map(option);
    fill(this.disposition, h('option', {value: ''}, t('choose')),
      dispositions.map((d, i) => h('option', {value: d.value}, i < 9 ? `${i + 1}. ${d.text}` : d.text)));
    const types = items(data && data.work_order_types !== undefined ? data.work_order_types : [], 'types').map(option);
    fill($('#wo-type'), h('option', {value: ''}, t('choose')), types.map((o) => h('option', {value: o.value}, o.text)));
    const assignees = items(data && data.assignees !== undefined ? data.assignees : []).map(option);
    fill($('#wo-assignees'), assignees.map((o) => h('option', {value: o.value}, o.text)));
  }

  /** Show what the forms are about (the current or last call, the elder). */
  refresh() {
    const ctx = this.context();
    if (ctx.call_id !== this.shownCallId) { // another call: the last one's "saved" lines go
      this.shownCallId = ctx.call_id;
      this.status('#record-status', '', '');
      this.status('#wo-status', '', '');
    }
    fill($('#record-target'), ctx.label || t('record_no_call'));
    const canOrder = ctx.elder_id !== null && ctx.elder_id !== undefined;
    for (const field of this.orderForm.elements) field.disabled = !canOrder;
    fill($('#wo-hint'), canOrder ? '' : t('work_order_needs_elder'));
    const due = $('#wo-due');
    if (!due.value) due.value = localInput(new Date(Date.now() + 2 * 3600 * 1000));
  }

  quickPick(event) {
    if (event.target === this.notes || event.ctrlKey || event.altKey || event.metaKey) return;
    if (!/^[1-9]$/.test(event.key)) return;
    const index = Number(event.key);
    if (index < this.disposition.options.length) {
      event.preventDefault();
      this.disposition.selectedIndex = index;
      this.notes.focus();
    }
  }

  focus() {
    this.disposition.focus();
  }

  status(id, message, kind) {
    const node = $(id);
    node.className = `form-status ${kind}`;
    fill(node, message);
  }

  async save() {
    if (this.saving) return;
    const ctx = this.context();
    if (!this.disposition.value) {
      this.status('#record-status', t('choose_disposition'), 'error');
      this.disposition.focus();
      return;
    }
    const body = {disposition: this.disposition.value, notes: this.notes.value.trim()};
    if (ctx.call_id) body.call_id = ctx.call_id;
    if (ctx.elder_id !== null && ctx.elder_id !== undefined) body.elder_id = ctx.elder_id;
    if (ctx.number && !body.elder_id) body.number = ctx.number;
    this.saving = true;
    $('#btn-save-record').disabled = true;
    try {
      const answer = await post('/api/records', body);
      const saved = t('record_saved', {id: answer && answer.id !== undefined ? answer.id : ''});
      this.status('#record-status', saved, 'ok');
      notify(saved, 'ok');
      this.notes.value = '';
      this.disposition.value = '';
      this.onSaved('record', ctx);
    } catch (error) {
      this.status('#record-status', errorText(error), 'error');
    } finally {
      this.saving = false;
      $('#btn-save-record').disabled = false;
    }
  }

  async saveWorkOrder() {
    const ctx = this.context();
    const data = Object.fromEntries(new FormData(this.orderForm).entries());
    if (!data.type) {
      this.status('#wo-status', t('choose_type'), 'error');
      return;
    }
    const due = isoWithOffset(data.due_at || '');
    const body = {elder_id: ctx.elder_id, type: data.type, assignee: (data.assignee || '').trim(),
      due_at: due, notes: (data.notes || '').trim()};
    if (ctx.call_id) body.call_id = ctx.call_id;
    try {
      const answer = await post('/api/work-orders', body);
      this.status('#wo-status', t('work_order_saved', {id: answer && answer.id !== undefined ? answer.id : ''}), 'ok');
      this.orderForm.reset();
      this.refresh();
      this.onSaved('work_order', ctx);
    } catch (error) {
      this.status('#wo-status', errorText(error), 'error');
    }
  }
}
