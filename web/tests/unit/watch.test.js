import { describe, expect, test } from 'vitest';
import { initialEngine, lowLatencyWanted } from '../../src/lib/watch.js';

describe('the watch page query', () => {
  test('?engine= picks any of the four engines, anything else falls back to hls.js', () => {
    for (const engine of ['hls', 'dash', 'shaka', 'native']) {
      expect(initialEngine(`?engine=${engine}`, null)).toBe(engine);
    }
    expect(initialEngine('?engine=flash', null)).toBe('hls');
    expect(initialEngine('', null)).toBe('hls');
  });

  test('playback is low-latency unless ?latency=normal', () => {
    expect(lowLatencyWanted('')).toBe(true);
    expect(lowLatencyWanted('?engine=dash')).toBe(true);
    expect(lowLatencyWanted('?engine=hls&latency=normal')).toBe(false);
  });
});
