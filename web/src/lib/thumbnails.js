// Scrub previews: a VOD's WebVTT thumbnails track (`thumbnails.vtt`), whose cues name a region
// of a sprite sheet (`previews/3.jpg#xywh=x,y,w,h`, relative to the track). The player loads it
// when the pointer first comes over its timeline and shows the cue under the pointer.

/** Seconds in a WebVTT timestamp (`mm:ss.ttt` or `hh:mm:ss.ttt`), or NaN. */
function seconds(stamp) {
  const parts = stamp.trim().split(':');
  if (parts.length < 2 || parts.length > 3) return NaN;
  return parts.reduce((total, part) => total * 60 + Number(part), 0);
}

/** The cues of a thumbnails track at `trackUrl`: `{ start, end, url, x, y, w, h }`, with `url`
 * absolute. Cues that are not a time range and an image region are skipped. */
export function parseThumbnails(text, trackUrl) {
  const lines = text.replace(/\r\n?/g, '\n').split('\n');
  if (!lines[0]?.startsWith('WEBVTT')) return [];
  const cues = [];
  for (let i = 1; i < lines.length; i += 1) {
    const times = lines[i].split('-->');
    if (times.length !== 2) continue;
    const start = seconds(times[0]);
    const end = seconds(times[1].trim().split(/\s+/)[0]);
    const payload = (lines[i + 1] ?? '').trim();
    const match = /^(.+)#xywh=(\d+),(\d+),(\d+),(\d+)$/.exec(payload);
    if (!match || !(end > start)) continue;
    const [, image, x, y, w, h] = match;
    cues.push({ start, end, url: new URL(image, trackUrl).href, x: +x, y: +y, w: +w, h: +h });
  }
  return cues;
}

/** The cue shown at `time` seconds (cues are in order), or null. */
export function cueAt(cues, time) {
  let low = 0;
  let high = cues.length - 1;
  while (low <= high) {
    const mid = (low + high) >> 1;
    if (time < cues[mid].start) high = mid - 1;
    else if (time >= cues[mid].end) low = mid + 1;
    else return cues[mid];
  }
  return null;
}

/** Loads the track at `url` (relative to the page): its cues, or [] when it is not there yet. */
export async function loadThumbnails(url, fetcher = fetch) {
  const absolute = new URL(url, window.location.href).href;
  const response = await fetcher(absolute);
  if (!response.ok) return [];
  return parseThumbnails(await response.text(), absolute);
}
