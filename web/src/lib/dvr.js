// Rewinding a live stream through its DVR view. At the live edge the player plays the
// low-latency manifests (`master.m3u8`, `manifest.mpd`); a viewer who moves the timeline back
// gets the DVR view (`dvr.m3u8`, `dvr.mpd`: plain HLS and DASH over the stream's last
// `dvr_window` seconds, the same segments), and "Go live" returns to the edge.

/** Closer to live than this (seconds), moving the timeline returns to the live edge. */
export const LIVE_SNAP_SECS = 10;

/** The manifests a player of stream `id` loads: the live edge's, or the DVR view's. */
export function manifestUrls(id, rewound) {
  return rewound
    ? { hls: `/live/${id}/dvr.m3u8`, dash: `/live/${id}/dvr.mpd` }
    : { hls: `/live/${id}/master.m3u8`, dash: `/live/${id}/manifest.mpd` };
}

/** What moving the timeline to `wanted` seconds behind live does: `live` (back to the edge),
 * `rewind` (switch to the DVR view there) or `seek` (already on it: seek). */
export function scrubAction(wanted, rewound) {
  if (!(wanted >= LIVE_SNAP_SECS)) return 'live';
  return rewound ? 'seek' : 'rewind';
}

/** Seconds `video` plays behind the end of what it can seek to (the DVR view's edge), or null
 * before it has a seekable range. */
export function behindEdge(video) {
  const ranges = video.seekable;
  if (!ranges || ranges.length === 0) return null;
  return Math.max(0, ranges.end(ranges.length - 1) - video.currentTime);
}

/** Moves `video` to `seconds` behind its seekable end (not before its start) as soon as it has
 * a seekable range, checking every 200 ms for at most `timeoutMs`. Returns a cancel function. */
export function seekBehind(video, seconds, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  let timer = null;
  const attempt = () => {
    const ranges = video.seekable;
    if (ranges && ranges.length > 0 && video.readyState >= 1) {
      const end = ranges.end(ranges.length - 1);
      video.currentTime = Math.max(ranges.start(0), end - seconds);
      timer = null;
      return;
    }
    if (Date.now() < deadline) timer = setTimeout(attempt, 200);
  };
  attempt();
  return () => {
    if (timer !== null) clearTimeout(timer);
  };
}

/** About how far the live edge plays behind the wall clock (seconds): what the DVR timeline
 * calls "live" shows the picture from this long ago. */
export const EDGE_DELAY_SECS = 4;

/** The DVR timeline (`reach` seconds back to live) at `fraction` of its width (0 = furthest
 * back): how far behind live that is, and which second of the broadcast (counted from
 * `startedAt`, Unix ms, as the scrub previews' track counts) it shows at `now`. */
export function dvrPointAt(fraction, reach, startedAt, now) {
  const behind = reach * (1 - Math.min(1, Math.max(0, fraction)));
  return { behind, time: (now - startedAt) / 1000 - EDGE_DELAY_SECS - behind };
}

/** How far the server's clock (its `/time`, which DASH players read too) is ahead of this
 * one, in ms: the DVR previews count from the server's `started_at`. 0 when it cannot say. */
export async function serverClockSkew(fetcher = fetch) {
  try {
    const asked = Date.now();
    const response = await fetcher('/time', { cache: 'no-store' });
    const answered = Date.now();
    const server = Date.parse(await response.text());
    if (!response.ok || Number.isNaN(server)) return 0;
    return server - (asked + answered) / 2;
  } catch {
    return 0;
  }
}
