// Keeps a map playback_id → directory entry current from the public events stream.

/** Applies one public event to `entries` (an array of directory entries); returns the new array. */
export function applyEvent(entries, name, payload) {
  const id = payload?.playback_id;
  if (!id) return entries;
  if (name === 'stream.live') {
    const known = entries.some((e) => e.playback_id === id);
    const updated = {
      state: payload.state ?? 'live',
      started_at: payload.started_at ?? Date.now(),
      poster_url: payload.poster_url ?? null,
    };
    if (!known) return [...entries, { name: payload.name ?? id, playback_id: id, ...updated }];
    return entries.map((e) => (e.playback_id === id ? { ...e, ...updated } : e));
  }
  if (name === 'stream.ended') {
    return entries.map((e) => (e.playback_id === id ? { ...e, state: 'offline', started_at: null, poster_url: null } : e));
  }
  return entries;
}

/** Live first (newest first), then offline by name. */
export function ordered(entries) {
  const on = (e) => e.state !== 'offline';
  return [...entries].sort((a, b) => {
    if (on(a) !== on(b)) return on(a) ? -1 : 1;
    if (on(a)) return (b.started_at ?? 0) - (a.started_at ?? 0);
    return a.name.localeCompare(b.name);
  });
}
