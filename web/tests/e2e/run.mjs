// End-to-end: a streamer's and a viewer's trip through the web app in headless Chromium
// (Debian's chromium, driven by playwright-core), against a running Strata.
//
// 1. The dashboard signs in with the admin token and creates a stream; its OBS settings show
//    the server and a key.
// 2. The streams page shows the stream offline; ffmpeg publishes to the key from the page; the
//    card goes live without a reload.
// 3. The watch page plays it with hls.js and then dash.js: currentTime advances ≥ 5 s, no
//    player error, and a fixed rendition takes effect (the video's height changes to it).
// 4. The dashboard's live session plots input bitrate and fps; Stop ends the broadcast, and
//    the streams page shows it offline. Then the key is rotated and the stream deleted.
// Screenshots of every page go to STRATA_SCREENSHOTS. Exits non-zero on the first failure,
// with a screenshot of the page that failed.
//
// Env: STRATA_URL (http://host:port), STRATA_ADMIN_TOKEN, STRATA_SCREENSHOTS (a directory),
// STRATA_LADDER (a ladder with at least two rungs for a 720p source), CHROMIUM (optional path).
import { spawn } from 'node:child_process';
import { CHROMIUM_ARGS } from '../chromium.mjs';
import { startE2e, until } from './harness.mjs';

const { base, token, ladder, log, open, shot, plays, run } = await startE2e({ name: 'e2e', tag: 'e2e', args: CHROMIUM_ARGS });
let publisher = null;

