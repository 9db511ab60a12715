// Glass-to-glass latency in headless Chromium (Debian's chromium, driven by playwright-core),
// run by benches/latency.sh. The publisher burns the wall clock (ms mod 2^24) into every frame
// as 24 black/white blocks along the top of the picture (bit k at x = 40k of 1280, 40 px high;
// positions scale with the picture, so any rung of a ladder reads). On Strata's own watch page
// every frame the video presents is drawn to a canvas in a requestVideoFrameCallback, its stamp
// read back from the pixels, and latency = wall clock at the frame's expected display time −
// stamp. Each play warms up G2G_WARMUP seconds after its first presented frame, then measures
// G2G_SECONDS; it also samples the player's own distance to live (window.strataPlayer.stats
// .liveEdge), the rendition height shown and stalls (currentTime not moving for ≥ 1 s).
//
// Env: G2G_PLAYS (JSON: [{label, url, target (s, or null)}]), G2G_WARMUP (default 10),
// G2G_SECONDS (default 30), G2G_SEQUENTIAL=1 (one play after the other, as benches/latency.sh does by
// default; else all at once in one Chromium),
// CHROMIUM (optional path). Prints a table, then `SUMMARY g2g LABEL median_s p90_s frames
// target_s` per play; exits non-zero if a play never presented a readable frame.
import { PLAYBACK_ARGS } from '../chromium.mjs';
import { launchWithProfile, logger } from '../e2e/harness.mjs';

const plays = JSON.parse(process.env.G2G_PLAYS ?? '[]');
const warmup = Number(process.env.G2G_WARMUP ?? 10);
const seconds = Number(process.env.G2G_SECONDS ?? 30);
const sequential = process.env.G2G_SEQUENTIAL === '1';
if (!plays.length) {
  console.error('glass_to_glass: set G2G_PLAYS');
  process.exit(2);
}

const log = logger('g2g', '  ');

// Runs in the page before its own scripts: reads the stamp of every presented frame.
function collector() {
  const WRAP = 1 << 24;
  const state = { samples: [], misreads: 0, frames: 0 };
  window.__g2g = state;
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  let watched = null;
  function onFrame(video, metadata) {
    state.frames += 1;
    const w = video.videoWidth;
    const h = video.videoHeight;
    if (w > 0 && h > 0) {
      const scale = w / 1280;
      const strip = Math.max(2, Math.round(40 * scale));
      if (canvas.width !== w || canvas.height !== strip) {
        canvas.width = w;
        canvas.height = strip;
      }
      ctx.drawImage(video, 0, 0, w, strip, 0, 0, w, strip);
      const px = ctx.getImageData(0, 0, w, strip).data;
      const y = Math.floor(strip / 2);
      let stamp = 0;
      for (let k = 0; k < 24; k += 1) {
        const x = Math.min(w - 1, Math.floor((k * 40 + 20) * scale));
        const i = (y * w + x) * 4;
        const luma = 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2];
        if (luma >= 128) stamp += 2 ** k;
      }
      // wall clock when the frame is expected on screen (expectedDisplayTime is on
      // performance.now()'s clock)
      const shown = Date.now() + (metadata.expectedDisplayTime - performance.now());
      const latency = (((Math.round(shown) % WRAP) - stamp) % WRAP + WRAP) % WRAP;
      if (latency < 60_000) {
        state.samples.push({ at: Date.now(), latency, height: h, media: metadata.mediaTime });
      } else {
        state.misreads += 1;
      }
    }
    video.requestVideoFrameCallback((_, m) => onFrame(video, m));
  }
  setInterval(() => {
    const video = document.querySelector('video');
    if (video && video !== watched && 'requestVideoFrameCallback' in video) {
      watched = video;
      video.requestVideoFrameCallback((_, m) => onFrame(video, m));
    }
  }, 100);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const median = (xs) => quantile(xs, 0.5);
function quantile(xs, q) {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.round(q * (s.length - 1))))];
}

const browser = await launchWithProfile({ args: PLAYBACK_ARGS, viewport: { width: 1280, height: 800 }, prefix: 'strata-g2g-' });
const { context } = browser;
await context.addInitScript(collector);

