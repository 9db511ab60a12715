import { describe, expect, test } from 'vitest';
import { parseFrames } from '../../src/lib/sse.js';
import { applyEvent, ordered } from '../../src/lib/liveness.js';

describe('SSE frames', () => {
  test('complete frames are parsed, comments skipped, a partial frame kept for later', () => {
    const { events, rest } = parseFrames(
      ': keep-alive\n\nevent: stream.live\ndata: {"playback_id":"a"}\n\nevent: stream.ended\r\ndata: {"playback_id"',
    );
    expect(events).toEqual([{ event: 'stream.live', data: '{"playback_id":"a"}' }]);
    expect(rest).toBe('event: stream.ended\ndata: {"playback_id"');
  });
});

describe('directory updates', () => {
  const offline = [
    { name: 'b-show', playback_id: 'b', state: 'offline', started_at: null },
    { name: 'a-show', playback_id: 'a', state: 'offline', started_at: null },
  ];

  test('live streams sort first and go back offline when they end', () => {
    let entries = applyEvent(offline, 'stream.live', { playback_id: 'b', name: 'b-show', state: 'live', started_at: 5 });
    expect(ordered(entries).map((e) => [e.playback_id, e.state])).toEqual([
      ['b', 'live'],
      ['a', 'offline'],
    ]);
    entries = applyEvent(entries, 'stream.ended', { playback_id: 'b' });
    expect(ordered(entries).map((e) => [e.playback_id, e.state])).toEqual([
      ['a', 'offline'],
      ['b', 'offline'],
    ]);
  });

  test('a stream created after the page loaded appears when it goes live', () => {
    const entries = applyEvent(offline, 'stream.live', { playback_id: 'c', name: 'c-show', state: 'live', started_at: 9 });
    expect(entries.find((e) => e.playback_id === 'c')).toMatchObject({ name: 'c-show', state: 'live' });
  });
});
