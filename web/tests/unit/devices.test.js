import { describe, expect, test } from 'vitest';
import {
  agentCommand,
  applyDeviceEvent,
  canStart,
  canStop,
  lastSeenText,
  ordered,
  postersOf,
  previewSrc,
  rttText,
  upsert,
  withoutPoster,
} from '../../src/lib/devices.js';
import { dashboardView } from '../../src/lib/route.js';

const device = (fields) => ({
  id: 'dv_a',
  name: 'pi-cam',
  stream_id: 'st1',
  stream_name: 'lobby',
  playback_id: 'pb1',
  state: 'offline',
  last_seen: null,
  rtt_ms: null,
  created_at: 1000,
  ...fields,
});

describe('applyDeviceEvent', () => {
  test('a device comes online, reports, streams, stops and goes offline', () => {
    let list = [device()];
    list = applyDeviceEvent(list, 'device.online', device({ state: 'online', last_seen: 5000 }));
    expect(list[0].state).toBe('online');
    list = applyDeviceEvent(list, 'device.status', device({ state: 'online', last_seen: 7000, rtt_ms: 3 }));
    expect(list[0]).toMatchObject({ state: 'online', rtt_ms: 3, last_seen: 7000 });
    list = applyDeviceEvent(list, 'device.streaming', device({ state: 'streaming', last_seen: 8000, rtt_ms: 4 }));
    expect(list[0].state).toBe('streaming');
    // stopped: the device is back to online
    list = applyDeviceEvent(list, 'device.online', device({ state: 'online', last_seen: 9000, rtt_ms: 4 }));
    expect(list[0].state).toBe('online');
    list = applyDeviceEvent(list, 'device.offline', device({ state: 'offline', last_seen: 9000 }));
    expect(list[0]).toMatchObject({ state: 'offline', rtt_ms: null });
  });

  test('only the device with the event’s id changes; the others are the same objects', () => {
    const other = device({ id: 'dv_b', name: 'door', created_at: 2000 });
    const list = [device(), other];
    const next = applyDeviceEvent(list, 'device.online', device({ state: 'online' }));
    expect(next).not.toBe(list);
    expect(next[1]).toBe(other);
    expect(list[0].state).toBe('offline');
  });

  test('a device added elsewhere appears, in the order devices were added', () => {
    const list = [device({ id: 'dv_b', created_at: 2000 })];
    const next = applyDeviceEvent(list, 'device.online', device({ id: 'dv_a', created_at: 1000, state: 'online' }));
    expect(next.map((d) => d.id)).toEqual(['dv_a', 'dv_b']);
  });

  test('a status sample that arrives after the device went offline is dropped', () => {
    const list = [device({ state: 'offline', last_seen: 9000 })];
    expect(applyDeviceEvent(list, 'device.status', device({ state: 'online', rtt_ms: 2 }))).toBe(list);
    // coming back is said with device.online
    expect(applyDeviceEvent(list, 'device.online', device({ state: 'online' }))[0].state).toBe('online');
  });

  test('a status sample older than the state shown is dropped', () => {
    // read while streaming, delivered after the stop
    const list = [device({ state: 'online', last_seen: 9000, rtt_ms: 3 })];
    expect(applyDeviceEvent(list, 'device.status', device({ state: 'streaming', last_seen: 8000 }))).toBe(list);
    // the same last_seen (it is written every few seconds) is a fresh sample
    expect(applyDeviceEvent(list, 'device.status', device({ state: 'online', last_seen: 9000, rtt_ms: 5 }))[0].rtt_ms).toBe(5);
  });

  test('a deleted device is not brought back by a late event', () => {
    const gone = new Set(['dv_a']);
    expect(applyDeviceEvent([], 'device.status', device({ state: 'online' }), gone)).toEqual([]);
  });

  test('other events, and events without an id, leave the list as it is', () => {
    const list = [device()];
    expect(applyDeviceEvent(list, 'stream.live', { id: 'dv_a', session_id: 's1' })).toBe(list);
    expect(applyDeviceEvent(list, 'device.online', {})).toBe(list);
    expect(applyDeviceEvent(list, 'device.online', null)).toBe(list);
  });
});

