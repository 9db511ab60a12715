// Server-Sent Events over fetch(). EventSource cannot send an Authorization header, which the
// admin events stream needs, so this reads the stream itself, parses frames, and reconnects
// with a growing delay (1 s to 15 s) until closed.

/**
 * Splits complete SSE frames off the front of `buffer`.
 * @returns {{events: {event: string, data: string}[], rest: string}}
 */
export function parseFrames(buffer) {
  const events = [];
  const normalized = buffer.replace(/\r\n?/g, '\n');
  const frames = normalized.split('\n\n');
  const rest = frames.pop();
  for (const frame of frames) {
    let event = 'message';
    const data = [];
    for (const line of frame.split('\n')) {
      if (line === '' || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
    }
    if (data.length > 0) events.push({ event, data: data.join('\n') });
  }
  return { events, rest };
}

/**
 * Subscribes to `url`. `onEvent(name, payload)` gets each event's parsed JSON;
 * `onStatus('open'|'retrying'|'unauthorized')` tells how the connection is doing.
 * @returns {() => void} closes the subscription
 */
export function subscribe(url, { token, onEvent, onStatus = () => {} }) {
  let closed = false;
  let controller = null;
  let delay = 1000;

  async function connect() {
    while (!closed) {
      controller = new AbortController();
      try {
        const headers = token ? { Authorization: `Bearer ${token}` } : {};
        const response = await fetch(url, { headers, signal: controller.signal, cache: 'no-store' });
        if (response.status === 401) {
          onStatus('unauthorized');
          return;
        }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        onStatus('open');
        delay = 1000;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          const parsed = parseFrames(buffer + value);
          buffer = parsed.rest;
          for (const { event, data } of parsed.events) {
            try {
              onEvent(event, JSON.parse(data));
            } catch {
              // A frame that is not JSON is not ours; skip it.
            }
          }
        }
      } catch {
        if (closed) return;
      }
      if (closed) return;
      onStatus('retrying');
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 15000);
    }
  }

  connect();
  return () => {
    closed = true;
    controller?.abort();
  };
}
