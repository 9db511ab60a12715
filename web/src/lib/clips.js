// Cutting clips from the dashboard: ask for one, then follow it until it is ready (a clip is
// made from stored segments in well under a second; `READY_WITHIN_MS` is generous).

export const READY_WITHIN_MS = 15_000;
const POLL_MS = 300;

/** Creates a clip with `api` (adminApi) from `body` and waits until it is ready: the clip.
 * Throws with the server's reason when it failed, or when it is not ready in time. */
export async function cutClip(api, body, { wait = (ms) => new Promise((r) => setTimeout(r, ms)), now = Date.now } = {}) {
  let clip = await api.createClip(body);
  const deadline = now() + READY_WITHIN_MS;
  while (clip.state === 'pending') {
    if (now() > deadline) throw new Error('The clip is taking longer than expected; find it in the clips list later.');
    await wait(POLL_MS);
    clip = await api.clip(clip.id);
  }
  if (clip.state !== 'ready') throw new Error(`The clip could not be made: ${clip.reason ?? clip.state}`);
  return clip;
}

/** The page of a clip, on this origin. */
export function clipPage(clip, origin = location.origin) {
  return `${origin}/clip/${clip.id}`;
}
