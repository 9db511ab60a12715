import { describe, expect, test, vi } from 'vitest';
import {
  behindEdge,
  dvrPointAt,
  EDGE_DELAY_SECS,
  LIVE_SNAP_SECS,
  manifestUrls,
  scrubAction,
  seekBehind,
  serverClockSkew,
} from '../../src/lib/dvr.js';

/** A stand-in for a video element: a seekable range, a playback position, a ready state. */
function video({ start = 0, end = null, currentTime = 0, readyState = 4 } = {}) {
  const ranges = end == null ? [] : [[start, end]];
  return {
    currentTime,
    readyState,
    seekable: { length: ranges.length, start: (i) => ranges[i][0], end: (i) => ranges[i][1] },
  };
}

describe('DVR', () => {
  test('the live edge plays the low-latency manifests, a rewind the DVR view', () => {
    expect(manifestUrls('abc', false)).toEqual({ hls: '/live/abc/master.m3u8', dash: '/live/abc/manifest.mpd' });
    expect(manifestUrls('abc', true)).toEqual({ hls: '/live/abc/dvr.m3u8', dash: '/live/abc/dvr.mpd' });
  });

  test('moving the timeline near live returns to live, further back rewinds or seeks', () => {
    expect(scrubAction(0, true)).toBe('live');
    expect(scrubAction(LIVE_SNAP_SECS - 1, false)).toBe('live');
    expect(scrubAction(60, false)).toBe('rewind');
    expect(scrubAction(60, true)).toBe('seek');
    expect(scrubAction(NaN, true)).toBe('live');
  });

  test('behind the edge is measured from the end of the seekable range', () => {
    expect(behindEdge(video())).toBeNull();
    expect(behindEdge(video({ start: 10, end: 310, currentTime: 250 }))).toBe(60);
    expect(behindEdge(video({ end: 100, currentTime: 101 }))).toBe(0);
  });

  test('a seek waits for a seekable range and never goes before its start', () => {
    vi.useFakeTimers();
    try {
      const v = video();
      const cancel = seekBehind(v, 60);
      expect(v.currentTime).toBe(0);
      v.seekable = video({ start: 100, end: 400 }).seekable;
      vi.advanceTimersByTime(250);
      expect(v.currentTime).toBe(340);
      cancel();
      const short = video({ start: 100, end: 130 });
      seekBehind(short, 60);
      expect(short.currentTime).toBe(100);
    } finally {
      vi.useRealTimers();
    }
  });

  test('a point of the timeline is a distance to live and a second of the broadcast', () => {
    const startedAt = 1_000_000;
    const now = startedAt + 600_000; // ten minutes in
    expect(dvrPointAt(1, 300, startedAt, now)).toEqual({ behind: 0, time: 600 - EDGE_DELAY_SECS });
    expect(dvrPointAt(0, 300, startedAt, now)).toEqual({ behind: 300, time: 300 - EDGE_DELAY_SECS });
    expect(dvrPointAt(0.5, 300, startedAt, now).behind).toBe(150);
    expect(dvrPointAt(-2, 300, startedAt, now).behind).toBe(300);
  });

  test("the server's clock is read from /time", async () => {
    const ahead = new Date(Date.now() + 60_000).toISOString();
    const skew = await serverClockSkew(async () => ({ ok: true, text: async () => ahead }));
    expect(Math.abs(skew - 60_000)).toBeLessThan(1000);
    expect(await serverClockSkew(async () => ({ ok: false, text: async () => '' }))).toBe(0);
    expect(await serverClockSkew(async () => Promise.reject(new Error('offline')))).toBe(0);
  });
});
