// The dashboard's live sessions, kept current from the admin events stream. The server samples
// its live broadcasts every second while one of them may be ending, so a `session.stats` of a
// broadcast can arrive just after its `stream.ended`; a session that ended is never brought
// back by such a late sample (session ids are never reused; a broadcast that resumes after a
// reconnect keeps its session and never ended).

/** Session ids remembered as ended, at most this many (the oldest are forgotten first). */
export const ENDED_MEMORY = 1000;

/**
 * Applies one admin event to `live` (session_id → session), remembering ended ids in `ended`
 * (a Set, updated in place); returns the new map.
 */
export function applySessionEvent(live, ended, name, payload) {
  const id = payload?.session_id;
  if (!id) return live;
  if (name === 'stream.ended') {
    ended.add(id);
    if (ended.size > ENDED_MEMORY) ended.delete(ended.values().next().value);
    const { [id]: _gone, ...rest } = live;
    return rest;
  }
  if ((name === 'stream.live' || name === 'session.stats') && !ended.has(id)) {
    return { ...live, [id]: payload };
  }
  return live;
}
