// The dashboard's memory of each live session: `session.stats` samples over the last minutes.

export const HISTORY_MS = 5 * 60 * 1000;

export function emptyHistory() {
  return { bitrate: [], fps: [], speed: [] };
}

/** Adds one `session.stats` sample (at `t`, Unix ms) and forgets what is older than the window. */
export function record(history, stats, t) {
  const keep = (series, v) => {
    const next = v == null ? series : [...series, { t, v }];
    return next.filter((p) => p.t >= t - HISTORY_MS);
  };
  return {
    bitrate: keep(history.bitrate, stats.input_bitrate),
    fps: keep(history.fps, stats.input_fps),
    speed: keep(history.speed, stats.transcode_speed),
  };
}
