// End-to-end: going live from the browser. The Go live page (/golive) in headless Chromium
// (Debian's chromium, driven by playwright-core) records Chromium's fake camera and microphone
// and publishes them over Strata's WebSocket ingest, against a running Strata.
//
// 1. A stream is created through the admin API.
// 2. A wrong key: the page says the key is not valid.
// 3. The right key at 480p: the page goes live, shows where viewers watch, and Strata reports
//    the bytes it receives.
// 4. The watch page plays it with hls.js and then dash.js: currentTime advances ≥ 10 s, no
//    player error.
// 5. The streams page shows it live.
// 6. Stop: the Go live page shows the broadcast ended, the streams page shows it offline.
// The key never appears in a URL the Go live page asks for (page, requests, WebSocket).
// Screenshots go to STRATA_SCREENSHOTS. Exits non-zero on the first failure, with a screenshot
// of every page. The last line on stdout is `GOLIVE_RESULT {"playback_id","stream_id"}`, for
// the caller to find the broadcast's recording.
//
// Env: STRATA_URL (http://127.0.0.1:port: capture needs a secure origin, which loopback is),
// STRATA_ADMIN_TOKEN, STRATA_SCREENSHOTS (a directory), STRATA_LADDER (default low-cpu),
// CHROMIUM (optional path).
import { PLAYBACK_ARGS } from '../chromium.mjs';
import { startE2e, until } from './harness.mjs';

let secret = null;

// The Go live page keeps recording while the watch and streams pages are in front: the
// playback flags keep background tabs' timers and rendering going.
const { base, token, ladder, log, open, shot, plays, run } = await startE2e({
  name: 'golive e2e',
  tag: 'golive',
  // 15 fps: two cores run the browser's encoder, Strata's decoder and ladder, and the players
  // (the fake camera sends 1280x720 to the recorder whatever size the page asks for)
  args: [...PLAYBACK_ARGS, '--use-fake-device-for-media-stream=fps=15', '--use-fake-ui-for-media-stream'],
  failurePrefix: 'golive-',
  // the key is typed into the page or handed over in storage, never put in a URL
  watchPage(page, name, problems) {
    const leaks = (url) => secret && url.includes(secret);
    page.on('request', (r) => {
      if (leaks(r.url())) problems.push(`${name}: the stream key is in a request URL`);
    });
    page.on('websocket', (ws) => {
      if (leaks(ws.url())) problems.push(`${name}: the stream key is in the WebSocket URL`);
    });
    page.on('framenavigated', (frame) => {
      if (leaks(frame.url())) problems.push(`${name}: the stream key is in the page URL`);
    });
  },
});

async function createStream(name) {
  const response = await fetch(`${base}/api/v1/streams`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ name, ladder }),
  });
  const body = await response.json().catch(() => null);
  if (response.status !== 201) throw new Error(`creating the stream: HTTP ${response.status} ${JSON.stringify(body)}`);
  return body;
}

const state = (page) => page.locator('[data-testid="golive-state"]').innerText();

/** Plays ≥ 10 s of media time with `engine`, selected as the watch page's engine buttons do,
 * with no player error. */
async function playsTenSeconds(page, engine) {
  // the ladder needs a few segments first, on a loaded two-core machine
  const video = await plays(page, engine, { seconds: 10, startWithin: 60, advanceWithin: 40 });
  const height = await video.evaluate((v) => v.videoHeight);
  log(`${engine}: played 10 s at ${height}p`);
  await shot(page, `golive-watch-${engine}.png`);
}

let result = null;
const failed = await run(async () => {
  // 1. A stream, through the admin API.
  const name = `golive-${Date.now().toString(36)}`;
  const created = await createStream(name);
  secret = created.key;
  const playbackId = created.stream.playback_id;
  result = { playback_id: playbackId, stream_id: created.stream.id };
  log(`created stream ${name} (${playbackId}) on ladder ${ladder}`);

  // 2. The Go live page opens the camera; a wrong key is refused in words.
  const golive = await open('/golive', 'golive');
  await until('the preview shows the camera', 20, () =>
    golive.locator('[data-testid="golive-preview"]').evaluate((v) => v.videoWidth > 0 && v.currentTime > 0),
  );
  await golive.fill('[data-testid="golive-key"]', `sk_${'0'.repeat(32)}`);
  await golive.click('[data-testid="golive-start"]');
  const refusal = await until('the page says the key is not valid', 20, async () => {
    const errors = golive.locator('[data-testid="golive-error"]');
    const text = (await errors.count()) ? await errors.innerText() : '';
    return /not valid/i.test(text) ? text : false;
  });
  if ((await state(golive)) !== 'error') throw new Error(`after a wrong key the state is ${await state(golive)}`);
  log(`wrong key: "${refusal}"`);
  await shot(golive, 'golive-bad-key.png');

  // 3. The right key at 480p (two cores record, transcode and play all of it).
  await golive.fill('[data-testid="golive-key"]', secret);
  await golive.selectOption('[data-testid="golive-quality"]', '480p');
  await until('the camera reopens at 480p', 20, () =>
    golive
      .locator('[data-testid="golive-preview"]')
      .evaluate((v) => v.srcObject?.getVideoTracks()[0]?.getSettings().height === 480 && v.videoWidth > 0),
  );
  await until('Go live can be pressed', 10, () => golive.isEnabled('[data-testid="golive-start"]'));
  await golive.click('[data-testid="golive-start"]');
  await until('the page is live', 30, async () => (await state(golive)) === 'live');
  const watchUrl = await golive.inputValue('[data-testid="golive-watch-url"]');
  if (watchUrl !== `${base}/watch/${playbackId}`) throw new Error(`the viewers' URL is ${watchUrl}`);
  log(`live; viewers watch at ${watchUrl}`);
  await until('Strata reports receiving the recording', 20, async () => {
    const bytes = Number(await golive.locator('[data-stat="Received by Strata"]').getAttribute('data-value'));
    return bytes > 100_000 ? bytes : false;
  });
  await until('the microphone meter moves', 10, async () => {
    const level = Number(await golive.getAttribute('[data-testid="golive-meter"]', 'data-level'));
    return level > 0;
  });
  await shot(golive, 'golive-live.png');

  // 4. Viewers: hls.js, then dash.js.
  const watch = await open(`/watch/${playbackId}`, 'watch');
  await until('the watch page names the stream', 15, async () => (await watch.locator('[data-testid="stream-name"]').innerText()) === name);
  await playsTenSeconds(watch, 'hls');
  await playsTenSeconds(watch, 'dash');
  if ((await state(golive)) !== 'live') throw new Error(`while viewers watched the Go live page became ${await state(golive)}`);

  // 5. The streams page lists it live.
  const streams = await open('/', 'streams');
  const card = streams.locator(`[data-testid="stream-card"][data-playback-id="${playbackId}"]`);
  await until('the streams page shows it live', 15, async () => (await card.getAttribute('data-state')) === 'live');
  await shot(streams, 'golive-streams-live.png');

  // 6. Stop from the page: ended there, offline in the directory.
  await golive.bringToFront();
  await golive.click('[data-testid="golive-stop"]');
  await until('the Go live page shows the broadcast ended', 20, async () => (await state(golive)) === 'ended');
  await until('the streams page shows it offline', 20, async () => (await card.getAttribute('data-state')) === 'offline');
  log('stopped from the page');
  await shot(golive, 'golive-ended.png');
  await shot(streams, 'golive-streams-ended.png');
});
if (result) console.log(`GOLIVE_RESULT ${JSON.stringify(result)}`);
process.exit(failed ? 1 : 0);
