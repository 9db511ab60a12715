// What the browser runs share (the e2e scripts here, and the bench in ../bench): a clock-stamped
// log, waiting for a condition, and Chromium (Debian's, driven by playwright-core) on a
// throwaway profile. `startE2e` adds what the end-to-end scripts against a running Strata
// share: their settings, pages watched for errors, screenshots, playing on the watch page, and
// a run that leaves a screenshot of every page when a step fails.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

/** `log(message)` printing `[tag hh:mm:ss.mmm] message`, after `indent`. */
export function logger(tag, indent = '') {
  return (message) => console.log(`${indent}[${tag} ${new Date().toISOString().slice(11, 23)}] ${message}`);
}

/** The environment variable `name`; without it, says so (as `who`) and exits with 2. */
export function need(name, who) {
  const value = process.env[name];
  if (!value) {
    console.error(`${who}: set ${name}`);
    process.exit(2);
  }
  return value;
}

/** Waits until `check()` returns a truthy value; fails with `what` after `seconds`. */
export async function until(what, seconds, check) {
  const deadline = Date.now() + seconds * 1000;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e.message;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`${what}: not within ${seconds} s (last: ${JSON.stringify(last)})`);
}

/** Chromium ($CHROMIUM, else Debian's), headless, on a new profile in the temp directory
 * named after `prefix`: its context, and `close()`, which also removes the profile. */
export async function launchWithProfile({ args, viewport, prefix = 'strata-chromium-' }) {
  const profile = mkdtempSync(join(tmpdir(), prefix));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    viewport,
    args,
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * Starts an end-to-end script against a running Strata: reads STRATA_URL, STRATA_ADMIN_TOKEN,
 * STRATA_SCREENSHOTS (created) and STRATA_LADDER (default low-cpu), and launches Chromium with
 * `args` in a 1440×900 window. `name` starts its messages and `tag` its log lines;
 * `watchPage(page, pageName, problems)` adds checks of its own to every page it opens (pushing
 * to `problems`); failure screenshots are named `{failurePrefix}failure-N.png`.
 */
export async function startE2e({ name, tag, args, watchPage = () => {}, failurePrefix = '' }) {
  const base = need('STRATA_URL', name);
  const token = need('STRATA_ADMIN_TOKEN', name);
  const shots = need('STRATA_SCREENSHOTS', name);
  const ladder = process.env.STRATA_LADDER ?? 'low-cpu';
  mkdirSync(shots, { recursive: true });
  const log = logger(tag);
  const browser = await launchWithProfile({ args, viewport: { width: 1440, height: 900 } });
  const { context } = browser;
  const problems = [];

  /** Records a page's uncaught errors and console errors; logs its failed responses. */
  function watchForProblems(page, pageName) {
    page.on('response', (r) => {
      if (r.status() >= 400) log(`${pageName}: HTTP ${r.status()} ${r.request().method()} ${r.url()}`);
    });
    page.on('pageerror', (e) => problems.push(`${pageName}: uncaught ${e.message}`));
    page.on('console', (m) => {
      if (m.type() !== 'error') return;
      problems.push(`${pageName}: console error: ${m.text()}`);
    });
    watchPage(page, pageName, problems);
  }

  /** A new page at `path` of Strata, watched for problems as `pageName`. */
  async function open(path, pageName) {
    const page = await context.newPage();
    watchForProblems(page, pageName);
    await page.goto(`${base}${path}`);
    return page;
  }

  async function shot(page, file) {
    await page.screenshot({ path: join(shots, file), fullPage: true });
    log(`screenshot ${file}`);
  }

  /** On the watch page: selects `engine` with its engine buttons, waits for playback to start
   * (within `startWithin` s) and for currentTime to advance by `seconds` (within
   * `advanceWithin` s), and fails on any player error. Returns the video's locator. */
  async function plays(page, engine, { seconds, startWithin, advanceWithin }) {
    log(`watch page: ${engine}`);
    await page.click(`[data-engine="${engine}"]`);
    await until(`${engine}: the player reports its engine`, 10, () =>
      page.evaluate((e) => window.strataPlayer?.engine === e, engine),
    );
    const video = page.locator('video');
    const start = await until(`${engine}: playback starts`, startWithin, async () => {
      const t = await video.evaluate((v) => (!v.paused && v.currentTime > 0 ? v.currentTime : 0));
      return t || false;
    });
    await until(`${engine}: currentTime advances by ${seconds} s`, advanceWithin, async () => {
      const t = await video.evaluate((v) => v.currentTime);
      return t - start >= seconds ? t : false;
    });
    const errors = await page.evaluate((e) => window.strataPlayer.errors.filter((x) => x.engine === e), engine);
    if (errors.length) throw new Error(`${engine}: player errors: ${JSON.stringify(errors)}`);
    return video;
  }

  /**
   * Runs `steps`, then fails if any page reported a problem. On a failure: says why, lists the
   * pages' problems, and takes a screenshot of every page. Then `cleanup()`, and Chromium
   * closes. Returns whether it failed.
   */
  async function run(steps, { cleanup = () => {} } = {}) {
    let failed = false;
    try {
      await steps();
      if (problems.length) throw new Error(`the pages reported errors:\n  ${problems.join('\n  ')}`);
      log('all steps passed');
    } catch (e) {
      failed = true;
      console.error(`${name} FAILED: ${e.message}`);
      if (problems.length) console.error(`page errors so far:\n  ${problems.join('\n  ')}`);
      for (const [i, page] of context.pages().entries()) {
        await page.screenshot({ path: join(shots, `${failurePrefix}failure-${i}.png`), fullPage: true }).catch(() => {});
      }
    } finally {
      cleanup();
      await browser.close();
    }
    return failed;
  }

  return { base, token, ladder, log, problems, open, shot, plays, run };
}
