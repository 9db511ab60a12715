import { afterEach, describe, expect, test } from 'vitest';
import StatsPanel from '../../src/components/StatsPanel.svelte';
import { render } from './mount.js';

let view;
afterEach(() => {
  view?.destroy();
  view = null;
});

const playing720 = {
  width: 1280,
  height: 720,
  level: { index: 1, width: 1280, height: 720, bitrate: 2_570_561 },
  bitrate: 2_570_561,
  buffer: 5.94,
  liveEdge: 6.21,
  droppedFrames: 3,
  totalFrames: 600,
};

describe('StatsPanel', () => {
  test('shows the rendition, resolution, bitrate, buffer, live distance and dropped frames', () => {
    view = render(StatsPanel, { stats: playing720, engine: 'dash', auto: true });
    expect(view.text('[data-stat="Engine"]')).toBe('dash.js');
    expect(view.text('[data-stat="Rendition"]')).toBe('720p · auto');
    expect(view.text('[data-stat="Resolution"]')).toBe('1280×720');
    expect(view.text('[data-stat="Bitrate"]')).toBe('2.57 Mbps');
    expect(view.text('[data-stat="Buffer"]')).toBe('5.9 s');
    expect(view.text('[data-stat="Behind live"]')).toBe('6.2 s');
    expect(view.text('[data-stat="Dropped frames"]')).toBe('3 (0.5 %)');
  });

  test('a fixed rendition is not labelled auto', () => {
    view = render(StatsPanel, { stats: { ...playing720, level: { height: 360, bitrate: 764_413 } }, engine: 'hls', auto: false });
    expect(view.text('[data-stat="Engine"]')).toBe('hls.js');
    expect(view.text('[data-stat="Rendition"]')).toBe('360p');
  });

  test('before playback every figure is a dash, not a zero or NaN', () => {
    view = render(StatsPanel, { stats: null, engine: 'native' });
    expect(view.text('[data-stat="Engine"]')).toBe('Native HLS');
    for (const label of ['Rendition', 'Resolution', 'Bitrate', 'Buffer', 'Behind live', 'Dropped frames']) {
      expect(view.text(`[data-stat="${label}"]`)).toBe('–');
    }
    expect(view.target.textContent).not.toMatch(/NaN|undefined/);
  });
});
