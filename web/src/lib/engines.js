// One interface over the three ways the watch page can play: hls.js and dash.js (Media Source
// Extensions) and the browser's own HLS (Safari, iOS). The player component only talks to this.
//
// An engine is {name, levels(), setLevel(index), destroy()} and reports through callbacks:
// onLevels(levels), onLevelSwitched(index), onError(message, fatal). A level is
// {index, width, height, bitrate}; index -1 means automatic selection.

export const ENGINES = ['hls', 'dash', 'native'];

/** Whether this browser plays HLS itself (Safari) and lacks MSE, so hls.js can't run. */
export function nativeHlsOnly(video) {
  const mse = typeof window !== 'undefined' && ('MediaSource' in window || 'ManagedMediaSource' in window);
  return !mse && video.canPlayType('application/vnd.apple.mpegurl') !== '';
}

export async function createEngine(name, video, urls, callbacks) {
  if (name === 'dash') return createDash(video, urls.dash, callbacks);
  if (name === 'native') return createNative(video, urls.hls, callbacks);
  return createHls(video, urls.hls, callbacks);
}

async function createHls(video, url, { onLevels, onLevelSwitched, onError }) {
  const { default: Hls } = await import('hls.js');
  if (!Hls.isSupported()) return createNative(video, url, { onLevels, onLevelSwitched, onError });
  const hls = new Hls({ liveSyncDurationCount: 3, backBufferLength: 30, lowLatencyMode: false });
  const levels = () =>
    hls.levels.map((l, index) => ({ index, width: l.width, height: l.height, bitrate: l.bitrate }));
  hls.on(Hls.Events.MANIFEST_PARSED, () => onLevels(levels()));
  hls.on(Hls.Events.LEVEL_SWITCHED, (_, data) => onLevelSwitched(data.level));
  hls.on(Hls.Events.ERROR, (_, data) => {
    onError(`${data.type}: ${data.details}`, data.fatal);
    if (!data.fatal) return;
    if (data.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
  });
  hls.loadSource(url);
  hls.attachMedia(video);
  return {
    name: 'hls',
    levels,
    setLevel(index) {
      // nextLevel fixes the level from the next fragment on, without emptying the buffer
      // (currentLevel would flush it and stall); -1 returns to ABR.
      hls.nextLevel = index;
    },
    latency: () => (Number.isFinite(hls.latency) ? hls.latency : null),
    destroy: () => hls.destroy(),
  };
}

async function createDash(video, url, { onLevels, onLevelSwitched, onError }) {
  const dashjs = await import('dashjs');
  const player = dashjs.MediaPlayer().create();
  player.updateSettings({
    debug: { logLevel: dashjs.Debug.LOG_LEVEL_WARNING },
    streaming: {
      delay: { liveDelayFragmentCount: 3 },
      abr: { autoSwitchBitrate: { video: true } },
    },
  });
  const representations = () => player.getRepresentationsByType('video') ?? [];
  const levels = () =>
    representations().map((r, index) => ({ index, width: r.width, height: r.height, bitrate: r.bandwidth }));
  const events = dashjs.MediaPlayer.events;
  player.on(events.STREAM_INITIALIZED, () => onLevels(levels()));
  player.on(events.QUALITY_CHANGE_RENDERED, (e) => {
    if (e.mediaType !== 'video') return;
    onLevelSwitched(representations().findIndex((r) => r.id === e.newRepresentation?.id));
  });
  player.on(events.ERROR, (e) => {
    const error = e.error ?? {};
    onError(`dash.js ${error.code ?? ''}: ${error.message ?? 'playback error'}`.trim(), true);
  });
  player.initialize(video, url, true);
  return {
    name: 'dash',
    levels,
    setLevel(index) {
      const auto = index < 0;
      player.updateSettings({ streaming: { abr: { autoSwitchBitrate: { video: auto } } } });
      if (!auto) player.setRepresentationForTypeByIndex('video', index, false);
    },
    latency: () => {
      const l = player.getCurrentLiveLatency();
      return Number.isFinite(l) && l > 0 ? l : null;
    },
    destroy: () => player.destroy(),
  };
}

function createNative(video, url, { onLevels, onError }) {
  const failed = () => onError(`native: ${video.error?.message || 'the browser could not play this stream'}`, true);
  video.addEventListener('error', failed);
  video.src = url;
  onLevels([]);
  return {
    name: 'native',
    levels: () => [],
    setLevel() {},
    latency: () => null,
    destroy() {
      video.removeEventListener('error', failed);
      video.removeAttribute('src');
      video.load();
    },
  };
}

/** What the stats panel shows, read from the video element and the engine. */
export function sample(video, engine, levels, currentLevel) {
  const quality = video.getVideoPlaybackQuality?.();
  let bufferAhead = 0;
  for (let i = 0; i < video.buffered.length; i += 1) {
    if (video.buffered.start(i) <= video.currentTime + 0.1 && video.buffered.end(i) > video.currentTime) {
      bufferAhead = video.buffered.end(i) - video.currentTime;
    }
  }
  let liveEdge = engine?.latency?.() ?? null;
  if (liveEdge == null && video.seekable.length > 0) {
    liveEdge = Math.max(0, video.seekable.end(video.seekable.length - 1) - video.currentTime);
  }
  const level = levels[currentLevel] ?? null;
  return {
    width: video.videoWidth,
    height: video.videoHeight,
    level,
    bitrate: level?.bitrate ?? null,
    buffer: bufferAhead,
    liveEdge,
    droppedFrames: quality?.droppedVideoFrames ?? 0,
    totalFrames: quality?.totalVideoFrames ?? 0,
  };
}
