// End-to-end: the dashboard's Devices view in headless Chromium (Debian's chromium, driven by
// playwright-core), against a running Strata and a device agent (`strata device-agent
// --test-pattern`) the caller started for the device STRATA_DEVICE_ID.
//
// 1. The dashboard signs in with the admin token and opens Devices: the device's row shows it
//    online, seen just now, with a signaling RTT; Start can be pressed, Stop cannot.
// 2. Start: the row shows it streaming, and the preview shows its stream's poster (a real
//    picture); the preview is refreshed with a new picture.
// 3. Stop: the row shows it online again, and the preview is a placeholder.
// 4. Rename inline; revoke its token: the server disconnects it and the row shows it offline;
//    delete: the row leaves.
// Screenshots go to STRATA_SCREENSHOTS. Exits non-zero on the first failure, or on any page
// error or console error, with a screenshot of the page.
//
// Env: STRATA_URL, STRATA_ADMIN_TOKEN, STRATA_SCREENSHOTS (a directory), STRATA_DEVICE_ID,
// CHROMIUM (optional path).
import { CHROMIUM_ARGS } from '../chromium.mjs';
import { need, startE2e, until } from './harness.mjs';

const deviceId = need('STRATA_DEVICE_ID', 'devices e2e');
const { token, log, open, shot, run } = await startE2e({
  name: 'devices e2e',
  tag: 'devices',
  args: CHROMIUM_ARGS,
  failurePrefix: 'devices-',
});

const failed = await run(async () => {
  // 1. Sign in, open Devices; the agent is connected.
  const page = await open('/dashboard', 'dashboard');
  await page.fill('[data-testid="token-input"]', token);
  await page.click('[data-testid="sign-in"]');
  await page.click('[data-testid="dashboard-view"] [data-view="devices"]');
  const row = page.locator(`[data-testid="device-row"][data-device-id="${deviceId}"]`);
  await until('the device is listed', 15, () => row.count());
  const stateOf = async () => {
    const state = row.locator('[data-testid="device-state"]');
    return `${await state.getAttribute('data-state')}:${(await state.innerText()).trim().toLowerCase()}`;
  };
  const rttOf = () => row.locator('[data-testid="device-rtt"]').innerText();
  const start = row.locator('[data-testid="device-start"]');
  const stop = row.locator('[data-testid="device-stop"]');
  const preview = row.locator('[data-testid="device-preview"]');

  const rtt = await until('the device shows online with an RTT', 30, async () => {
    const [state, rtt] = [await stateOf(), await rttOf()];
    return state === 'online:online' && /^RTT (\d+|<1) ms$/.test(rtt) ? rtt : false;
  });
  const seen = await row.locator('[data-testid="device-last-seen"]').innerText();
  if (seen !== 'just now') throw new Error(`an online device was last seen "${seen}"`);
  if (!(await start.isEnabled()) || (await stop.isEnabled())) throw new Error('online: Start should be enabled and Stop disabled');
  if (await preview.count()) throw new Error('online, not streaming: the preview shows a picture');
  log(`online, ${rtt}, last seen ${seen}`);
  await shot(page, 'devices-online.png');

  // 2. Start: streaming, with the stream's poster as preview.
  await start.click();
  await until('the device shows streaming', 30, async () => (await stateOf()) === 'streaming:streaming');
  await until('Stop can be pressed and Start cannot', 5, async () => (await stop.isEnabled()) && !(await start.isEnabled()));
  const picture = async () => {
    if (!(await preview.count())) return false;
    return preview.evaluate((img) =>
      img.complete && img.naturalWidth > 0 ? { src: img.getAttribute('src'), width: img.naturalWidth, height: img.naturalHeight } : false,
    );
  };
  // the ladder's first poster comes after its first decoded frames, on a loaded machine
  const first = await until('the preview shows the stream’s poster', 60, picture);
  log(`streaming; preview ${first.width}x${first.height} from ${first.src}`);
  if (!(await preview.getAttribute('alt', { timeout: 1000 }))) throw new Error('the preview has no alt text');
  // segments are published every couple of seconds while it streams: none of their events may
  // take the preview away (it used to flicker off until the next directory read)
  for (const until = Date.now() + 6000; Date.now() < until; ) {
    if (!(await preview.count())) throw new Error('the preview went away while the device streams');
    await page.waitForTimeout(100);
  }
  const refreshed = await until('the preview is refreshed', 20, async () => {
    const now = await picture();
    return now && now.src !== first.src ? now : false;
  });
  log(`preview refreshed: ${refreshed.src}`);
  await shot(page, 'devices-streaming.png');

  // 3. Stop: online again, no picture.
  await stop.click();
  await until('the device shows online again', 30, async () => (await stateOf()) === 'online:online');
  await until('the preview is a placeholder again', 5, async () => (await preview.count()) === 0);
  await until('Start can be pressed again and Stop cannot', 5, async () => (await start.isEnabled()) && !(await stop.isEnabled()));
  log(`stopped; ${await rttOf()}`);
  await shot(page, 'devices-stopped.png');

  // 4. Rename inline; revoke the token (the server disconnects the device: offline, no RTT,
  //    Start disabled); delete.
  await row.getByRole('button', { name: /^Rename / }).click();
  await row.locator('[data-testid="device-rename-input"]').fill('pi-cam-renamed');
  await row.locator('[data-testid="device-rename-input"]').press('Enter');
  const shownName = row.locator('[data-testid="device-name"]');
  await until('the new name is shown', 10, async () => (await shownName.count()) && (await shownName.innerText()) === 'pi-cam-renamed');
  const revoke = row.locator('[data-testid="device-revoke"]');
  await revoke.click();
  await revoke.click();
  await until('the device shows offline after its token is revoked', 20, async () => (await stateOf()) === 'offline:offline');
  if ((await rttOf()) !== 'RTT –') throw new Error(`offline, the RTT shows "${await rttOf()}"`);
  if (await start.isEnabled()) throw new Error('offline: Start is enabled');
  log('renamed, revoked: offline');
  await shot(page, 'devices-revoked.png');
  const remove = row.locator('[data-testid="device-delete"]');
  await remove.click();
  await remove.click();
  await until('the deleted device leaves the list', 10, async () => (await row.count()) === 0);
  log('deleted');
});
process.exit(failed ? 1 : 0);
