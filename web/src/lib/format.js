// How numbers are shown: bitrates, durations, sizes, times.

export function bitrate(bitsPerSecond) {
  if (bitsPerSecond == null || !Number.isFinite(bitsPerSecond)) return '–';
  if (bitsPerSecond >= 1e6) return `${(bitsPerSecond / 1e6).toFixed(bitsPerSecond >= 1e7 ? 1 : 2)} Mbps`;
  if (bitsPerSecond >= 1e3) return `${Math.round(bitsPerSecond / 1e3)} kbps`;
  return `${Math.round(bitsPerSecond)} bps`;
}

/** A bitrate in few characters, for chart axes: `2.5M`, `800k`. */
export function shortBitrate(bitsPerSecond) {
  if (bitsPerSecond >= 1e6) return `${+(bitsPerSecond / 1e6).toFixed(1)}M`;
  if (bitsPerSecond >= 1e3) return `${Math.round(bitsPerSecond / 1e3)}k`;
  return `${Math.round(bitsPerSecond)}`;
}

export function seconds(value, digits = 1) {
  if (value == null || !Number.isFinite(value)) return '–';
  return `${value.toFixed(digits)} s`;
}

export function duration(totalSeconds) {
  if (totalSeconds == null || !Number.isFinite(totalSeconds)) return '–';
  const s = Math.max(0, Math.floor(totalSeconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n) => String(n).padStart(2, '0');
  return h > 0 ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

/** Bytes as people read them: `734 kB`, `1.2 GB`. */
export function size(bytes) {
  if (bytes == null || !Number.isFinite(bytes)) return '–';
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(value >= 100 ? 0 : 1)} ${units[unit]}`;
}

export function rungLabel(level) {
  if (!level) return '–';
  return level.height ? `${level.height}p` : bitrate(level.bitrate);
}
