// Low-latency playback in headless Chromium (Debian's chromium, driven by playwright-core):
// the watch page of each stream in STRATA_PLAYS plays with the engine it names (hls.js in
// low-latency mode, dash.js in low-latency mode, Shaka Player in low-latency mode), all at once,
// for STRATA_PLAY_SECONDS of media time after playback starts. Every 250 ms it reads the
// video's currentTime, the player's errors and its distance to live (the stats panel's
// "Behind live"). A stall is a second or more in which currentTime did not advance. Each play
// has its own browser context (its own connections, as a viewer's own browser).
//
// Prints one JSON line per play ({label, played, stalls, errors, latencies, ...}) after
// `RESULT `, takes a screenshot of each page into STRATA_SCREENSHOTS, and exits non-zero if
// any play failed to start. The caller (tests/low_latency_playback.rs) judges the results.
//
// Env: STRATA_PLAYS (JSON: [{label, url}]), STRATA_PLAY_SECONDS (default 60),
// STRATA_SCREENSHOTS (a directory), CHROMIUM (optional path).
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { PLAYBACK_ARGS } from '../chromium.mjs';
import { logger } from './harness.mjs';

const plays = JSON.parse(process.env.STRATA_PLAYS ?? '[]');
const seconds = Number(process.env.STRATA_PLAY_SECONDS ?? 60);
const shots = process.env.STRATA_SCREENSHOTS ?? tmpdir();
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
mkdirSync(shots, { recursive: true });
if (!plays.length) {
  console.error('low_latency: set STRATA_PLAYS');
  process.exit(2);
}

const log = logger('ll');

// One browser, one context per play: each has its own connection pool, as each viewer's
// browser would (HTTP/1.1 allows six connections per host, and a low-latency player holds
// blocking playlist and part requests open).
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [...PLAYBACK_ARGS, '--mute-audio'],
});

async function play({ label, url }) {
  // a small window: the players' pictures cost little to draw beside the server's work
  const context = await browser.newContext({ viewport: { width: 800, height: 600 } });
  const page = await context.newPage();
  const consoleErrors = [];
  page.on('pageerror', (e) => consoleErrors.push(`uncaught ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
  });
  page.on('response', (r) => {
    if (r.status() >= 400) log(`${label}: HTTP ${r.status()} ${r.url()}`);
  });
  await page.goto(url);
  const read = () =>
    page.evaluate(() => {
      const v = document.querySelector('video');
      const p = window.strataPlayer ?? {};
      return {
        t: v ? v.currentTime : 0,
        paused: v ? v.paused : true,
        rate: v ? v.playbackRate : 1,
        height: v ? v.videoHeight : 0,
        engine: p.engine,
        errors: p.errors ?? [],
        latency: p.stats?.liveEdge ?? null,
      };
    });
  // start: currentTime moves
  const startDeadline = Date.now() + 60_000;
  let first = await read();
  while (!(first.t > 0 && !first.paused)) {
    if (Date.now() > startDeadline) {
      await page.screenshot({ path: join(shots, `${label}.png`) });
      return { label, started: false, errors: first.errors, consoleErrors };
    }
    await new Promise((r) => setTimeout(r, 250));
    first = await read();
  }
  log(`${label}: playing (${first.engine}) at ${first.t.toFixed(2)}`);
  const start = first.t;
  const stalls = [];
  const latencies = [];
  let last = first;
  let lastMovedAt = Date.now();
  let stalledSince = null;
  let now = first;
  const wallDeadline = Date.now() + (seconds + 60) * 1000;
  while (now.t - start < seconds && Date.now() < wallDeadline) {
    await new Promise((r) => setTimeout(r, 250));
    now = await read();
    if (now.t > last.t) {
      if (stalledSince !== null) stalls.push({ at: last.t, seconds: (Date.now() - stalledSince) / 1000 });
      stalledSince = null;
      lastMovedAt = Date.now();
    } else if (stalledSince === null && Date.now() - lastMovedAt >= 1000) {
      stalledSince = lastMovedAt;
    }
    if (now.latency != null) latencies.push(now.latency);
    last = now;
  }
  if (stalledSince !== null) stalls.push({ at: last.t, seconds: (Date.now() - stalledSince) / 1000, open: true });
  await page.screenshot({ path: join(shots, `${label}.png`) });
  return {
    label,
    started: true,
    engine: now.engine,
    played: now.t - start,
    height: now.height,
    stalls,
    errors: now.errors,
    consoleErrors,
    latencies,
  };
}

let failed = false;
try {
  const results = await Promise.all(plays.map(play));
  for (const r of results) {
    console.log(`RESULT ${JSON.stringify(r)}`);
    if (!r.started) failed = true;
  }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
