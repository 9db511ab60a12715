// One interface over the four ways the watch page can play: hls.js, dash.js and Shaka Player
// (Media Source Extensions) and the browser's own HLS (Safari, iOS). The player component only
// talks to this. Every live Strata stream is low-latency (LL-HLS parts and blocking reloads,
// LL-DASH chunks): the engines run in their low-latency modes and aim at the latency the
// manifests state (PART-HOLD-BACK; the MPD's ServiceDescription), catching up by playback rate.
//
// An engine is {name, levels(), setLevel(index), destroy()} and reports through callbacks:
// onLevels(levels), onLevelSwitched(index), onError(message, fatal). A level is
// {index, width, height, bitrate}; index -1 means automatic selection.

export const ENGINES = ['hls', 'dash', 'shaka', 'native'];

/** Whether this browser plays HLS itself (Safari) and lacks MSE, so hls.js can't run. */
export function nativeHlsOnly(video) {
  const mse = typeof window !== 'undefined' && ('MediaSource' in window || 'ManagedMediaSource' in window);
  return !mse && video.canPlayType('application/vnd.apple.mpegurl') !== '';
}

/** `options.lowLatency` (default true): false plays in the engines' plain live mode. */
export async function createEngine(name, video, urls, callbacks, options = {}) {
  const lowLatency = options.lowLatency ?? true;
  if (name === 'dash') return createDash(video, urls.dash, callbacks, lowLatency);
  if (name === 'native') return createNative(video, urls.hls, callbacks);
  if (name === 'shaka') return createShaka(video, urls.dash, callbacks, lowLatency);
  return createHls(video, urls.hls, callbacks, lowLatency);
}

async function createHls(video, url, { onLevels, onLevelSwitched, onError }, lowLatency) {
  const { default: Hls } = await import('hls.js');
  if (!Hls.isSupported()) return createNative(video, url, { onLevels, onLevelSwitched, onError });
  // lowLatencyMode: parts, preload hints and blocking reloads; the target latency is the
  // playlist's PART-HOLD-BACK (a liveSync setting here would override it). Plain: three
  // segments behind, whole segments only.
  const config = lowLatency
    ? { lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.1 }
    : { lowLatencyMode: false, liveSyncDurationCount: 3 };
  const hls = new Hls({ ...config, backBufferLength: 30 });
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

async function createDash(video, url, { onLevels, onLevelSwitched, onError }, lowLatency) {
  const dashjs = await import('dashjs');
  const player = dashjs.MediaPlayer().create();
  player.updateSettings({
    debug: { logLevel: dashjs.Debug.LOG_LEVEL_WARNING },
    // dash.js switches to low-latency mode by itself on availabilityTimeComplete="false" and
    // takes its target latency and playback-rate bounds from the MPD's ServiceDescription.
    // Plain: three segments behind, no catching up.
    streaming: {
      ...(lowLatency
        ? { liveCatchup: { enabled: true } }
        : { delay: { liveDelayFragmentCount: 3 }, liveCatchup: { enabled: false } }),
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

async function createShaka(video, url, { onLevels, onLevelSwitched, onError }, lowLatency) {
  const module = await import('shaka-player');
  const shaka = module.default ?? module;
  shaka.polyfill.installAll();
  if (!shaka.Player.isBrowserSupported()) throw new Error('this browser cannot run Shaka Player');
  const player = new shaka.Player();
  // lowLatencyMode streams LL-DASH chunks as they arrive; liveSync holds the distance to live
  // by playback rate. Left to itself Shaka starts at the edge the availability offset gives
  // (a part behind the newest), too close to play through a late part.
  player.configure({
    streaming: {
      lowLatencyMode: lowLatency,
      liveSync: lowLatency
        ? { enabled: true, targetLatency: 3, targetLatencyTolerance: 0.5, minPlaybackRate: 0.96, maxPlaybackRate: 1.04 }
        : { enabled: false },
    },
  });
  const tracks = () => (player.getVideoTracks() ?? []).slice().sort((a, b) => (b.height ?? 0) - (a.height ?? 0));
  const levels = () =>
    tracks().map((t, index) => ({ index, width: t.width, height: t.height, bitrate: t.bandwidth }));
  player.addEventListener('error', (e) => {
    const error = e.detail ?? {};
    const fatal = error.severity === shaka.util.Error.Severity.CRITICAL;
    onError(`shaka ${error.code ?? ''}: ${error.message ?? 'playback error'}`.trim(), fatal);
  });
  player.addEventListener('variantchanged', () => onLevelSwitched(tracks().findIndex((t) => t.active)));
  player.addEventListener('adaptation', () => onLevelSwitched(tracks().findIndex((t) => t.active)));
  await player.attach(video);
  await player.load(url);
  onLevels(levels());
  onLevelSwitched(tracks().findIndex((t) => t.active));
  return {
    name: 'shaka',
    levels,
    setLevel(index) {
      const auto = index < 0;
      player.configure({ abr: { enabled: auto } });
      const track = tracks()[index];
      if (!auto && track) player.selectVideoTrack(track, false);
    },
    latency: () => {
      const l = player.getStats().liveLatency;
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
