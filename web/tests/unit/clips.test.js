import { describe, expect, test } from 'vitest';
import { clipPage, cutClip } from '../../src/lib/clips.js';

/** An admin API stand-in whose clip goes through `states` one poll at a time. */
function fakeApi(states, reason) {
  const calls = [];
  let i = 0;
  return {
    calls,
    createClip: async (body) => {
      calls.push(body);
      return { id: 'cccccccccccccccc', state: states[i] };
    },
    clip: async (id) => {
      i = Math.min(i + 1, states.length - 1);
      return { id, state: states[i], reason };
    },
  };
}

const instant = { wait: async () => {} };

describe('clips', () => {
  test('a clip is followed until it is ready', async () => {
    const api = fakeApi(['pending', 'pending', 'ready']);
    const clip = await cutClip(api, { stream_id: 'str_x', last_secs: 30 }, instant);
    expect(clip.state).toBe('ready');
    expect(api.calls).toEqual([{ stream_id: 'str_x', last_secs: 30 }]);
    expect(clipPage(clip, 'https://strata.example')).toBe('https://strata.example/clip/cccccccccccccccc');
  });

  test('a failed clip says why', async () => {
    const api = fakeApi(['pending', 'failed'], 'nothing is stored yet');
    await expect(cutClip(api, {}, instant)).rejects.toThrow('nothing is stored yet');
  });

  test('a clip that takes too long is given up on', async () => {
    let t = 0;
    const api = fakeApi(['pending']);
    const clock = { wait: async (ms) => (t += ms), now: () => t };
    await expect(cutClip(api, {}, clock)).rejects.toThrow('longer than expected');
  });
});
