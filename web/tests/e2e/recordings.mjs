// End-to-end: clips and recordings in the web app, in headless Chromium (Debian's chromium,
// driven by playwright-core), against a running Strata where the caller publishes one short
// broadcast (on a ladder that makes posters) to the stream named "show".
//
// 1. While it is live, the dashboard's session card's "Clip last 30 s" gives a shareable link
//    within a few seconds; the clip's public page plays it (hls.js) and offers the MP4. A
//    precise clip of the last 6.5 s (asked through the API; its first and last segment are
//    re-encoded and their parameter sets sit beside the ladder's in one avcC) plays on its page.
// 2. Once the broadcast ended, the dashboard's Recordings view lists it with its poster, date,
//    duration and size; Play opens its public replay page, which plays it; the MP4 download
//    is saved to STRATA_SCREENSHOTS/recording.mp4 (the caller checks it with ffprobe). Its
//    scrub previews: the thumbnails track parses in Chromium, its cues point inside sheets
//    that load, and hovering the replay page's timeline shows one.
// 3. Delete: the row leaves the list.
// Prints `RECORDING <id>` and `CLIP <url>` for the caller. Screenshots go to
// STRATA_SCREENSHOTS; exits non-zero on the first failure or any page error.
//
// Env: STRATA_URL, STRATA_ADMIN_TOKEN, STRATA_SCREENSHOTS, CHROMIUM (optional path).
import { join } from 'node:path';
import { PLAYBACK_ARGS } from '../chromium.mjs';
import { need, startE2e, until } from './harness.mjs';

const shots = need('STRATA_SCREENSHOTS', 'recordings e2e');
const { token, log, open, shot, run } = await startE2e({
  name: 'recordings e2e',
  tag: 'recordings',
  args: [...PLAYBACK_ARGS, '--mute-audio'],
  failurePrefix: 'recordings-',
});

/** Waits until the page's video has played `seconds` past where it started. */
async function plays(page, what, seconds) {
  const video = page.locator('video');
  const from = await until(`${what}: playback starts`, 30, async () => {
    const t = await video.evaluate((v) => (!v.paused && v.currentTime > 0 ? v.currentTime : 0));
    return t || false;
  });
  await until(`${what}: plays ${seconds} s`, seconds + 20, async () => {
    const t = await video.evaluate((v) => v.currentTime);
    return t - from >= seconds;
  });
  const errors = await page.evaluate(() => (window.strataPlayer?.errors ?? []).filter((e) => e.fatal));
  if (errors.length) throw new Error(`${what}: player errors ${JSON.stringify(errors)}`);
}

/** The recording's scrub previews: Chromium's own WebVTT parser reads its thumbnails track,
 * every cue names a region inside a sheet image that loads, and the pointer over the replay
 * page's timeline shows one of those pictures. */
async function scrubPreviews(page, id) {
  const url = `/vod/${id}/thumbnails.vtt`;
  await until('the thumbnails track is made', 60, () => page.evaluate(async (u) => (await fetch(u)).ok, url));
  const cues = await page.evaluate(async (u) => {
    const video = document.createElement('video');
    const track = document.createElement('track');
    track.kind = 'metadata';
    track.src = u;
    track.default = true;
    video.append(track);
    document.body.append(video);
    await new Promise((resolve, reject) => {
      track.onload = resolve;
      track.onerror = () => reject(new Error('the thumbnails track does not load'));
    });
    const list = [...track.track.cues].map((c) => ({ start: c.startTime, end: c.endTime, text: c.text }));
    video.remove();
    return list;
  }, url);
  if (cues.length < 3) throw new Error(`the track has ${cues.length} cues`);
  const sheets = new Map();
  for (const cue of cues) {
    const match = /^(previews\/\d+\.jpg)#xywh=(\d+),(\d+),(\d+),(\d+)$/.exec(cue.text);
    if (!match) throw new Error(`a cue says "${cue.text}"`);
    const [, sheet, x, y, w, h] = match;
    if (!sheets.has(sheet)) {
      const size = await page.evaluate(async (src) => {
        const img = new Image();
        img.src = src;
        await img.decode();
        return [img.naturalWidth, img.naturalHeight];
      }, `/vod/${id}/${sheet}`);
      sheets.set(sheet, size);
    }
    const [width, height] = sheets.get(sheet);
    if (+x + +w > width || +y + +h > height || !(+w > 0 && +h > 0)) {
      throw new Error(`cue "${cue.text}" lies outside ${sheet} (${width}x${height})`);
    }
  }
  log(`thumbnails: ${cues.length} cues on ${sheets.size} sheet(s), ${cues[0].start}–${cues.at(-1).end} s`);
  const bar = page.locator('[data-testid="vod-timeline"]');
  const box = await bar.boundingBox();
  const picture = page.locator('[data-testid="scrub-picture"]');
  await until('the timeline shows a preview under the pointer', 20, async () => {
    // a second move after the track loaded shows its cue
    await page.mouse.move(box.x + box.width * 0.4, box.y + box.height / 2);
    await page.mouse.move(box.x + box.width * 0.5, box.y + box.height / 2);
    if (!(await picture.count())) return false;
    const image = await picture.evaluate((el) => getComputedStyle(el).backgroundImage);
    return /previews\/\d+\.jpg/.test(image);
  });
  await shot(page, 'replay-preview.png');
}

