import { describe, expect, test } from 'vitest';
import {
  HARD_CAP_BYTES,
  MIN_VIDEO_BITS_PER_SECOND,
  Publisher,
  afterClose,
  chooseMimeType,
  errorText,
  ingestUrl,
  initialSession,
  lowerBitrate,
  meterLevel,
  pressureAction,
  receive,
  retryDelay,
  sentBitrate,
} from '../../src/lib/golive.js';
import { route } from '../../src/lib/route.js';

describe('the recording format', () => {
  test('the first type the browser records wins', () => {
    expect(chooseMimeType(() => true)).toBe('video/webm;codecs=vp9,opus');
    expect(chooseMimeType((t) => t !== 'video/webm;codecs=vp9,opus')).toBe('video/webm;codecs=vp8,opus');
    // Safari records MP4 only
    expect(chooseMimeType((t) => t.startsWith('video/mp4'))).toBe('video/mp4;codecs=avc1.42E01F,mp4a.40.2');
    expect(chooseMimeType((t) => t === 'video/mp4')).toBe('video/mp4');
  });

  test('nothing usable (or a browser that throws) gives null', () => {
    expect(chooseMimeType(() => false)).toBeNull();
    expect(
      chooseMimeType(() => {
        throw new Error('no');
      }),
    ).toBeNull();
  });
});

test('the socket is on the page origin, wss: under https:', () => {
  expect(ingestUrl({ protocol: 'http:', host: '127.0.0.1:8080' })).toBe('ws://127.0.0.1:8080/ingest/ws');
  expect(ingestUrl({ protocol: 'https:', host: 'live.example.com' })).toBe('wss://live.example.com/ingest/ws');
});

test('/golive is the Go live page', () => {
  expect(route('/golive')).toEqual({ page: 'golive' });
  expect(route('/golive/')).toEqual({ page: 'golive' });
  expect(route('/golive/x').page).toBe('missing');
  expect(route('/clip/abc123')).toEqual({ page: 'clip', id: 'abc123' });
  expect(route('/replay/abc123')).toEqual({ page: 'replay', id: 'abc123' });
  expect(route('/clip/a/b').page).toBe('missing');
});

