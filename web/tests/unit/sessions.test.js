import { describe, expect, test } from 'vitest';
import { applySessionEvent, ENDED_MEMORY } from '../../src/lib/sessions.js';

describe('applySessionEvent', () => {
  test('a session goes live, updates, ends, and a late sample does not bring it back', () => {
    const ended = new Set();
    let live = {};
    live = applySessionEvent(live, ended, 'stream.live', { session_id: 's1', state: 'live' });
    live = applySessionEvent(live, ended, 'session.stats', { session_id: 's1', fps: 30 });
    expect(live.s1.fps).toBe(30);
    live = applySessionEvent(live, ended, 'stream.ended', { session_id: 's1' });
    expect(live).toEqual({});
    // the sample the server took while the broadcast was ending
    live = applySessionEvent(live, ended, 'session.stats', { session_id: 's1', fps: 29 });
    expect(live).toEqual({});
    // another broadcast is unaffected
    live = applySessionEvent(live, ended, 'session.stats', { session_id: 's2', fps: 25 });
    expect(Object.keys(live)).toEqual(['s2']);
  });

  test('events of other kinds or without a session leave the map as it is', () => {
    const ended = new Set();
    const live = { s1: { session_id: 's1' } };
    expect(applySessionEvent(live, ended, 'segment.published', { session_id: 's1' })).toBe(live);
    expect(applySessionEvent(live, ended, 'session.stats', {})).toBe(live);
  });

  test('the memory of ended sessions is bounded', () => {
    const ended = new Set();
    for (let i = 0; i <= ENDED_MEMORY + 10; i += 1) applySessionEvent({}, ended, 'stream.ended', { session_id: `s${i}` });
    expect(ended.size).toBe(ENDED_MEMORY);
    expect(ended.has('s0')).toBe(false);
  });
});