/** Asks the API for a precise clip of the live broadcast's last 6.5 s and waits until it is
 * ready: its id. */
async function preciseClip() {
  const api = async (path, body) => {
    const res = await fetch(new URL(path, process.env.STRATA_URL), {
      method: body ? 'POST' : 'GET',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: body && JSON.stringify(body),
    });
    if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
    return res.json();
  };
  const stream = (await api('/api/v1/streams')).find((s) => s.name === 'show');
  const { id } = await api('/api/v1/clips', { stream_id: stream.id, last_secs: 6.5, precise: true });
  const clip = await until('the precise clip is made', 30, async () => {
    const now = await api(`/api/v1/clips/${id}`);
    return now.state === 'pending' ? false : now;
  });
  if (clip.state !== 'ready') throw new Error(`the precise clip ${clip.state}: ${clip.reason}`);
  log(`precise clip ready: ${clip.duration_ms} ms`);
  return id;
}

const failed = await run(async () => {
  // 1. a clip of the live broadcast
  const dashboard = await open('/dashboard', 'dashboard');
  await dashboard.fill('[data-testid="token-input"]', token);
  await dashboard.click('[data-testid="sign-in"]');
  const card = dashboard.locator('[data-testid="live-session"]');
  await until('the broadcast is live on the dashboard', 30, () => card.count());
  const asked = Date.now();
  await card.locator('[data-testid="clip-last-30"]').click();
  const link = await until('the clip link appears', 15, async () => {
    if (await card.locator('[data-testid="clip-error"]').count()) {
      throw new Error(await card.locator('[data-testid="clip-error"]').innerText());
    }
    const field = card.locator('[data-testid="clip-link"] input');
    return (await field.count()) ? field.inputValue() : false;
  });
  log(`clip link after ${((Date.now() - asked) / 1000).toFixed(1)} s: ${link}`);
  console.log(`CLIP ${link}`);
  await shot(dashboard, 'dashboard-clip.png');
  const precise = await preciseClip();
  const clipPage = await open(new URL(link).pathname, 'clip');
  await plays(clipPage, 'clip page', 2);
  if (!(await clipPage.locator('[data-testid="vod-download"]').count())) throw new Error('the clip page offers no MP4');
  await shot(clipPage, 'clip-page.png');
  const precisePage = await open(`/clip/${precise}`, 'precise clip');
  await plays(precisePage, 'precise clip page', 2);
  await shot(precisePage, 'precise-clip-page.png');

  // 2. the recording, once the broadcast ended
  await dashboard.goto(new URL('/dashboard#recordings', dashboard.url()).href);
  const row = dashboard.locator('[data-testid="recording-row"]');
  await until('the finished broadcast is listed', 90, async () => {
    if (await row.count()) return true;
    await dashboard.reload();
    await new Promise((r) => setTimeout(r, 2000));
    return false;
  });
  const recordingId = await row.first().getAttribute('data-recording-id');
  console.log(`RECORDING ${recordingId}`);
  const poster = row.first().locator('[data-testid="recording-poster"]');
  await until('its poster shows a picture', 15, async () =>
    (await poster.count()) && poster.evaluate((img) => img.complete && img.naturalWidth > 0),
  );
  const facts = await row.first().locator('[data-testid="recording-facts"]').innerText();
  if (!/^\d+:\d\d · [\d.]+ (kB|MB)$/.test(facts.trim())) throw new Error(`the row says "${facts}"`);
  log(`listed: ${facts}`);
  await shot(dashboard, 'recordings.png');

  const [replay] = await Promise.all([
    dashboard.context().waitForEvent('page'),
    row.first().locator('[data-testid="recording-play"]').click(),
  ]);
  await plays(replay, 'replay page', 2);
  await shot(replay, 'replay.png');
  await scrubPreviews(replay, recordingId);

  const [download] = await Promise.all([
    dashboard.waitForEvent('download'),
    row.first().locator('[data-testid="recording-download"]').click(),
  ]);
  await download.saveAs(join(shots, 'recording.mp4'));
  log(`downloaded ${download.suggestedFilename()}`);

  // 3. delete it
  const remove = row.first().locator('[data-testid="recording-delete"]');
  await remove.click();
  await remove.click();
  await until('the recording leaves the list', 15, async () => (await row.count()) === 0);
  await shot(dashboard, 'recordings-deleted.png');
});
process.exit(failed ? 1 : 0);