function publish(rtmpUrl) {
  const ffmpeg = spawn(
    'ffmpeg',
    [
      ...['-hide_banner', '-loglevel', 'error', '-re'],
      ...['-f', 'lavfi', '-i', 'testsrc2=size=1280x720:rate=30'],
      ...['-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000'],
      ...['-t', '300', '-c:v', 'libx264', '-preset', 'veryfast', '-g', '60', '-keyint_min', '60'],
      ...['-sc_threshold', '0', '-pix_fmt', 'yuv420p', '-b:v', '2500k', '-c:a', 'aac', '-b:a', '128k'],
      ...['-f', 'flv', rtmpUrl],
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  // ffmpeg names the URL in its errors; the key stays out of the output.
  const key = rtmpUrl.slice(rtmpUrl.lastIndexOf('/') + 1);
  ffmpeg.stderr.on('data', (d) => process.stderr.write(`[ffmpeg] ${String(d).replaceAll(key, 'sk_…')}`));
  return ffmpeg;
}

/** Plays for ≥ 5 s of media time with no player error, then fixes a rendition other than the
 * one playing and waits for the picture to change to it. */
async function playsAndSwitches(page, engine) {
  const video = await plays(page, engine, { seconds: 5, startWithin: 40, advanceWithin: 30 });
  const levels = await page.evaluate(() => window.strataPlayer.levels);
  if (levels.length < 2) throw new Error(`${engine}: expected at least two renditions, got ${JSON.stringify(levels)}`);
  const height = await video.evaluate((v) => v.videoHeight);
  const target = levels.find((l) => l.height !== height);
  log(`${engine}: playing ${height}p, choosing ${target.height}p`);
  await page.click(`[data-level="${target.height}"]`);
  await until(`${engine}: the picture becomes ${target.height}p`, 30, () =>
    video.evaluate((v, h) => v.videoHeight === h, target.height),
  );
  const panel = await until(`${engine}: the stats panel shows ${target.height}p`, 5, async () => {
    const text = await page.locator('[data-stat="Rendition"]').innerText();
    return text.startsWith(`${target.height}p`) ? text : false;
  });
  log(`${engine}: stats panel rendition "${panel}"`);
  const after = await page.evaluate((e) => window.strataPlayer.errors.filter((x) => x.engine === e), engine);
  if (after.length) throw new Error(`${engine}: player errors after switching: ${JSON.stringify(after)}`);
  await page.waitForTimeout(1500);
  await shot(page, `watch-${engine}.png`);
}

const failed = await run(
  async () => {
    // 1. Dashboard: sign in, create a stream, read its OBS settings.
    const dashboard = await open('/dashboard', 'dashboard');
    await dashboard.fill('[data-testid="token-input"]', token);
    await dashboard.click('[data-testid="sign-in"]');
    await dashboard.fill('[data-testid="new-stream-name"]', 'friday-show');
    await until('the ladder list loads', 10, () => dashboard.locator(`option[value="${ladder}"]`).count());
    await dashboard.selectOption('[data-testid="new-stream-ladder"]', ladder);
    await dashboard.click('[data-testid="create-stream"]');
    const server = await until('OBS server shown', 10, () => dashboard.inputValue('[data-testid="obs-server"]'));
    const key = await dashboard.inputValue('[data-testid="obs-key"]');
    if (!server.startsWith('rtmp://')) throw new Error(`OBS server is not an RTMP URL: ${server}`);
    if (!/^sk_[a-z0-9]{20,}$/.test(key)) throw new Error(`the stream key does not look like a key: ${key.length} characters`);
    const srt = await dashboard.inputValue('[data-testid="obs-srt-url"]');
    if (!srt.startsWith('srt://') || !srt.includes(`r=live/${key},m=publish`)) throw new Error('the SRT URL does not carry the new key');
    log(`dashboard created a stream; server ${server}`);
    await shot(dashboard, 'dashboard-created.png');
    await dashboard.click('text=Done');
    const row = dashboard.locator('[data-testid="stream-row"]', { hasText: 'friday-show' });
    await until('the stream is listed', 5, () => row.count());
    if ((await dashboard.content()).includes(key)) throw new Error('the key is still on the page after Done');

    // 2. Streams page: offline, then live without a reload.
    const streams = await open('/', 'streams');
    const card = streams.locator('[data-testid="stream-card"]', { hasText: 'friday-show' });
    await until('the card shows offline', 10, async () => (await card.getAttribute('data-state')) === 'offline');
    await shot(streams, 'streams-offline.png');
    publisher = publish(`${server}/${key}`);
    log('ffmpeg publishing');
    await until('the card goes live', 15, async () => (await card.getAttribute('data-state')) === 'live');
    const playbackId = await card.getAttribute('data-playback-id');
    log(`streams page shows ${playbackId} live`);

    // 3. Watch page: hls.js, then dash.js.
    const watch = await open(`/watch/${playbackId}`, 'watch');
    await until('the watch page names the stream', 10, async () => (await watch.locator('[data-testid="stream-name"]').innerText()) === 'friday-show');
    await playsAndSwitches(watch, 'hls');
    await playsAndSwitches(watch, 'dash');
    await until('the live card shows a poster of the picture', 15, () =>
      card.locator('img').evaluate((img) => img.complete && img.naturalWidth === 480 && img.naturalHeight === 270),
    );
    await shot(streams, 'streams-live.png');

    // The embed page plays on its own.
    const embed = await open(`/embed/${playbackId}`, 'embed');
    await until('the embedded player plays', 40, () => embed.locator('video').evaluate((v) => v.currentTime > 1));
    await shot(embed, 'embed.png');

    // 4. Dashboard: the live session plots and stops.
    await dashboard.bringToFront();
    const session = dashboard.locator('[data-testid="live-session"]');
    await until('the live session is shown', 10, () => session.count());
    await until('the charts have samples', 15, async () => (await session.locator('path.line').count()) >= 2);
    await shot(dashboard, 'dashboard-live.png');
    const stop = session.locator('[data-testid="stop-session"]');
    await stop.click();
    await stop.click();
    await until('the session leaves the dashboard', 15, async () => (await session.count()) === 0);
    log('dashboard stopped the session');
    await until('the card goes offline', 15, async () => (await card.getAttribute('data-state')) === 'offline');
    await until('the watch page shows offline', 15, async () => (await watch.locator('[data-testid="live-state"] [data-state]').getAttribute('data-state')) === 'offline');
    await until('the ended broadcast leaves no stale stats', 5, async () => (await watch.locator('[data-stat="Rendition"]').innerText()) === '–');
    await shot(streams, 'streams-ended.png');
    await shot(watch, 'watch-offline.png');
    // Rotating shows a new key once; deleting removes the stream.
    const rotate = row.locator('button', { hasText: 'Rotate key' });
    await rotate.click();
    await row.locator('button', { hasText: 'Rotate?' }).click();
    const rotated = await until('the new key is shown', 10, async () => {
      const shown = await dashboard.inputValue('[data-testid="obs-key"]');
      return shown !== key && /^sk_[a-z0-9]{20,}$/.test(shown) ? shown : false;
    });
    if (rotated === key) throw new Error('rotation showed the old key');
    log('dashboard rotated the key');
    await dashboard.click('text=Done');
    const remove = row.locator('[data-testid="delete-stream"]');
    await remove.click();
    await remove.click();
    await until('the deleted stream leaves the list', 10, async () => (await row.count()) === 0);
    log('dashboard deleted the stream');
  },
  { cleanup: () => publisher?.kill('SIGKILL') },
);
process.exit(failed ? 1 : 0);
