// The origin's JSON APIs: the public directory (no token) and the admin API (bearer token kept
// in this browser's localStorage).

const TOKEN_KEY = 'strata.adminToken';

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function request(method, path, { token, body } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch {
    throw new ApiError(0, 'Strata is not reachable. Check that the server is running.');
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) {
    throw new ApiError(response.status, json?.error ?? `The server answered HTTP ${response.status}.`);
  }
  return json;
}

export const directory = {
  streams: () => request('GET', '/api/public/streams'),
  stream: (playbackId) => request('GET', `/api/public/streams/${encodeURIComponent(playbackId)}`),
  recording: (id) => request('GET', `/api/public/recordings/${encodeURIComponent(id)}`),
  clip: (id) => request('GET', `/api/public/clips/${encodeURIComponent(id)}`),
  eventsUrl: '/api/public/events',
};

export function adminApi(token) {
  const call = (method, path, body) => request(method, `/api/v1${path}`, { token, body });
  return {
    streams: () => call('GET', '/streams'),
    createStream: (name, ladder, record) => call('POST', '/streams', { name, ladder: ladder || undefined, record }),
    deleteStream: (id) => call('DELETE', `/streams/${encodeURIComponent(id)}`),
    rotateKey: (id) => call('POST', `/streams/${encodeURIComponent(id)}/key`),
    liveSessions: () => call('GET', '/sessions?state=live'),
    ladders: () => call('GET', '/ladders'),
    stopSession: (id) => call('DELETE', `/sessions/${encodeURIComponent(id)}`),
    devices: () => call('GET', '/devices'),
    createDevice: (name, streamId) => call('POST', '/devices', { name, stream_id: streamId }),
    renameDevice: (id, name) => call('PATCH', `/devices/${encodeURIComponent(id)}`, { name }),
    deleteDevice: (id) => call('DELETE', `/devices/${encodeURIComponent(id)}`),
    rotateDeviceToken: (id) => call('POST', `/devices/${encodeURIComponent(id)}/token`),
    revokeDeviceToken: (id) => call('DELETE', `/devices/${encodeURIComponent(id)}/token`),
    startDevice: (id) => call('POST', `/devices/${encodeURIComponent(id)}/start`),
    stopDevice: (id) => call('POST', `/devices/${encodeURIComponent(id)}/stop`),
    recordings: (streamId) =>
      call('GET', streamId ? `/recordings?stream_id=${encodeURIComponent(streamId)}` : '/recordings'),
    deleteRecording: (id) => call('DELETE', `/recordings/${encodeURIComponent(id)}`),
    createClip: (body) => call('POST', '/clips', body),
    clip: (id) => call('GET', `/clips/${encodeURIComponent(id)}`),
    eventsUrl: '/api/v1/events',
  };
}

export const tokenStore = {
  get: () => localStorage.getItem(TOKEN_KEY) ?? '',
  set: (token) => localStorage.setItem(TOKEN_KEY, token),
  clear: () => localStorage.removeItem(TOKEN_KEY),
};
