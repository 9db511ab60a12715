import { describe, expect, test } from 'vitest';
import { cueAt, loadThumbnails, parseThumbnails } from '../../src/lib/thumbnails.js';

const TRACK = `WEBVTT

00:00:00.000 --> 00:00:04.000
previews/0.jpg#xywh=0,0,160,90

00:00:04.000 --> 00:00:08.000
previews/0.jpg#xywh=160,0,160,90

01:00:08.000 --> 01:00:09.500
previews/1.jpg#xywh=0,90,160,90
`;

describe('scrub previews', () => {
  test('cues name a region of a sheet, resolved against the track', () => {
    const cues = parseThumbnails(TRACK, 'https://example.org/vod/abc/thumbnails.vtt');
    expect(cues).toHaveLength(3);
    expect(cues[1]).toEqual({
      start: 4,
      end: 8,
      url: 'https://example.org/vod/abc/previews/0.jpg',
      x: 160,
      y: 0,
      w: 160,
      h: 90,
    });
    expect(cues[2].start).toBe(3608);
  });

  test('anything else is skipped', () => {
    expect(parseThumbnails('not a track', 'https://e/x.vtt')).toEqual([]);
    const odd = 'WEBVTT\n\n00:00:01.000 --> 00:00:00.500\na.jpg#xywh=0,0,1,1\n\n00:00:02.000 --> 00:00:03.000\nno region\n';
    expect(parseThumbnails(odd, 'https://e/x.vtt')).toEqual([]);
  });

  test('the cue under the pointer', () => {
    const cues = parseThumbnails(TRACK, 'https://e/t.vtt');
    expect(cueAt(cues, 0)).toBe(cues[0]);
    expect(cueAt(cues, 3.99)).toBe(cues[0]);
    expect(cueAt(cues, 4)).toBe(cues[1]);
    expect(cueAt(cues, 100)).toBe(null);
    expect(cueAt(cues, -1)).toBe(null);
    expect(cueAt([], 1)).toBe(null);
  });

  test('a track that is not made yet has no cues', async () => {
    const missing = async () => ({ ok: false, status: 404 });
    expect(await loadThumbnails('/vod/abc/thumbnails.vtt', missing)).toEqual([]);
    const found = async (url) => ({ ok: true, text: async () => TRACK, url });
    const cues = await loadThumbnails('/vod/abc/thumbnails.vtt', found);
    expect(cues[0].url).toBe(new URL('/vod/abc/previews/0.jpg', window.location.href).href);
  });
});
