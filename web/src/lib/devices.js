// The dashboard's devices (cameras that stream to a stream over RTP and are driven over a
// signaling WebSocket), kept current from the admin events stream: each `device.*` event
// carries the whole device, and replaces the one with its id.

/** The admin events about devices. `device.status` comes about every 2 s per online device. */
export const DEVICE_EVENTS = new Set(['device.online', 'device.offline', 'device.streaming', 'device.status']);

/** What a device's state is called on the page. */
export const STATE_LABELS = { offline: 'Offline', online: 'Online', streaming: 'Streaming' };

/** Devices in the order they were added (then by id, so equal times keep one order). */
export function ordered(devices) {
  return [...devices].sort((a, b) => (a.created_at ?? 0) - (b.created_at ?? 0) || String(a.id).localeCompare(String(b.id)));
}

/**
 * Applies one admin event to `devices` (an array), returns the new array. `gone` holds ids of
 * devices deleted from this page: a status sample already on its way never brings one back.
 * A `device.status` is a sample that can be read just before a change of state and arrive
 * just after it: one older than what is shown (an earlier `last_seen`), or of a device known to
 * be offline (one that comes back says `device.online` first), is dropped.
 */
export function applyDeviceEvent(devices, name, payload, gone = new Set()) {
  const id = payload?.id;
  if (!DEVICE_EVENTS.has(name) || !id || gone.has(id)) return devices;
  const index = devices.findIndex((d) => d.id === id);
  if (index === -1) return ordered([...devices, payload]);
  const known = devices[index];
  const older = payload.last_seen != null && known.last_seen != null && payload.last_seen < known.last_seen;
  if (name === 'device.status' && (known.state === 'offline' || older)) return devices;
  const next = devices.slice();
  next[index] = payload;
  return next;
}

/** Replaces the device with `device`'s id (an API answer), or adds it. */
export function upsert(devices, device) {
  return devices.some((d) => d.id === device.id)
    ? devices.map((d) => (d.id === device.id ? device : d))
    : ordered([...devices, device]);
}

export const canStart = (device) => device.state === 'online';
export const canStop = (device) => device.state === 'streaming';

/** When a device was last heard from, in words: `just now`, `40 s ago`, `2 min ago`, `never`. */
export function lastSeenText(lastSeen, now) {
  if (lastSeen == null) return 'never';
  const s = Math.max(0, Math.floor((now - lastSeen) / 1000));
  // an online device reports every 2 s
  if (s < 10) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** The signaling round-trip time: `RTT 3 ms`, `RTT <1 ms`, or `RTT –` when unknown. */
export function rttText(rttMs) {
  if (rttMs == null || !Number.isFinite(rttMs)) return 'RTT –';
  return rttMs < 1 ? 'RTT <1 ms' : `RTT ${Math.round(rttMs)} ms`;
}

/**
 * The command that runs a device with `token` against the Strata at `origin`. The token goes
 * in the environment, not argv, which other users of the device can read in `ps`.
 */
export function agentCommand(origin, token) {
  return `STRATA_DEVICE_TOKEN=${token} strata device-agent --server ${origin} --test-pattern`;
}

/** playback_id → poster URL, of the public directory's entries that have a poster. */
export function postersOf(entries) {
  return Object.fromEntries(entries.filter((e) => e.poster_url).map((e) => [e.playback_id, e.poster_url]));
}

/**
 * The preview of a device: its stream's poster while it streams and the stream has one (the
 * directory names a poster only once one is stored, so the page does not ask for a picture
 * that is not there yet), with `tick` in the query so that each refresh fetches the new one.
 * Null otherwise.
 */
export function previewSrc(device, posters, tick) {
  if (device.state !== 'streaming') return null;
  const url = posters[device.playback_id];
  return url ? `${url}?v=${tick}` : null;
}

/** `posters` without the poster of a device's stream once event `name` says the device no
 * longer streams: a broadcast's poster ends with it, and the next broadcast has none until it
 * stores one. Other events (a stream's segments and stats also name its `playback_id`) leave
 * the posters alone. */
export function withoutPoster(posters, name, device) {
  if (!DEVICE_EVENTS.has(name)) return posters;
  if (!device?.playback_id || device.state === 'streaming' || !(device.playback_id in posters)) return posters;
  const { [device.playback_id]: _ended, ...rest } = posters;
  return rest;
}
