// The ring: a tone made with WebAudio (no sound file), repeated until the offer is answered or withdrawn.
// Browsers only let a page make sound after the user has interacted with it, so the sound is enabled by the
// operator's first click or key press; until then a banner asks for that click.

export class Ringer {
  /** @param {HTMLElement} banner shown until sound is enabled */
  constructor(banner) {
    this.banner = banner;
    this.context = null;
    this.timer = null;
    this.emergency = false;
    this.ringing = false;
    const enable = () => this.enable();
    document.addEventListener('pointerdown', enable, {capture: true});
    document.addEventListener('keydown', enable, {capture: true});
    this.removeListeners = () => {
      document.removeEventListener('pointerdown', enable, {capture: true});
      document.removeEventListener('keydown', enable, {capture: true});
    };
  }

  get enabled() {
    return this.context !== null && this.context.state === 'running';
  }

  enable() {
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return;
    if (!this.context) this.context = new Context();
    this.context.resume().then(() => {
      this.banner.hidden = true;
      this.removeListeners();
      if (this.ringing && !this.timer) this.loop();
    }).catch(() => {});
  }

  /** Ring (emergency: faster and higher) until stop(). */
  start(emergency) {
    if (this.ringing && this.emergency === emergency) return;
    this.stop();
    this.ringing = true;
    this.emergency = Boolean(emergency);
    this.banner.classList.add('ringing');
    if (this.enabled) this.loop();
  }

  stop() {
    this.ringing = false;
    clearInterval(this.timer);
    this.timer = null;
    this.banner.classList.remove('ringing');
  }

  loop() {
    this.burst();
    this.timer = setInterval(() => this.burst(), this.emergency ? 1400 : 3000);
  }

  burst() {
    if (!this.enabled) return;
    const ctx = this.context;
    const start = ctx.currentTime + 0.02;
    const notes = this.emergency ? [988, 740, 988, 740] : [659, 523];
    const step = this.emergency ? 0.22 : 0.4;
    notes.forEach((frequency, i) => this.tone(frequency, start + i * step, step * 0.85));
  }

  tone(frequency, at, length) {
    const ctx = this.context;
    const oscillator = ctx.createOscillator();
    const gain = ctx.createGain();
    oscillator.type = 'sine';
    oscillator.frequency.value = frequency;
    gain.gain.setValueAtTime(0.0001, at);
    gain.gain.exponentialRampToValueAtTime(0.35, at + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, at + length);
    oscillator.connect(gain).connect(ctx.destination);
    oscillator.start(at);
    oscillator.stop(at + length + 0.05);
  }
}
