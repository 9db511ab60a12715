// End-to-end: rewinding a live stream. Headless Chromium (Debian's chromium, driven by
// playwright-core) opens the watch page of the one live stream the public directory lists
// (the caller publishes it and waits until its DVR view holds more than a minute):
//
// 1. hls.js plays at the low-latency live edge; the timeline says "Live". The pointer over the
//    timeline shows a picture from the DVR view's scrub previews, labelled with its distance
//    to live.
// 2. The timeline is moved 60 s back: the player switches to the DVR view (`dvr.m3u8`), plays
//    from about 60 s behind live (50–70 s, measured from the DVR view's edge) and keeps
//    playing there.
// 3. "Go live": the player is back on the low-latency manifests, within a few seconds of live.
// No fatal player error at any point. Screenshots go to STRATA_SCREENSHOTS.
//
// Env: STRATA_URL, STRATA_ADMIN_TOKEN, STRATA_SCREENSHOTS, CHROMIUM (optional path).
import { PLAYBACK_ARGS } from '../chromium.mjs';
import { startE2e, until } from './harness.mjs';

const REWIND_SECS = 60;

const { base, log, open, shot, run } = await startE2e({
  name: 'dvr e2e',
  tag: 'dvr',
  args: [...PLAYBACK_ARGS, '--mute-audio'],
  failurePrefix: 'dvr-',
});

const manifests = [];

/** The video's position and whether it plays, and what the player reports. */
function state(page) {
  return page.evaluate(() => {
    const v = document.querySelector('video');
    const p = window.strataPlayer ?? {};
    return {
      t: v.currentTime,
      playing: !v.paused && v.readyState >= 3,
      dvr: p.dvr ?? {},
      liveEdge: p.stats?.liveEdge ?? null,
      errors: p.errors ?? [],
      label: document.querySelector('[data-testid="dvr-behind"]')?.textContent.trim(),
    };
  });
}

/** Waits until currentTime has advanced `seconds` from where it is now. */
async function keepsPlaying(page, what, seconds) {
  const from = (await state(page)).t;
  await until(`${what}: currentTime advances ${seconds} s`, seconds + 15, async () => {
    const now = await state(page);
    return now.t - from >= seconds ? now : false;
  });
}

const failed = await run(async () => {
  const streams = await (await fetch(`${base}/api/public/streams`)).json();
  const live = streams.find((s) => s.state === 'live');
  if (!live) throw new Error(`no live stream in the directory: ${JSON.stringify(streams)}`);
  if (!(live.dvr_window > REWIND_SECS)) throw new Error(`the stream has no DVR window: ${JSON.stringify(live)}`);
  const page = await open(`/watch/${live.playback_id}?engine=hls`, 'watch');
  page.on('request', (r) => {
    const path = new URL(r.url()).pathname;
    if (path.endsWith('.m3u8')) manifests.push(path.split('/').pop());
  });

  // 1. the live edge
  await until('playback starts at the live edge', 60, async () => {
    const s = await state(page);
    return s.playing && s.t > 0 && s.label === 'Live' ? s : false;
  });
  await keepsPlaying(page, 'live edge', 3);
  await shot(page, 'dvr-live.png');
  if (manifests.includes('dvr.m3u8')) throw new Error('the live edge loaded the DVR view');

  // 1b. the pointer over the timeline, half way back: a picture from the DVR view's previews
  const bar = page.locator('[data-testid="dvr-timeline"]');
  const box = await bar.boundingBox();
  const picture = page.locator('[data-testid="scrub-picture"]');
  const preview = await until('the timeline shows a preview under the pointer', 20, async () => {
    // a second move after the track loaded shows its cue
    await page.mouse.move(box.x + box.width * 0.45, box.y + box.height / 2);
    await page.mouse.move(box.x + box.width * 0.5, box.y + box.height / 2);
    if (!(await picture.count())) return false;
    const image = await picture.evaluate((el) => getComputedStyle(el).backgroundImage);
    const label = await page.locator('[data-testid="scrub-preview"] span').innerText();
    return image.includes(`/live/${live.playback_id}/previews/`) && label.startsWith('-') ? label : false;
  });
  log(`preview at ${preview} behind live`);
  await shot(page, 'dvr-preview.png');
  await page.mouse.move(0, 0);

  // 2. rewind 60 s, as a viewer letting go of the timeline there
  log(`rewinding ${REWIND_SECS} s`);
  await page.evaluate((secs) => {
    const timeline = document.querySelector('[data-testid="dvr-timeline"]');
    timeline.value = String(-secs);
    timeline.dispatchEvent(new Event('input', { bubbles: true }));
    timeline.dispatchEvent(new Event('change', { bubbles: true }));
  }, REWIND_SECS);
  const rewound = await until(`playing about ${REWIND_SECS} s behind live`, 30, async () => {
    const s = await state(page);
    const near = s.dvr.rewound && Math.abs(s.dvr.behind - REWIND_SECS) <= 10;
    return near && s.playing ? s : false;
  });
  log(`rewound: ${rewound.dvr.behind.toFixed(1)} s behind, at ${rewound.t.toFixed(1)}; "${rewound.label}"`);
  if (!manifests.includes('dvr.m3u8')) throw new Error(`the DVR view was not loaded: ${manifests}`);
  await keepsPlaying(page, 'rewound', 4);
  const still = await state(page);
  if (!(Math.abs(still.dvr.behind - REWIND_SECS) <= 10)) {
    throw new Error(`drifted to ${still.dvr.behind} s behind live while rewound`);
  }
  if (!/behind live/.test(still.label)) throw new Error(`the timeline says "${still.label}"`);
  await shot(page, 'dvr-rewound.png');

  // 3. back to live
  const before = manifests.length;
  await page.click('[data-testid="dvr-go-live"]');
  const back = await until('back at the live edge', 30, async () => {
    const s = await state(page);
    const edge = manifests.slice(before).includes('master.m3u8');
    return !s.dvr.rewound && edge && s.playing && s.label === 'Live' && s.liveEdge != null && s.liveEdge < 8
      ? s
      : false;
  });
  log(`live again: ${back.liveEdge.toFixed(1)} s behind live`);
  await keepsPlaying(page, 'live again', 3);
  await shot(page, 'dvr-back-live.png');
  // a switch or a seek aborts requests in flight (reported, not fatal): only fatal ones count
  const fatal = (await state(page)).errors.filter((e) => e.fatal);
  if (fatal.length) throw new Error(`fatal player errors: ${JSON.stringify(fatal)}`);
});
process.exit(failed ? 1 : 0);
