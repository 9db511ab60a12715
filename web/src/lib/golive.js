// Going live from the browser: the client side of Strata's WebSocket ingest at `/ingest/ws`.
//
// The protocol: the first message is text `{"key", "mime"}`, then binary messages carry a
// MediaRecorder's bytes in order. A socket carries one recording from its start; a new one on
// the same socket is announced with `{"type":"recording","mime"}` (the server takes it as a
// discontinuity) and `{"type":"stop"}` ends the broadcast cleanly. The server answers with
// `live`, `status` (about every second), `error` (then it closes) and `ended` (after a stop).
// A socket that closes without an `error` or `ended` was lost: the client reconnects with a
// fresh recorder and the server carries on the same broadcast within its reconnect grace.
//
// The pure part (codec choice, the session state, backoff, the back-pressure decision) is
// exported for tests; `Publisher` runs it over a WebSocket and a MediaRecorder, both injected
// so that it runs without a browser too.

/** The recordings Strata takes, best first (VP9 saves bits; MP4 is what Safari records). */
export const MIME_TYPES = [
  'video/webm;codecs=vp9,opus',
  'video/webm;codecs=vp8,opus',
  'video/mp4;codecs=avc1.42E01F,mp4a.40.2',
  'video/webm',
  'video/mp4',
];

/** The first of MIME_TYPES the browser records, or null when it records none of them. */
export function chooseMimeType(isTypeSupported) {
  return (
    MIME_TYPES.find((type) => {
      try {
        return isTypeSupported(type);
      } catch {
        return false;
      }
    }) ?? null
  );
}

/** What the quality menu offers: the camera's ideal size and the recorder's video bitrate. */
export const QUALITIES = [
  { id: '720p', width: 1280, height: 720, videoBitsPerSecond: 2_500_000 },
  { id: '480p', width: 854, height: 480, videoBitsPerSecond: 1_200_000 },
  { id: '360p', width: 640, height: 360, videoBitsPerSecond: 700_000 },
];
export const DEFAULT_QUALITY = '720p';
export const AUDIO_BITS_PER_SECOND = 128_000;
/** How often the recorder hands over bytes: short enough for low latency, long enough that
 * each message carries a useful amount. */
export const TIMESLICE_MS = 300;
/** Where the dashboard leaves a key it is showing for this page: sessionStorage keeps it in
 * this tab only and out of every URL. */
export const KEY_HANDOVER = 'strata.golive.key';

export function qualityById(id) {
  return QUALITIES.find((q) => q.id === id) ?? QUALITIES.find((q) => q.id === DEFAULT_QUALITY);
}

/** The ingest socket's URL on this page's own origin (wss: when the page is https:). */
export function ingestUrl({ protocol, host }) {
  return `${protocol === 'https:' ? 'wss:' : 'ws:'}//${host}/ingest/ws`;
}

export const helloMessage = (key, mime) => JSON.stringify({ key, mime });
export const recordingMessage = (mime) => JSON.stringify({ type: 'recording', mime });
export const STOP_MESSAGE = JSON.stringify({ type: 'stop' });

// ---- the session: what the page shows, driven by the server's messages ----------------------

/** idle → connecting → live ⇄ reconnecting → stopping → ended; error ends it too. */
export function initialSession() {
  return { phase: 'idle', error: null, endedReason: null, live: null, server: null };
}

/** Errors after which trying again later may work (the server is busy or said no for now). */
const RETRYABLE = new Set(['busy', 'refused']);

/** What the page says for each error code; the server's own words follow it. */
const ERROR_TEXT = {
  bad_key: 'This stream key is not valid',
  bad_request: 'Strata did not understand what this page sent',
  unsupported: 'Strata cannot use what this browser records',
  too_large: 'This stream sent more than Strata accepts',
  refused: 'Strata refused this broadcast for now',
  busy: 'Strata is busy',
};

/** The sentence shown for an error: ours for the code, the server's message in brackets. */
export function errorText({ code, message }) {
  const ours = ERROR_TEXT[code];
  if (!ours) return message || 'Strata closed the connection.';
  return message ? `${ours} (${message}).` : `${ours}.`;
}

