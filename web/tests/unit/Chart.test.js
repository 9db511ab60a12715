import { afterEach, describe, expect, test } from 'vitest';
import Chart from '../../src/components/Chart.svelte';
import { linePath, niceCeiling, visible } from '../../src/lib/chart.js';
import { render } from './mount.js';

let view;
afterEach(() => {
  view?.destroy();
  view = null;
});

const now = 1_800_000_000_000;
const second = 1000;

/** The points of a path's `d`, as [x, y] numbers. */
function points(d) {
  return d.split(' ').map((p) => p.slice(1).split(',').map(Number));
}

describe('Chart', () => {
  test('plots the samples of the window, right edge now, scaled to a rounded maximum', () => {
    const samples = [
      { t: now - 400 * second, v: 9_000_000 }, // older than the 5-minute window: left out
      { t: now - 300 * second, v: 1_000_000 },
      { t: now - 150 * second, v: 3_000_000 },
      { t: now, v: 2_000_000 },
    ];
    view = render(Chart, { label: 'Input bitrate', points: samples, now, format: (v) => `${v / 1e6} Mbps` });
    const line = view.target.querySelector('path.line');
    const xy = points(line.getAttribute('d'));
    expect(xy).toHaveLength(3);
    expect(xy[0][0]).toBeCloseTo(0);
    expect(xy[1][0]).toBeCloseTo(300);
    expect(xy[2][0]).toBeCloseTo(600);
    // 3 Mbps × 1.1 rounds up to a 5 Mbps axis: 3 Mbps sits at 60 % of the 140 px height.
    expect(view.text('[data-axis-max]')).toBe('5 Mbps');
    expect(xy[1][1]).toBeCloseTo(140 - 0.6 * 140);
    expect(view.text('[data-latest]')).toBe('2 Mbps');
    expect(view.target.querySelector('path.area')).not.toBeNull();
    expect(view.target.querySelector('svg').getAttribute('aria-label')).toBe('Input bitrate over the last 5 minutes');
  });

  test('with no samples it says it is waiting instead of drawing', () => {
    view = render(Chart, { label: 'Input frame rate', points: [], now });
    expect(view.target.querySelector('path.line')).toBeNull();
    expect(view.target.textContent).toContain('Waiting for data');
    expect(view.text('[data-latest]')).toBe('–');
  });

  test('values above the axis are clipped to the top, not drawn off the chart', () => {
    const d = linePath([{ t: now, v: 50 }], { now, windowMs: 60_000, width: 600, height: 140, max: 10 });
    expect(points(d)[0]).toEqual([600, 0]);
  });
});

describe('chart geometry', () => {
  test('nice ceilings', () => {
    expect(niceCeiling(0)).toBe(1);
    expect(niceCeiling(3.3)).toBe(5);
    expect(niceCeiling(31 * 1.1)).toBe(50);
    expect(niceCeiling(2_750_000 * 1.1)).toBe(5_000_000);
    expect(niceCeiling(1.9)).toBe(2);
    expect(niceCeiling(20)).toBe(20);
  });

  test('the window keeps recent finite samples only', () => {
    const kept = visible(
      [
        { t: now - 61_000, v: 1 },
        { t: now - 1000, v: Number.NaN },
        { t: now - 500, v: 2 },
      ],
      now,
      60_000,
    );
    expect(kept).toEqual([{ t: now - 500, v: 2 }]);
  });
});
