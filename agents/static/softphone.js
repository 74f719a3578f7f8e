// The browser softphone: one WebRTC media leg from this page to the engine, kept up while the page is open and
// the operator's device is "browser". The engine bridges calls to it on answer (and re-binds a running call to a
// new leg after a reload). No trickle ICE: the offer is sent once gathering is complete. ICE servers come from
// the configuration (none by default: a closed network uses host candidates only).
import {post, errorText} from './api.js';
import {t} from './page.js';

const ICE_WAIT_MS = 4000;
const MIN_RETRY = 2000;
const MAX_RETRY = 30000;
const DISCONNECTED_GRACE_MS = 5000;

/** Resolve when ICE gathering is complete, or after `ms` with what has been gathered. */
function gatheringComplete(pc, ms) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === 'complete') done();
    };
    const timer = setTimeout(done, ms);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

export class Softphone {
  /**
   * @param {{audio: HTMLAudioElement, iceServers: RTCIceServer[],
   *          onStatus: (status: 'off'|'connecting'|'connected'|'error', detail?: string) => void}} options
   */
  constructor({audio, iceServers, onStatus}) {
    this.audio = audio;
    this.iceServers = Array.isArray(iceServers) ? iceServers : [];
    this.onStatus = onStatus;
    this.wanted = false;
    this.pc = null;
    this.stream = null;
    this.retryDelay = MIN_RETRY;
    this.retryTimer = null;
    this.graceTimer = null;
    this.state = 'off';
  }

  /** Keep a media leg up (idempotent). */
  start() {
    this.wanted = true;
    if (this.pc || this.retryTimer) return;
    this.connect();
  }

  /** Drop the leg and the microphone (device changed to the desk phone). */
  stop() {
    this.wanted = false;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.closePeer();
    if (this.stream) {
      for (const track of this.stream.getTracks()) track.stop();
      this.stream = null;
    }
    this.status('off');
  }

  /** Reconnect now (the operator clicked the status light). */
  restart() {
    this.wanted = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.retryDelay = MIN_RETRY;
    this.closePeer();
    this.connect();
  }

  status(value, detail) {
    this.state = value;
    this.onStatus(value, detail);
  }

  closePeer() {
    clearTimeout(this.graceTimer);
    if (this.pc) {
      const pc = this.pc;
      this.pc = null;
      pc.onconnectionstatechange = null;
      pc.ontrack = null;
      pc.close();
    }
  }

  async connect() {
    this.status('connecting');
    let pc = null;
    try {
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || !window.RTCPeerConnection) {
        throw new Error(t('sp_unsupported'));
      }
      if (!this.stream) {
        try {
          this.stream = await navigator.mediaDevices.getUserMedia({
            audio: {echoCancellation: true, noiseSuppression: true, autoGainControl: true}, video: false,
          });
        } catch (error) {
          // No microphone or no permission: asking again by itself would not help; the operator retries.
          this.wanted = false;
          this.status('error', t('sp_no_microphone', {message: error.name || String(error)}));
          return;
        }
      }
      if (!this.wanted) return;
      pc = new RTCPeerConnection({iceServers: this.iceServers});
      this.pc = pc;
      for (const track of this.stream.getAudioTracks()) pc.addTrack(track, this.stream);
      pc.ontrack = (event) => {
        this.audio.srcObject = event.streams[0] || new MediaStream([event.track]);
        this.audio.play().catch(() => {});
      };
      pc.onconnectionstatechange = () => this.watch(pc);
      await pc.setLocalDescription(await pc.createOffer());
      await gatheringComplete(pc, ICE_WAIT_MS);
      if (this.pc !== pc) return;
      const answer = await post('/api/desk/webrtc', {type: 'offer', sdp: pc.localDescription.sdp});
      if (this.pc !== pc) return;
      if (!answer || answer.type !== 'answer' || typeof answer.sdp !== 'string') throw new Error(t('sp_bad_answer'));
      await pc.setRemoteDescription({type: 'answer', sdp: answer.sdp});
    } catch (error) {
      if (pc && this.pc !== pc) return;
      this.status('error', errorText(error));
      this.retry();
    }
  }

  watch(pc) {
    if (this.pc !== pc) return;
    const state = pc.connectionState;
    clearTimeout(this.graceTimer);
    if (state === 'connected') {
      this.retryDelay = MIN_RETRY;
      this.status('connected');
      this.audio.play().catch(() => {});
    } else if (state === 'failed' || state === 'closed') {
      this.status('error', t('sp_lost'));
      this.retry();
    } else if (state === 'disconnected') {
      this.status('connecting');
      this.graceTimer = setTimeout(() => {
        if (this.pc === pc && pc.connectionState !== 'connected') this.retry();
      }, DISCONNECTED_GRACE_MS);
    }
  }

  retry() {
    this.closePeer();
    if (!this.wanted || this.retryTimer) return;
    const wait = this.retryDelay;
    this.retryDelay = Math.min(this.retryDelay * 2, MAX_RETRY);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.wanted) this.connect();
    }, wait);
  }
}