function number(value) {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

function text(value) {
  return typeof value === 'string' && value !== '' ? value : null;
}

/** Applies one text message from the server; anything not understood leaves it as it was. */
export function receive(session, data) {
  let message;
  try {
    message = JSON.parse(data);
  } catch {
    return session;
  }
  if (!message || typeof message !== 'object') return session;
  switch (message.type) {
    case 'live':
      return {
        ...session,
        // a stop asked for before admission still wins
        phase: session.phase === 'stopping' ? 'stopping' : 'live',
        error: null,
        live: {
          stream: text(message.stream),
          playbackId: text(message.playback_id),
          watchUrl: text(message.watch_url),
          resumed: message.resumed === true,
        },
      };
    case 'status':
      return {
        ...session,
        server: {
          receivedBytes: number(message.received_bytes),
          bitrateKbps: number(message.bitrate_kbps),
          video: text(message.video),
          audio: text(message.audio),
        },
      };
    case 'error': {
      const code = text(message.code) ?? 'error';
      const messageText = text(message.message) ?? '';
      // `ended`: stopped from the dashboard or the API, or taken over by another publisher.
      if (code === 'ended') return { ...session, phase: 'ended', endedReason: messageText || 'The broadcast was stopped.' };
      const error = { code, message: messageText, retry: RETRYABLE.has(code) };
      return { ...session, error, phase: error.retry ? session.phase : 'error' };
    }
    case 'ended':
      return { ...session, phase: 'ended', endedReason: text(message.reason) ?? 'The broadcast ended.' };
    default:
      return session;
  }
}

/** The socket closed: whether to connect again, and what the page shows meanwhile. Only a
 * lost connection or a retryable error reconnects; after a stop nothing does. */
export function afterClose(session) {
  if (session.phase === 'ended' || session.phase === 'error') return { session, reconnect: false };
  if (session.phase === 'stopping') {
    return { session: { ...session, phase: 'ended', endedReason: session.endedReason ?? 'Stopped.' }, reconnect: false };
  }
  return { session: { ...session, phase: 'reconnecting' }, reconnect: true };
}

/** The wait before reconnect attempt `attempt` (0-based): 1 s, 2 s, 4 s, 8 s, then 10 s. */
export function retryDelay(attempt) {
  return Math.min(1000 * 2 ** attempt, 10_000);
}

// ---- back-pressure: what the send queue says about the connection ---------------------------

/** A queue longer than this much time at the target bitrate means the link is too slow. */
export const PRESSURE_SECONDS = 2;
/** The queue never grows past this: over it, the recording is stopped until the queue drains. */
export const HARD_CAP_BYTES = 8 * 1024 * 1024;
/** After a change, the queue gets this long to show its effect before the next one. */
export const CHANGE_COOLDOWN_MS = 5000;
export const MIN_VIDEO_BITS_PER_SECOND = 250_000;

/** The next lower video bitrate: 60 % of this one, not below the floor. */
export function lowerBitrate(videoBitsPerSecond) {
  return Math.max(MIN_VIDEO_BITS_PER_SECOND, Math.round((videoBitsPerSecond * 0.6) / 1000) * 1000);
}

/**
 * What to do about `buffered` bytes queued on the socket, checked every second: 'ok',
 * 'lower' (a new recording at a lower bitrate), 'pause' (over the hard cap: stop recording),
 * 'wait' (paused, still draining) or 'resume' (paused and drained to a second's worth).
 */
export function pressureAction({ buffered, bitsPerSecond, paused, sinceChangeMs, videoBitsPerSecond }) {
  const bytesPerSecond = bitsPerSecond / 8;
  if (paused) return buffered <= bytesPerSecond ? 'resume' : 'wait';
  if (buffered > HARD_CAP_BYTES) return 'pause';
  const slow = buffered > PRESSURE_SECONDS * bytesPerSecond;
  if (slow && sinceChangeMs >= CHANGE_COOLDOWN_MS && videoBitsPerSecond > MIN_VIDEO_BITS_PER_SECOND) return 'lower';
  return 'ok';
}

/** Bits per second that left for the network between two samples `{t, handed, buffered}`:
 * bytes handed to the socket minus those still queued in it. */
export function sentBitrate(before, after) {
  const seconds = (after.t - before.t) / 1000;
  if (!(seconds > 0)) return null;
  const sent = after.handed - after.buffered - (before.handed - before.buffered);
  return Math.max(0, (sent * 8) / seconds);
}

export function formatBytes(bytes) {
  if (bytes == null || !Number.isFinite(bytes)) return '–';
  if (bytes >= 1024 * 1024) return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
  if (bytes >= 1024) return `${Math.round(bytes / 1024)} kB`;
  return `${bytes} B`;
}

/** 0 (silence, -60 dBFS or less) to 1 (full scale): the RMS of audio samples in -1…1. */
export function meterLevel(samples) {
  if (!samples.length) return 0;
  let sum = 0;
  for (const s of samples) sum += s * s;
  const rms = Math.sqrt(sum / samples.length);
  if (rms <= 0) return 0;
  return Math.min(1, Math.max(0, (20 * Math.log10(rms) + 60) / 60));
}

// ---- the publisher: one broadcast over as many sockets as it takes -------------------------

const OPEN = 1;
const TICK_MS = 1000;
/** After `stop`, how long the server gets to answer `ended` before the page closes itself. */
const STOP_TIMEOUT_MS = 5000;

function browserEnv() {
  return {
    WebSocket: globalThis.WebSocket,
    MediaRecorder: globalThis.MediaRecorder,
    setTimeout: globalThis.setTimeout.bind(globalThis),
    clearTimeout: globalThis.clearTimeout.bind(globalThis),
    setInterval: globalThis.setInterval.bind(globalThis),
    clearInterval: globalThis.clearInterval.bind(globalThis),
    now: () => Date.now(),
  };
}

/**
 * Publishes `stream` (a MediaStream) with `key` until stopped. `onChange(snapshot)` gets the
 * session plus the send figures after every change: {phase, error, endedReason, live, server,
 * queuedBytes, sentBitsPerSecond, videoBitsPerSecond, mimeType, warning ('lowered'|'paused'|
 * null), retryAt (ms timestamp of the next attempt, or null)}.
 */
export class Publisher {
  #key;
  #stream;
  #mimeType;
  #url;
  #onChange;
  #env;
  #session = initialSession();
  #videoBitsPerSecond;
  #chosenVideoBitsPerSecond;
  #socket = null;
  #recorder = null;
  /** The previous recorders, still flushing their last bytes (a promise of their `stop`). */
  #retiring = Promise.resolve();
  #switching = false;
  #attempt = 0;
  #retryTimer = null;
  #retryAt = null;
  #stopTimer = null;
  #ticker = null;
  #stopping = false;
  #closed = false;
  #paused = false;
  #lastChange = -Infinity;
  #handed = 0;
  #sample = null;
  #sentBitsPerSecond = null;

  constructor({ key, stream, mimeType, videoBitsPerSecond, url, onChange, env = browserEnv() }) {
    this.#key = key;
    this.#stream = stream;
    this.#mimeType = mimeType;
    this.#videoBitsPerSecond = videoBitsPerSecond;
    this.#chosenVideoBitsPerSecond = videoBitsPerSecond;
    this.#url = url;
    this.#onChange = onChange;
    this.#env = env;
  }

  start() {
    this.#session = { ...this.#session, phase: 'connecting' };
    this.#connect();
  }

  /** Ends the broadcast: the recording's last bytes, then `stop`; never reconnects after. */
  async stop() {
    if (this.#stopping || this.#closed || ['ended', 'error'].includes(this.#session.phase)) return;
    this.#stopping = true;
    this.#env.clearTimeout(this.#retryTimer);
    this.#retryAt = null;
    const socket = this.#socket;
    if (!socket || socket.readyState !== OPEN) {
      // not connected (waiting to retry, or still opening): nothing to tell the server
      this.#retire(false);
      socket?.close();
      this.#socket = null;
      this.#finish();
      this.#session = { ...this.#session, phase: 'ended', endedReason: 'Stopped.' };
      this.#emit();
      return;
    }
    this.#session = { ...this.#session, phase: 'stopping' };
    this.#emit();
    // armed first: neither a recorder that never stops nor a server that never answers keeps
    // the page waiting
    this.#stopTimer = this.#env.setTimeout(() => socket.close(), STOP_TIMEOUT_MS);
    await this.#retire(true);
    if (socket === this.#socket && socket.readyState === OPEN) socket.send(STOP_MESSAGE);
  }

  /** Leaves without a word (the page is going away): the server treats it as a lost
   * connection and ends the broadcast after its reconnect grace. */
  destroy() {
    this.#closed = true;
    this.#retire(false);
    this.#finish();
    this.#socket?.close();
    this.#socket = null;
  }

  #connect() {
    this.#retryAt = null;
    const socket = new this.#env.WebSocket(this.#url);
    this.#socket = socket;
    this.#handed = 0;
    this.#sample = null;
    this.#paused = false;
    socket.onopen = () => {
      if (socket !== this.#socket) return;
      this.#startRecorder(socket, false);
      this.#ticker = this.#env.setInterval(() => this.#tick(socket), TICK_MS);
    };
    socket.onmessage = (event) => {
      if (socket !== this.#socket || typeof event.data !== 'string') return;
      const before = this.#session.phase;
      this.#session = receive(this.#session, event.data);
      if (this.#session.phase === 'live' && before !== 'live') this.#attempt = 0;
      this.#emit();
    };
    socket.onclose = () => {
      if (socket !== this.#socket) return;
      this.#socket = null;
      this.#retire(false);
      this.#env.clearInterval(this.#ticker);
      this.#env.clearTimeout(this.#stopTimer);
      this.#sentBitsPerSecond = null;
      const { session, reconnect } = afterClose(this.#session);
      this.#session = session;
      if (reconnect && !this.#closed) {
        const delay = retryDelay(this.#attempt);
        this.#attempt += 1;
        this.#retryAt = this.#env.now() + delay;
        this.#retryTimer = this.#env.setTimeout(() => this.#connect(), delay);
      }
      this.#emit();
    };
    this.#emit();
  }

  /** A new recorder on `socket`: the hello on a new socket, `recording` on one in use. */
  #startRecorder(socket, announce) {
    let recorder;
    try {
      recorder = new this.#env.MediaRecorder(this.#stream, {
        mimeType: this.#mimeType,
        videoBitsPerSecond: this.#videoBitsPerSecond,
        audioBitsPerSecond: AUDIO_BITS_PER_SECOND,
      });
      recorder.ondataavailable = (event) => this.#send(socket, event.data);
      recorder.onerror = (event) => this.#fail(`Recording failed: ${event.error?.message ?? 'unknown error'}`);
      recorder.start(TIMESLICE_MS);
    } catch (e) {
      this.#fail(`This browser could not start recording: ${e.message}`);
      return;
    }
    this.#recorder = recorder;
    // Its first bytes come in a later task, so this still goes first.
    const mime = recorder.mimeType || this.#mimeType;
    socket.send(announce ? recordingMessage(mime) : helloMessage(this.#key, mime));
  }

  #send(socket, blob) {
    if (socket !== this.#socket || socket.readyState !== OPEN || !blob?.size) return;
    if (socket.bufferedAmount + blob.size > HARD_CAP_BYTES) {
      this.#pause();
      return;
    }
    socket.send(blob);
    this.#handed += blob.size;
  }

  /** Stops the current recorder; `keepTail` sends its last bytes (they precede whatever the
   * socket carries next). Resolves when every retired recorder has stopped. */
  #retire(keepTail) {
    const recorder = this.#recorder;
    this.#recorder = null;
    if (recorder) {
      if (!keepTail) recorder.ondataavailable = null;
      recorder.onerror = null;
      const stopped = new Promise((resolve) => {
        recorder.onstop = resolve;
        if (recorder.state === 'inactive') resolve();
        else recorder.stop();
      });
      this.#retiring = Promise.all([this.#retiring, stopped]);
    }
    return this.#retiring;
  }

  /** A new recording at the current bitrate on the same socket, after the old one's tail. */
  async #restart(socket) {
    this.#switching = true;
    await this.#retire(true);
    this.#switching = false;
    if (socket === this.#socket && socket.readyState === OPEN && !this.#stopping && !this.#paused) {
      this.#startRecorder(socket, true);
    }
  }

  /** Over the hard cap: stop recording, drop what it still has, and wait for the queue. */
  #pause() {
    if (this.#paused) return;
    this.#paused = true;
    this.#videoBitsPerSecond = lowerBitrate(this.#videoBitsPerSecond);
    this.#lastChange = this.#env.now();
    this.#retire(false);
    this.#emit();
  }

  #tick(socket) {
    if (socket !== this.#socket || socket.readyState !== OPEN) return;
    const now = this.#env.now();
    const buffered = socket.bufferedAmount;
    const sample = { t: now, handed: this.#handed, buffered };
    if (this.#sample) this.#sentBitsPerSecond = sentBitrate(this.#sample, sample);
    this.#sample = sample;
    if (!this.#stopping && !this.#switching) {
      const action = pressureAction({
        buffered,
        bitsPerSecond: this.#videoBitsPerSecond + AUDIO_BITS_PER_SECOND,
        paused: this.#paused,
        sinceChangeMs: now - this.#lastChange,
        videoBitsPerSecond: this.#videoBitsPerSecond,
      });
      if (action === 'lower') {
        this.#videoBitsPerSecond = lowerBitrate(this.#videoBitsPerSecond);
        this.#lastChange = now;
        this.#restart(socket);
      } else if (action === 'resume') {
        this.#paused = false;
        this.#lastChange = now;
        this.#startRecorder(socket, true);
      }
    }
    this.#emit();
  }

  /** Something on this side broke: end the broadcast cleanly and show why. */
  #fail(message) {
    this.#retire(false);
    this.#session = { ...this.#session, phase: 'error', error: { code: 'local', message, retry: false } };
    const socket = this.#socket;
    if (socket?.readyState === OPEN) socket.send(STOP_MESSAGE);
    socket?.close();
    this.#emit();
  }

  #finish() {
    this.#env.clearTimeout(this.#retryTimer);
    this.#env.clearTimeout(this.#stopTimer);
    this.#env.clearInterval(this.#ticker);
  }

  #emit() {
    if (this.#closed) return;
    this.#onChange({
      ...this.#session,
      queuedBytes: this.#socket?.readyState === OPEN ? this.#socket.bufferedAmount : 0,
      sentBitsPerSecond: this.#sentBitsPerSecond,
      videoBitsPerSecond: this.#videoBitsPerSecond,
      mimeType: this.#mimeType,
      warning: this.#paused ? 'paused' : this.#videoBitsPerSecond < this.#chosenVideoBitsPerSecond ? 'lowered' : null,
      retryAt: this.#retryAt,
    });
  }
}