async function play({ label, url }) {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(`uncaught ${e.message}`));
  try {
    await page.goto(url);
  } catch (e) {
    return { label, started: false, errors: [...errors, `could not open the page: ${e.message.split('\n')[0]}`] };
  }
  const read = () =>
    page.evaluate(() => {
      const v = document.querySelector('video');
      const p = window.strataPlayer ?? {};
      const g = window.__g2g ?? { samples: [] };
      return {
        now: Date.now(),
        t: v ? v.currentTime : 0,
        rate: v ? v.playbackRate : 1,
        samples: g.samples.length,
        engine: p.engine,
        errors: (p.errors ?? []).map((e) => e.message),
        liveEdge: p.stats?.liveEdge ?? null,
      };
    });
  const startBy = Date.now() + 45_000;
  let s = await read();
  while (s.samples === 0) {
    if (Date.now() > startBy) return { label, started: false, errors: [...errors, ...s.errors] };
    await sleep(250);
    s = await read();
  }
  log(`${label}: first readable frame (${s.engine})`);
  await sleep(warmup * 1000);
  const from = (await read()).now;
  const liveEdges = [];
  const rates = [];
  let stalls = 0;
  let last = await read();
  let stillSince = null;
  while (Date.now() - from < seconds * 1000) {
    await sleep(250);
    s = await read();
    if (s.liveEdge != null) liveEdges.push(s.liveEdge);
    rates.push(s.rate);
    if (s.t > last.t) stillSince = null;
    else if (stillSince === null) stillSince = Date.now();
    else if (Date.now() - stillSince >= 1000 && stillSince !== -1) {
      stalls += 1;
      stillSince = -1; // counted; wait for motion
    }
    last = s;
  }
  const got = await page.evaluate(
    ({ from, to }) => {
      const g = window.__g2g;
      const inWindow = g.samples.filter((x) => x.at >= from && x.at <= to);
      return { samples: inWindow, misreads: g.misreads, frames: g.frames };
    },
    { from, to: Date.now() },
  );
  await page.close();
  const latencies = got.samples.map((x) => x.latency / 1000);
  // converging or settled: the first and the last 5 s of the window
  const end = got.samples.length ? got.samples[got.samples.length - 1].at : from;
  const first5 = got.samples.filter((x) => x.at < from + 5000).map((x) => x.latency / 1000);
  const last5 = got.samples.filter((x) => x.at > end - 5000).map((x) => x.latency / 1000);
  const heights = {};
  for (const x of got.samples) heights[x.height] = (heights[x.height] ?? 0) + 1;
  return {
    label,
    started: true,
    engine: s.engine,
    frames: latencies.length,
    median: median(latencies),
    p90: quantile(latencies, 0.9),
    min: latencies.length ? Math.min(...latencies) : null,
    max: latencies.length ? Math.max(...latencies) : null,
    first5: median(first5),
    last5: median(last5),
    fps: latencies.length / seconds,
    misreads: got.misreads,
    heights,
    stalls,
    liveEdge: median(liveEdges),
    rate: median(rates),
    errors: [...errors, ...s.errors],
  };
}

let results;
try {
  if (sequential) {
    results = [];
    for (const p of plays) results.push(await play(p));
  } else {
    results = await Promise.all(plays.map(play));
  }
} finally {
  await browser.close();
}

const f = (x, d = 2) => (x == null ? '-' : x.toFixed(d));
console.log(
  `glass-to-glass: wall clock at display − stamp burned in at capture, ${seconds} s after ${warmup} s warm-up` +
    ` (${sequential ? 'one play after the other' : 'all plays at once, one Chromium'})`,
);
console.log(
  `  ${'player'.padEnd(24)} ${'frames'.padStart(6)} ${'median'.padStart(7)} ${'p90'.padStart(7)}` +
    ` ${'min'.padStart(6)} ${'max'.padStart(6)}  ${'player says'.padStart(11)}  target`,
);
let failed = false;
for (const r of results) {
  const target = plays.find((p) => p.label === r.label)?.target ?? null;
  if (!r.started || !r.frames) {
    failed = true;
    console.log(`  ${r.label.padEnd(24)} never presented a readable frame; errors: ${JSON.stringify(r.errors)}`);
    console.log(`SUMMARY g2g ${r.label} - - 0 ${target ?? '-'} - - -`);
    continue;
  }
  const verdict =
    target == null ? '(reference, no target)' : `<= ${target.toFixed(1)} s median: ${r.median <= target ? 'ok' : 'over target'}`;
  console.log(
    `  ${r.label.padEnd(24)} ${String(r.frames).padStart(6)} ${f(r.median).padStart(6)}s ${f(r.p90).padStart(6)}s` +
      ` ${f(r.min).padStart(5)}s ${f(r.max).padStart(5)}s  ${f(r.liveEdge).padStart(10)}s  ${verdict}`,
  );
  const heights = Object.entries(r.heights)
    .map(([h, n]) => `${h}p ${Math.round((100 * n) / r.frames)}%`)
    .join(', ');
  const notes = [
    `first 5 s ${f(r.first5)} s → last 5 s ${f(r.last5)} s`,
    `playback rate ${f(r.rate, 3)}`,
    `${f(r.fps, 0)} fps presented`,
    `rungs shown: ${heights}`,
  ];
  if (r.fps < 25) notes.push('FEWER FRAMES THAN THE SOURCE: this machine is overloaded, numbers are suspect');
  if (r.stalls) notes.push(`${r.stalls} stall(s) ≥ 1 s`);
  if (r.misreads) notes.push(`${r.misreads} unreadable frame(s)`);
  if (r.errors.length) {
    const counts = new Map();
    for (const e of r.errors) counts.set(e, (counts.get(e) ?? 0) + 1);
    const listed = [...counts].slice(0, 4).map(([e, n]) => (n > 1 ? `${e} ×${n}` : e));
    notes.push(`player errors (whole play): ${listed.join(' | ')}`);
  }
  console.log(`  ${''.padEnd(24)} ${notes.join('; ')}`);
  console.log(
    `SUMMARY g2g ${r.label} ${f(r.median, 3)} ${f(r.p90, 3)} ${r.frames} ${target ?? '-'} ${f(r.liveEdge, 3)}` +
      ` ${f(r.rate, 3)} ${f(r.fps, 1)}`,
  );
}
console.log("  'player says': the engine's own distance to the live edge (hls.js latency, dash.js live latency)");
process.exit(failed ? 1 : 0);