describe('server messages', () => {
  const connecting = { ...initialSession(), phase: 'connecting' };
  const message = (m) => JSON.stringify(m);

  test('`live` admits: the page shows the stream and where viewers watch', () => {
    const s = receive(connecting, message({ type: 'live', stream: 'show', playback_id: 'p1', watch_url: '/watch/p1', resumed: false }));
    expect(s.phase).toBe('live');
    expect(s.live).toEqual({ stream: 'show', playbackId: 'p1', watchUrl: '/watch/p1', resumed: false });
  });

  test('`status` is read tolerantly: missing or odd fields are unknown, not errors', () => {
    const s = receive(connecting, message({ type: 'status', received_bytes: 1234, bitrate_kbps: 'fast', video: 'vp9 1280x720' }));
    expect(s.server).toEqual({ receivedBytes: 1234, bitrateKbps: null, video: 'vp9 1280x720', audio: null });
    expect(s.phase).toBe('connecting');
  });

  test('a wrong key is an error that says so and is not retried', () => {
    const s = receive(connecting, message({ type: 'error', code: 'bad_key', message: 'unknown stream key' }));
    expect(s.phase).toBe('error');
    expect(errorText(s.error)).toBe('This stream key is not valid (unknown stream key).');
    expect(errorText({ code: 'bad_key', message: '' })).toBe('This stream key is not valid.');
    expect(afterClose(s)).toEqual({ session: s, reconnect: false });
  });

  test('busy and refused are retried; their message stays shown meanwhile', () => {
    for (const code of ['busy', 'refused']) {
      const s = receive(connecting, message({ type: 'error', code, message: 'try later' }));
      expect(s.error).toMatchObject({ code, retry: true });
      const closed = afterClose(s);
      expect(closed.reconnect).toBe(true);
      expect(closed.session.phase).toBe('reconnecting');
      expect(errorText(closed.session.error)).toContain('try later');
    }
  });

  test('other error codes end it with the server words', () => {
    for (const code of ['bad_request', 'unsupported', 'too_large', 'something_new']) {
      const s = receive(connecting, message({ type: 'error', code, message: 'because' }));
      expect(s.phase).toBe('error');
      expect(errorText(s.error)).toContain('because');
      expect(afterClose(s).reconnect).toBe(false);
    }
  });

  test('stopped from the dashboard (error `ended`) or after a stop (`ended`): ended, no reconnect', () => {
    const live = receive(connecting, message({ type: 'live', stream: 's', playback_id: 'p', watch_url: '/watch/p' }));
    const stopped = receive(live, message({ type: 'error', code: 'ended', message: 'stopped by an operator' }));
    expect(stopped).toMatchObject({ phase: 'ended', endedReason: 'stopped by an operator', error: null });
    expect(afterClose(stopped).reconnect).toBe(false);
    const ended = receive({ ...live, phase: 'stopping' }, message({ type: 'ended', reason: 'stopped by the publisher' }));
    expect(ended).toMatchObject({ phase: 'ended', endedReason: 'stopped by the publisher' });
    expect(afterClose(ended).reconnect).toBe(false);
  });

  test('a close without a word reconnects, unless the page asked to stop', () => {
    const live = { ...connecting, phase: 'live' };
    expect(afterClose(live)).toEqual({ session: { ...live, phase: 'reconnecting' }, reconnect: true });
    expect(afterClose({ ...live, phase: 'stopping' })).toMatchObject({ session: { phase: 'ended' }, reconnect: false });
  });

  test('`live` arriving after Stop was pressed does not undo the stop', () => {
    const s = receive({ ...connecting, phase: 'stopping' }, message({ type: 'live', stream: 's', playback_id: 'p', watch_url: '/watch/p' }));
    expect(s.phase).toBe('stopping');
  });

  test('what is not JSON or not known changes nothing', () => {
    expect(receive(connecting, 'not json')).toBe(connecting);
    expect(receive(connecting, 'null')).toBe(connecting);
    expect(receive(connecting, message({ type: 'future' }))).toBe(connecting);
  });
});

test('reconnects back off 1, 2, 4, 8 s, then every 10 s', () => {
  expect([0, 1, 2, 3, 4, 5, 9].map(retryDelay)).toEqual([1000, 2000, 4000, 8000, 10000, 10000, 10000]);
});

describe('back-pressure', () => {
  // 1.2 Mbps video + 128 kbps audio: 166 kB a second, so 2 s is 332 kB.
  const base = { bitsPerSecond: 1_328_000, paused: false, sinceChangeMs: 60_000, videoBitsPerSecond: 1_200_000 };

  test('a queue of more than 2 s of the stream lowers the bitrate', () => {
    expect(pressureAction({ ...base, buffered: 100_000 })).toBe('ok');
    expect(pressureAction({ ...base, buffered: 340_000 })).toBe('lower');
  });

  test('not again before the last change had time to work, nor below the floor', () => {
    expect(pressureAction({ ...base, buffered: 340_000, sinceChangeMs: 2000 })).toBe('ok');
    expect(pressureAction({ ...base, buffered: 340_000, videoBitsPerSecond: MIN_VIDEO_BITS_PER_SECOND })).toBe('ok');
  });

  test('over the hard cap recording pauses, and resumes once a second of it is left', () => {
    expect(pressureAction({ ...base, buffered: HARD_CAP_BYTES + 1, sinceChangeMs: 0 })).toBe('pause');
    expect(pressureAction({ ...base, paused: true, buffered: 500_000 })).toBe('wait');
    expect(pressureAction({ ...base, paused: true, buffered: 100_000 })).toBe('resume');
  });

  test('each step takes 40 % off, down to the floor', () => {
    expect(lowerBitrate(2_500_000)).toBe(1_500_000);
    expect(lowerBitrate(1_500_000)).toBe(900_000);
    expect(lowerBitrate(300_000)).toBe(MIN_VIDEO_BITS_PER_SECOND);
  });

  test('the sent bitrate counts what left the queue, not what was put in', () => {
    const before = { t: 0, handed: 1_000_000, buffered: 200_000 };
    expect(sentBitrate(before, { t: 1000, handed: 1_150_000, buffered: 250_000 })).toBe(800_000);
    expect(sentBitrate(before, before)).toBeNull();
  });
});

