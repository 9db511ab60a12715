// How the browser tests and benches start Debian's Chromium (headless, driven by
// playwright-core): one set of flags, so that every run sees the same browser.

/** Quiet and deterministic: no GPU, no background traffic, no QUIC. */
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];

/** For pages that play video: pages in the background play as the one in front does, and
 * autoplay needs no gesture. */
export const PLAYBACK_ARGS = [
  ...CHROMIUM_ARGS,
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
  '--autoplay-policy=no-user-gesture-required',
];