test('upsert replaces by id or adds in order', () => {
  const list = [device({ id: 'dv_b', created_at: 2000 })];
  expect(upsert(list, device({ id: 'dv_b', created_at: 2000, name: 'renamed' }))[0].name).toBe('renamed');
  expect(upsert(list, device({ id: 'dv_a' })).map((d) => d.id)).toEqual(['dv_a', 'dv_b']);
  expect(ordered([device({ id: 'dv_z' }), device({ id: 'dv_y' })]).map((d) => d.id)).toEqual(['dv_y', 'dv_z']);
});

test('Start needs an online device; Stop a streaming one', () => {
  expect([canStart(device({ state: 'offline' })), canStart(device({ state: 'online' })), canStart(device({ state: 'streaming' }))]).toEqual([
    false,
    true,
    false,
  ]);
  expect([canStop(device({ state: 'offline' })), canStop(device({ state: 'online' })), canStop(device({ state: 'streaming' }))]).toEqual([
    false,
    false,
    true,
  ]);
});

describe('words', () => {
  test('last seen', () => {
    const now = 1_765_000_000_000;
    expect(lastSeenText(null, now)).toBe('never');
    expect(lastSeenText(now - 2000, now)).toBe('just now');
    // a clock a little ahead of the server's
    expect(lastSeenText(now + 500, now)).toBe('just now');
    expect(lastSeenText(now - 40_000, now)).toBe('40 s ago');
    expect(lastSeenText(now - 150_000, now)).toBe('2 min ago');
    expect(lastSeenText(now - 3 * 3600_000, now)).toBe('3 h ago');
    expect(lastSeenText(now - 2 * 86400_000, now)).toBe('2 d ago');
  });

  test('round-trip time', () => {
    expect(rttText(null)).toBe('RTT –');
    expect(rttText(3)).toBe('RTT 3 ms');
    expect(rttText(2.6)).toBe('RTT 3 ms');
    expect(rttText(0.4)).toBe('RTT <1 ms');
  });

  test('the agent’s command line', () => {
    expect(agentCommand('http://127.0.0.1:8080', 'dt_x')).toBe('STRATA_DEVICE_TOKEN=dt_x strata device-agent --server http://127.0.0.1:8080 --test-pattern');
  });
});

describe('preview', () => {
  const entries = [
    { playback_id: 'pb1', state: 'live', poster_url: '/live/pb1/poster.jpg' },
    { playback_id: 'pb2', state: 'live', poster_url: null },
    { playback_id: 'pb3', state: 'offline', poster_url: null },
  ];

  test('the directory’s posters, by playback id', () => {
    expect(postersOf(entries)).toEqual({ pb1: '/live/pb1/poster.jpg' });
  });

  test('a streaming device shows its stream’s poster, with the tick against caches', () => {
    const posters = postersOf(entries);
    expect(previewSrc(device({ state: 'streaming' }), posters, 4)).toBe('/live/pb1/poster.jpg?v=4');
    // no poster stored yet (or a passthrough stream): nothing is asked for
    expect(previewSrc(device({ state: 'streaming', playback_id: 'pb2' }), posters, 4)).toBeNull();
    expect(previewSrc(device({ state: 'online' }), posters, 4)).toBeNull();
  });

  test('a device that stops streaming takes its poster along', () => {
    const posters = { pb1: '/live/pb1/poster.jpg', pb9: '/live/pb9/poster.jpg' };
    expect(withoutPoster(posters, 'device.streaming', device({ state: 'online' }))).toEqual({ pb9: '/live/pb9/poster.jpg' });
    expect(withoutPoster(posters, 'device.status', device({ state: 'streaming' }))).toBe(posters);
    expect(withoutPoster(posters, 'device.offline', device({ state: 'offline', playback_id: 'pb5' }))).toBe(posters);
    expect(withoutPoster(posters, 'session.stats', { session_id: 's1' })).toBe(posters);
  });

  test('a stream’s own events never take its device’s poster away', () => {
    const posters = { pb1: '/live/pb1/poster.jpg' };
    // these name the playback id and carry no device state
    const segment = { session_id: 's1', stream_id: 'st1', playback_id: 'pb1', number: 7, duration_secs: 2 };
    expect(withoutPoster(posters, 'segment.published', segment)).toBe(posters);
    expect(withoutPoster(posters, 'stream.live', { ...segment, state: 'live' })).toBe(posters);
  });
});

test('the dashboard opens on the devices with #devices', () => {
  expect(dashboardView('#devices')).toBe('devices');
  expect(dashboardView('#recordings')).toBe('recordings');
  expect(dashboardView('')).toBe('streams');
  expect(dashboardView('#other')).toBe('streams');
});