test('the meter reads silence as 0 and full scale as 1', () => {
  expect(meterLevel(new Float32Array(256))).toBe(0);
  expect(meterLevel(new Float32Array(256).fill(1))).toBe(1);
  // -20 dBFS RMS is two thirds up a 60 dB scale
  expect(meterLevel(new Float32Array(256).fill(0.1))).toBeCloseTo(2 / 3, 5);
});

// ---- the publisher over a fake socket, recorder and clock -----------------------------------

function fakeEnv() {
  let now = 0;
  let nextId = 1;
  const timers = new Map();
  const sockets = [];
  const recorders = [];

  class FakeSocket {
    readyState = 0;
    bufferedAmount = 0;
    sent = [];
    constructor(url) {
      this.url = url;
      sockets.push(this);
    }
    send(data) {
      this.sent.push(data);
    }
    close() {
      if (this.readyState === 3) return;
      this.readyState = 3;
      queueMicrotask(() => this.onclose?.({}));
    }
    open() {
      this.readyState = 1;
      this.onopen?.({});
    }
    message(m) {
      this.onmessage?.({ data: JSON.stringify(m) });
    }
    /** What went out: text as parsed JSON, blobs as their id. */
    get log() {
      return this.sent.map((d) => (typeof d === 'string' ? JSON.parse(d) : d.id));
    }
  }

  class FakeRecorder {
    state = 'inactive';
    chunks = 0;
    constructor(stream, options) {
      this.options = options;
      this.mimeType = options.mimeType;
      this.n = recorders.length;
      recorders.push(this);
    }
    start(timeslice) {
      this.timeslice = timeslice;
      this.state = 'recording';
    }
    /** One `dataavailable` of `size` bytes, named `r<recorder>.<chunk>`. */
    emit(size = 100) {
      this.ondataavailable?.({ data: { size, id: `r${this.n}.${this.chunks++}` } });
    }
    stop() {
      this.state = 'inactive';
      // like a browser: the last bytes, then `stop`, in later tasks
      queueMicrotask(() => {
        this.emit(10);
        this.onstop?.();
      });
    }
  }

  const schedule = (fn, ms, every) => {
    const id = nextId++;
    timers.set(id, { fn, at: now + ms, every });
    return id;
  };
  const env = {
    WebSocket: FakeSocket,
    MediaRecorder: FakeRecorder,
    setTimeout: (fn, ms) => schedule(fn, ms, 0),
    setInterval: (fn, ms) => schedule(fn, ms, ms),
    clearTimeout: (id) => timers.delete(id),
    clearInterval: (id) => timers.delete(id),
    now: () => now,
  };
  /** Moves the clock on by `ms`, running what falls due in order. */
  async function advance(ms) {
    const end = now + ms;
    for (;;) {
      const due = [...timers.entries()].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      const [id, timer] = due;
      now = timer.at;
      if (timer.every) timer.at += timer.every;
      else timers.delete(id);
      timer.fn();
      await flush();
    }
    now = end;
  }
  return { env, sockets, recorders, advance };
}

const flush = () => new Promise((resolve) => setTimeout(resolve, 0));

