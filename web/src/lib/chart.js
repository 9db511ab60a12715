// The geometry of the dashboard's line charts: which samples fall in the time window, a
// rounded top for the y axis, and the SVG path through the samples.

/** The smallest 1/2/2.5/5 × 10^n that is at least `value` (1 for nothing). */
export function niceCeiling(value) {
  if (!(value > 0)) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * magnitude >= value) return step * magnitude;
  }
  return 10 * magnitude;
}

/** Samples `{t, v}` (t in ms) within `windowMs` before `now`, oldest first. */
export function visible(points, now, windowMs) {
  return points.filter((p) => p.t >= now - windowMs && p.t <= now && Number.isFinite(p.v));
}

/** The `d` of a line through `points`, x from time and y from value. */
export function linePath(points, { now, windowMs, width, height, max }) {
  return points
    .map((p, i) => {
      const x = width - ((now - p.t) / windowMs) * width;
      const y = height - (Math.min(p.v, max) / max) * height;
      return `${i === 0 ? 'M' : 'L'}${x.toFixed(1)},${y.toFixed(1)}`;
    })
    .join(' ');
}
