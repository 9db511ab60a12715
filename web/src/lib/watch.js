// What the watch and embed pages share: which engine to start with, and following one stream's
// live state from the directory and the public events stream.
import { directory } from './api.js';
import { ENGINES, nativeHlsOnly } from './engines.js';
import { applyEvent } from './liveness.js';
import { subscribe } from './sse.js';

/** `?engine=dash` wins; otherwise native HLS where MSE is missing, else hls.js. */
export function initialEngine(search, video) {
  const asked = new URLSearchParams(search).get('engine');
  if (ENGINES.includes(asked)) return asked;
  return video && nativeHlsOnly(video) ? 'native' : 'hls';
}

/** Low-latency playback unless `?latency=normal` asks for the engines' plain live mode. */
export function lowLatencyWanted(search) {
  return new URLSearchParams(search).get('latency') !== 'normal';
}

/**
 * Follows one stream: `onChange(entry)` with the directory entry now and after every change;
 * `onMissing()` if there is no such stream. Returns a function that stops following.
 */
export function followStream(playbackId, { onChange, onMissing, onError }) {
  let entry = null;
  directory.stream(playbackId).then(
    (found) => {
      entry = found;
      onChange(entry);
    },
    (e) => (e.status === 404 ? onMissing() : onError(e.message)),
  );
  return subscribe(directory.eventsUrl, {
    onEvent(name, payload) {
      if (payload?.playback_id !== playbackId || !entry) return;
      const [updated] = applyEvent([entry], name, payload);
      if (updated === entry) return;
      entry = updated;
      onChange(entry);
    },
  });
}