function publisher(fake, videoBitsPerSecond = 1_200_000) {
  const snapshots = [];
  const p = new Publisher({
    key: 'sk_secret',
    stream: {},
    mimeType: 'video/webm;codecs=vp9,opus',
    videoBitsPerSecond,
    url: 'ws://strata/ingest/ws',
    onChange: (s) => snapshots.push(s),
    env: fake.env,
  });
  return { p, last: () => snapshots.at(-1) };
}

const LIVE = { type: 'live', stream: 'show', playback_id: 'p1', watch_url: '/watch/p1', resumed: false };

describe('Publisher', () => {
  test('hello, the recording in order, live, then a clean stop that is not followed by a reconnect', async () => {
    const fake = fakeEnv();
    const { p, last } = publisher(fake);
    p.start();
    expect(last().phase).toBe('connecting');
    const [socket] = fake.sockets;
    expect(socket.url).toBe('ws://strata/ingest/ws');
    socket.open();
    const [recorder] = fake.recorders;
    expect(recorder.timeslice).toBe(300);
    expect(recorder.options).toMatchObject({ mimeType: 'video/webm;codecs=vp9,opus', videoBitsPerSecond: 1_200_000 });
    recorder.emit();
    recorder.emit();
    socket.message(LIVE);
    expect(last()).toMatchObject({ phase: 'live', live: { watchUrl: '/watch/p1' } });
    socket.message({ type: 'status', received_bytes: 200, bitrate_kbps: 1300 });
    expect(last().server).toMatchObject({ receivedBytes: 200, bitrateKbps: 1300 });

    p.stop();
    expect(last().phase).toBe('stopping');
    await flush();
    expect(socket.log).toEqual([{ key: 'sk_secret', mime: 'video/webm;codecs=vp9,opus' }, 'r0.0', 'r0.1', 'r0.2', { type: 'stop' }]);
    socket.message({ type: 'ended', reason: 'stopped by the publisher' });
    socket.close();
    await fake.advance(60_000);
    expect(last()).toMatchObject({ phase: 'ended', endedReason: 'stopped by the publisher' });
    expect(fake.sockets).toHaveLength(1);
  });

  test('a lost connection comes back on a new socket with a new recorder, backing off while it fails', async () => {
    const fake = fakeEnv();
    const { p, last } = publisher(fake);
    p.start();
    fake.sockets[0].open();
    fake.sockets[0].message(LIVE);
    fake.sockets[0].close();
    await flush();
    expect(last().phase).toBe('reconnecting');
    expect(fake.recorders[0].state).toBe('inactive');
    await fake.advance(999);
    expect(fake.sockets).toHaveLength(1);
    await fake.advance(1);
    expect(fake.sockets).toHaveLength(2);
    // the server is down: the next tries wait 2 s, then 4 s
    fake.sockets[1].close();
    await flush();
    await fake.advance(1999);
    expect(fake.sockets).toHaveLength(2);
    await fake.advance(1);
    fake.sockets[2].close();
    await flush();
    await fake.advance(3999);
    expect(fake.sockets).toHaveLength(3);
    await fake.advance(1);
    const socket = fake.sockets[3];
    socket.open();
    fake.recorders[1].emit();
    expect(socket.log).toEqual([{ key: 'sk_secret', mime: 'video/webm;codecs=vp9,opus' }, 'r1.0']);
    socket.message({ ...LIVE, resumed: true });
    expect(last()).toMatchObject({ phase: 'live', live: { resumed: true } });
    // live again: the next loss starts over at 1 s
    socket.close();
    await flush();
    await fake.advance(1000);
    expect(fake.sockets).toHaveLength(5);
    p.destroy();
  });

  test('a wrong key ends it: the error is shown and nothing reconnects', async () => {
    const fake = fakeEnv();
    const { p, last } = publisher(fake);
    p.start();
    fake.sockets[0].open();
    fake.sockets[0].message({ type: 'error', code: 'bad_key', message: 'unknown stream key' });
    fake.sockets[0].close();
    await fake.advance(60_000);
    expect(last().phase).toBe('error');
    expect(errorText(last().error)).toContain('not valid');
    expect(fake.sockets).toHaveLength(1);
    p.stop();
    expect(last().phase).toBe('error');
  });

  test('Stop while waiting to reconnect ends it at once', async () => {
    const fake = fakeEnv();
    const { p, last } = publisher(fake);
    p.start();
    fake.sockets[0].open();
    fake.sockets[0].close();
    await flush();
    p.stop();
    await fake.advance(60_000);
    expect(last().phase).toBe('ended');
    expect(fake.sockets).toHaveLength(1);
  });

  test('without an answer to `stop` the page closes the socket itself', async () => {
    const fake = fakeEnv();
    const { p, last } = publisher(fake);
    p.start();
    fake.sockets[0].open();
    p.stop();
    await flush();
    await fake.advance(5000);
    await flush();
    expect(fake.sockets[0].readyState).toBe(3);
    expect(last().phase).toBe('ended');
  });

  test('a slow connection: a new recording at a lower bitrate on the same socket, announced first', async () => {
    const fake = fakeEnv();
    const { p, last } = publisher(fake);
    p.start();
    const socket = fake.sockets[0];
    socket.open();
    socket.message(LIVE);
    fake.recorders[0].emit();
    await fake.advance(6000);
    expect(last().warning).toBeNull();
    socket.bufferedAmount = 400_000;
    await fake.advance(1000);
    expect(last()).toMatchObject({ warning: 'lowered', videoBitsPerSecond: 720_000, queuedBytes: 400_000 });
    const [old, next] = fake.recorders;
    expect(old.state).toBe('inactive');
    expect(next.options.videoBitsPerSecond).toBe(720_000);
    next.emit();
    expect(socket.log.slice(1)).toEqual(['r0.0', 'r0.1', { type: 'recording', mime: 'video/webm;codecs=vp9,opus' }, 'r1.0']);
    // still slow right after: the change gets time to work first
    await fake.advance(1000);
    expect(fake.recorders).toHaveLength(2);
    await fake.advance(4000);
    expect(fake.recorders).toHaveLength(3);
    p.destroy();
  });

  test('the queue never passes the hard cap: recording stops until it drains, then starts anew', async () => {
    const fake = fakeEnv();
    const { p, last } = publisher(fake);
    p.start();
    const socket = fake.sockets[0];
    socket.open();
    const [recorder] = fake.recorders;
    recorder.emit();
    socket.bufferedAmount = HARD_CAP_BYTES - 50;
    recorder.emit(100);
    expect(last().warning).toBe('paused');
    expect(recorder.state).toBe('inactive');
    await flush();
    // neither the refused piece nor the recorder's last bytes went out
    expect(socket.log).toEqual([{ key: 'sk_secret', mime: 'video/webm;codecs=vp9,opus' }, 'r0.0']);
    await fake.advance(3000);
    expect(fake.recorders).toHaveLength(1);
    socket.bufferedAmount = 10_000;
    await fake.advance(1000);
    expect(fake.recorders).toHaveLength(2);
    expect(last().warning).toBe('lowered');
    fake.recorders[1].emit();
    expect(socket.log.slice(2)).toEqual([{ type: 'recording', mime: 'video/webm;codecs=vp9,opus' }, 'r1.0']);
    p.destroy();
  });

  test('the status counts bytes that left for the network each second', async () => {
    const fake = fakeEnv();
    const { p, last } = publisher(fake);
    p.start();
    const socket = fake.sockets[0];
    socket.open();
    await fake.advance(1000);
    for (let i = 0; i < 3; i += 1) fake.recorders[0].emit(50_000);
    socket.bufferedAmount = 25_000;
    await fake.advance(1000);
    expect(last().sentBitsPerSecond).toBe(1_000_000);
    p.destroy();
  });
});
