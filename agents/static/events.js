// The push stream (GET /api/desk/events, Server-Sent Events). One EventSource per tab; on any error it is
// closed and reopened after a growing, jittered delay (1 s … 30 s) so that a restarting engine is not hammered.
// `onOpen` runs on every (re)connect, after the listeners are in place: the page then reloads its state
// (GET /api/desk/current, /api/wallboard), so nothing that happened while disconnected is lost.

export const KINDS = ['hello', 'operator', 'offer', 'offer_withdrawn', 'call', 'queue', 'callbacks'];
const MIN_DELAY = 1000;
const MAX_DELAY = 30000;

export class PushStream {
  /**
   * @param {string} url
   * @param {{onEvent: (kind: string, data: any) => void, onOpen?: () => void,
   *          onStatus?: (status: 'connecting'|'connected'|'down', retryInMs?: number) => void}} handlers
   */
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.source = null;
    this.delay = MIN_DELAY;
    this.timer = null;
    this.connected = false;
  }

  start() {
    window.addEventListener('online', () => this.reconnectNow());
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible' && !this.connected) this.reconnectNow();
    });
    this.open();
  }

  open() {
    clearTimeout(this.timer);
    this.timer = null;
    this.status('connecting');
    const source = new EventSource(this.url);
    this.source = source;
    for (const kind of KINDS) {
      source.addEventListener(kind, (event) => {
        let data;
        try {
          data = JSON.parse(event.data);
        } catch {
          return;
        }
        this.handlers.onEvent(kind, data);
      });
    }
    source.onopen = () => {
      this.connected = true;
      this.delay = MIN_DELAY;
      this.status('connected');
      if (this.handlers.onOpen) this.handlers.onOpen();
    };
    source.onerror = () => {
      if (this.source !== source) return;
      source.close();
      this.source = null;
      this.connected = false;
      const wait = Math.round(this.delay * (0.75 + Math.random() * 0.5));
      this.delay = Math.min(this.delay * 2, MAX_DELAY);
      this.status('down', wait);
      this.timer = setTimeout(() => this.open(), wait);
    };
  }

  reconnectNow() {
    if (this.source) return;
    this.delay = MIN_DELAY;
    this.open();
  }

  status(value, retryInMs) {
    if (this.handlers.onStatus) this.handlers.onStatus(value, retryInMs);
  }
}
