// Which page a path shows. The origin answers index.html for each of these paths, so a
// reload or a shared link lands on the same page.

const PLAYBACK_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** @returns {{page: 'streams'|'watch'|'embed'|'clip'|'replay'|'dashboard'|'golive'|'missing', id?: string}} */
export function route(pathname) {
  const parts = pathname.split('/').filter(Boolean);
  if (parts.length === 0) return { page: 'streams' };
  if (parts.length === 1 && (parts[0] === 'dashboard' || parts[0] === 'golive')) return { page: parts[0] };
  const withId = ['watch', 'embed', 'clip', 'replay'];
  if (parts.length === 2 && withId.includes(parts[0]) && PLAYBACK_ID.test(parts[1])) {
    return { page: parts[0], id: parts[1] };
  }
  return { page: 'missing' };
}

/** The dashboard's view for a location hash: `#devices` the devices, `#recordings` the
 * recordings, anything else the streams. (A hash, not a path: the origin serves the app at
 * `/dashboard` only.) */
export function dashboardView(hash) {
  if (hash === '#devices') return 'devices';
  if (hash === '#recordings') return 'recordings';
  return 'streams';
}
