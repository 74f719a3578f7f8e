// Keyboard shortcuts for everything done on every call, and the help overlay (? or the ? button) that lists
// them. Function keys work everywhere (also while typing); the others only outside text fields. None clashes
// with the browser's own reserved keys (Ctrl+W/T/N/R, F5, F11, F12).
import {$, fill, h, t} from './page.js';

export const SHORTCUTS = [
  {keys: ['F2', 'Enter'], action: 'answer', text: 'sc_answer'},
  {keys: ['F3'], action: 'dial', text: 'sc_dial'},
  {keys: ['F4'], action: 'hangup', text: 'sc_hangup'},
  {keys: ['F6'], action: 'hold', text: 'sc_hold'},
  {keys: ['F7'], action: 'mute', text: 'sc_mute'},
  {keys: ['F8'], action: 'dtmf', text: 'sc_dtmf'},
  {keys: ['0–9 * #'], text: 'sc_dtmf_keys'},
  {keys: ['F9'], action: 'transfer', text: 'sc_transfer'},
  {keys: ['F10'], action: 'conf120', text: 'sc_conf_120'},
  {keys: ['Ctrl+F10'], action: 'conf110', text: 'sc_conf_110'},
  {keys: ['Alt+R'], action: 'record', text: 'sc_record'},
  {keys: ['1–9'], text: 'sc_disposition'},
  {keys: ['Ctrl+S', 'Ctrl+Enter'], action: 'save', text: 'sc_save'},
  {keys: ['/'], action: 'search', text: 'sc_search'},
  {keys: ['?'], action: 'help', text: 'sc_help'},
  {keys: ['Esc'], action: 'close', text: 'sc_close'},
];

function editing(target) {
  if (!(target instanceof HTMLElement)) return false;
  return target.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName);
}

/** The action for a key press, or null. `keypadOpen`: digits go to the DTMF keypad. */
export function actionFor(event, {keypadOpen}) {
  const plain = !event.ctrlKey && !event.altKey && !event.metaKey;
  switch (event.key) {
    case 'F2': return plain ? 'answer' : null;
    case 'F3': return plain ? 'dial' : null;
    case 'F4': return plain ? 'hangup' : null;
    case 'F6': return plain ? 'hold' : null;
    case 'F7': return plain ? 'mute' : null;
    case 'F8': return plain ? 'dtmf' : null;
    case 'F9': return plain ? 'transfer' : null;
    case 'F10': return event.ctrlKey && !event.altKey ? 'conf110' : plain ? 'conf120' : null;
    case 'Escape': return 'close';
    default: break;
  }
  if ((event.ctrlKey || event.metaKey) && !event.altKey && (event.key === 's' || event.key === 'S')) return 'save';
  if (event.altKey && !event.ctrlKey && (event.code === 'KeyR')) return 'record';
  if (editing(event.target) || !plain) return null;
  const onControl = event.target instanceof HTMLButtonElement || event.target instanceof HTMLAnchorElement;
  if (event.key === 'Enter' && !onControl) {
    return 'answer';
  }
  if (event.key === '?') return 'help';
  if (event.key === '/') return 'search';
  if (keypadOpen && /^[0-9*#]$/.test(event.key)) return `digit:${event.key}`;
  return null;
}

export class Shortcuts {
  /** @param {{handlers: Record<string, (arg?: string) => boolean|void>, keypadOpen: () => boolean}} options */
  constructor({handlers, keypadOpen}) {
    this.handlers = handlers;
    this.keypadOpen = keypadOpen;
    this.overlay = $('#help');
    this.buildHelp();
    $('#btn-help').addEventListener('click', () => this.toggleHelp());
    this.overlay.addEventListener('click', (event) => {
      if (event.target === this.overlay) this.toggleHelp(false);
    });
    document.addEventListener('keydown', (event) => this.onKey(event));
  }

  onKey(event) {
    if (event.repeat && event.key !== 'Escape') return;
    const action = actionFor(event, {keypadOpen: this.keypadOpen()});
    if (!action) return;
    if (action === 'help') {
      event.preventDefault();
      this.toggleHelp();
      return;
    }
    if (action === 'close' && !this.overlay.hidden) {
      this.toggleHelp(false);
      return;
    }
    const [name, arg] = action.split(':');
    const handler = this.handlers[name];
    if (!handler) return;
    // Function keys and Ctrl+S are always ours (the browser would otherwise save the page, open search…).
    if (event.key.startsWith('F') || name === 'save' || name === 'record') event.preventDefault();
    if (handler(arg) !== false) event.preventDefault();
  }

  buildHelp() {
    const card = {class: 'help-card', role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': 'help-title'};
    fill(this.overlay, h('div', card,
      h('h2', {id: 'help-title'}, t('shortcuts')),
      h('table', {class: 'shortcuts'}, h('tbody', {}, SHORTCUTS.map((s) => h('tr', {},
        h('td', {class: 'keys'}, s.keys.map((k, i) => [i ? ' / ' : '', h('kbd', {}, k)])),
        h('td', {}, t(s.text)))))),
      h('p', {class: 'form-actions'},
        h('button', {type: 'button', class: 'primary', onclick: () => this.toggleHelp(false)}, t('close')))));
  }

  toggleHelp(force) {
    const open = force === undefined ? this.overlay.hidden : force;
    this.overlay.hidden = !open;
    if (open) $('button', this.overlay).focus();
  }
}
