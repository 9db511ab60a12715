#!/usr/bin/python3
"""LL-HLS part availability: how long after a part's media ends a player can know it exists.

Run by benches/latency.sh against a running Strata that receives a stamped publish (every
video frame carries the wall clock in ms mod 2^24, burned in as 24 black/white 40x40 blocks
along the top of a 1280x720 picture, bit k at x = 40k).

For every rendition given (--stream LABEL=URL_OF_index.m3u8=TARGET_MS), one thread follows the live edge
the way an LL-HLS player does: it reads the playlist's EXT-X-PRELOAD-HINT (part P of segment
M), asks for `index.m3u8?_HLS_msn=M&_HLS_part=P` (blocking reload) and notes the wall clock T
at which the answer, listing that part, arrives. Another thread fetches the parts (and the
earlier parts of the same segment, so every part can be decoded from its segment's IDR).
After the loop, each segment is decoded once with ffmpeg and the stamp S of every part's last
video frame is read back. Part latency = T - S - one frame duration: the time from the end of
the part's last frame (the moment its media is complete, which is when the next frame is
captured) to the part being listed. S is stamped before the publisher's own x264 encode
(zerolatency) and RTMP send, so those are included.

Next to a peer, in the same window: --segments LABEL=URL follows a Strata rendition by whole
segments (blocking `_HLS_msn=M`, T when `M.m4s` is listed) and --peer LABEL=PATH polls the
playlist file a peer writes (nginx-rtmp's HLS) every 5 ms; both report the time from the end of
a segment's last frame to its listing. --wait-only waits until the playlists are live.

Standard library only (plus the ffmpeg CLI). Prints a table and, per stream, one line
`SUMMARY part|segment LABEL median_ms p90_ms n target_ms` for the caller.
"""

import argparse
import collections
import http.client
import json
import queue
import re
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.parse

WRAP = 1 << 24
BLOCKS = 24
# the stamp strip of a 1280x720 picture; other sizes are scaled to it before sampling
STRIP_W, STRIP_H, BLOCK = 1280, 40, 40

HINT = re.compile(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="(\d+)\.(\d+)\.m4s"')
MAP = re.compile(r'#EXT-X-MAP:URI="([^"]+)"')
PART_DURATION = re.compile(r"#EXT-X-PART:DURATION=([0-9.]+)")
HOLD_BACK = re.compile(r"PART-HOLD-BACK=([0-9.]+)")


class Client:
    """One keep-alive HTTP/1.1 connection to the origin (reconnects once on a dropped one)."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.conn = None

    def get(self, path, timeout=15):
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            try:
                self.conn.request("GET", path)
                r = self.conn.getresponse()
                body = r.read()
                return r.status, body
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise RuntimeError("unreachable")


def boxes(data, start=0, end=None):
    """(type, payload_start, box_end) of the ISO BMFF boxes in data[start:end]."""
    end = len(data) if end is None else end
    i = start
    while i + 8 <= end:
        size, kind = struct.unpack(">I4s", data[i : i + 8])
        header = 8
        if size == 1:
            size = struct.unpack(">Q", data[i + 8 : i + 16])[0]
            header = 16
        elif size == 0:
            size = end - i
        if size < header or i + size > end:
            return
        yield kind.decode("latin-1"), i + header, i + size
        i += size


def sample_count(part):
    """Samples in a CMAF part: the sum of sample_count over every moof/traf/trun."""
    n = 0
    for kind, s, e in boxes(part):
        if kind != "moof":
            continue
        for kind2, s2, e2 in boxes(part, s, e):
            if kind2 != "traf":
                continue
            for kind3, s3, _ in boxes(part, s2, e2):
                if kind3 == "trun":
                    n += struct.unpack(">I", part[s3 + 4 : s3 + 8])[0]
    return n


def decode_stamps(data, fmt="mp4"):
    """Stamps of every video frame of `data` (init + parts, or an MPEG-TS segment), in
    presentation order."""
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-f", fmt, "-i", "pipe:0", "-an", "-vsync", "0",
         "-vf", f"crop=iw:ih/18:0:0,scale={STRIP_W}:{STRIP_H}:flags=neighbor",
         "-f", "rawvideo", "-pix_fmt", "gray", "pipe:1"],
        input=data, capture_output=True, check=False,
    )
    frame = STRIP_W * STRIP_H
    raw = out.stdout
    stamps = []
    for f in range(len(raw) // frame):
        px = raw[f * frame : (f + 1) * frame]
        row = (BLOCK // 2) * STRIP_W
        stamps.append(sum(1 << k for k in range(BLOCKS) if px[row + k * BLOCK + BLOCK // 2] >= 128))
    return stamps


class Follower:
    """Follows one rendition's live edge with blocking reloads for `seconds`."""

    def __init__(self, label, url, seconds):
        u = urllib.parse.urlsplit(url)
        self.label, self.seconds = label, seconds
        self.host, self.port = u.hostname, u.port or 80
        self.path = u.path
        self.base = u.path.rsplit("/", 1)[0] + "/"
        self.measured = []  # (segment, part, T seconds, waited seconds)
        self.parts = {}  # (segment, part) -> bytes
        self.init = None
        self.hold_back = None
        self.error = None
        self.todo = queue.Queue()
        self.vanished = 0  # hinted parts that never came (their segment ended first)
        self.durations = collections.Counter()  # EXT-X-PART durations seen

    def run(self):
        try:
            self._follow()
        except Exception as e:  # reported with the results
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.todo.put(None)

    def _follow(self):
        client = Client(self.host, self.port)
        status, body = client.get(self.path)
        if status != 200:
            raise RuntimeError(f"{self.path}: HTTP {status}")
        text = body.decode()
        m = MAP.search(text)
        if not m:
            raise RuntimeError("no EXT-X-MAP in the playlist")
        self.todo.put(("init", m.group(1)))
        hb = HOLD_BACK.search(text)
        self.hold_back = float(hb.group(1)) if hb else None
        deadline = time.time() + self.seconds
        while time.time() < deadline:
            hint = HINT.search(text)
            if not hint:
                raise RuntimeError("no EXT-X-PRELOAD-HINT in the playlist (not a live LL-HLS edge?)")
            n, p = int(hint.group(1)), int(hint.group(2))
            sent = time.time()
            status, body = client.get(f"{self.path}?_HLS_msn={n}&_HLS_part={p}")
            t = time.time()
            if status != 200:
                raise RuntimeError(f"blocking reload for {n}.{p}: HTTP {status}")
            text = body.decode()
            if f'URI="{n}.{p}.m4s"' not in text:
                if f"\n{n}.m4s\n" in text or f'URI="{n + 1}.' in text:
                    # the hinted part never came: its segment ended before it (a keyframe
                    # cut); the answer is the next hint's playlist
                    self.vanished += 1
                    continue
                raise RuntimeError(f"the blocking answer for {n}.{p} does not list it")
            self.measured.append((n, p, t, t - sent))
            self.durations.update(PART_DURATION.findall(text))
            self.todo.put(("part", n, p))

    def fetch(self):
        """Fetches init and parts as the follower names them (its own connection)."""
        client = Client(self.host, self.port)
        while True:
            item = self.todo.get()
            if item is None:
                return
            try:
                if item[0] == "init":
                    status, body = client.get(self.base + item[1])
                    if status == 200:
                        self.init = body
                    continue
                _, n, p = item
                for q in range(p + 1):  # the segment's earlier parts, for its IDR
                    if (n, q) in self.parts:
                        continue
                    status, body = client.get(f"{self.base}{n}.{q}.m4s")
                    if status == 200:
                        self.parts[(n, q)] = body
            except (http.client.HTTPException, OSError) as e:
                self.error = self.error or f"fetching parts: {e}"

    def results(self, frame_ms):
        """Part latencies in ms (from the end of each part's last frame), and counts of
        parts that could not be used."""
        latencies, undecoded, late = [], 0, 0
        if self.init is None:
            return latencies, len(self.measured), late
        by_segment = {}
        for n, p, t, waited in self.measured:
            by_segment.setdefault(n, []).append((p, t, waited))
        for n, measured in sorted(by_segment.items()):
            last = max(p for p, _, _ in measured)
            chunks = [self.parts.get((n, q)) for q in range(last + 1)]
            if any(c is None for c in chunks):
                undecoded += len(measured)
                continue
            stamps = decode_stamps(self.init + b"".join(chunks))
            counts = [sample_count(c) for c in chunks]
            # align from the end: a decoder that drops leading frames does not shift the rest
            after = 0
            ends = {}
            for q in range(last, -1, -1):
                ends[q] = len(stamps) - 1 - after
                after += counts[q]
            for p, t, waited in measured:
                i = ends[p]
                if i < 0 or counts[p] == 0:
                    undecoded += 1
                    continue
                if waited < 0.002:
                    # the answer came at once: the part existed before we asked, so T is late
                    late += 1
                    continue
                lat = ((int(t * 1000) % WRAP - stamps[i]) % WRAP) - frame_ms
                if not -1000 < lat < 10_000:  # a misread stamp
                    undecoded += 1
                    continue
                latencies.append(lat)
        return latencies, undecoded, late


class SegmentFollower:
    """Strata, whole segments: blocking reloads `_HLS_msn=M` for the segment being produced;
    T when the answer lists `M.m4s`; the stamp of the segment's last frame."""

    def __init__(self, label, url, seconds):
        u = urllib.parse.urlsplit(url)
        self.label, self.seconds = label, seconds
        self.host, self.port = u.hostname, u.port or 80
        self.path = u.path
        self.base = u.path.rsplit("/", 1)[0] + "/"
        self.measured = []  # (segment, T, media bytes)
        self.init = None
        self.error = None

    def run(self):
        try:
            client = Client(self.host, self.port)
            status, body = client.get(self.path)
            text = body.decode()
            self.init = client.get(self.base + MAP.search(text).group(1))[1]
            deadline = time.time() + self.seconds
            pending = []
            while time.time() < deadline:
                seq = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text).group(1))
                m = seq + text.count("#EXTINF")
                status, body = client.get(f"{self.path}?_HLS_msn={m}")
                t = time.time()
                text = body.decode()
                if status != 200 or f"\n{m}.m4s\n" not in text:
                    raise RuntimeError(f"blocking reload for segment {m}: HTTP {status}")
                pending.append((m, t))
            for m, t in pending:
                status, body = client.get(f"{self.base}{m}.m4s")
                if status == 200:
                    self.measured.append((m, t, self.init + body))
        except Exception as e:  # reported with the results
            self.error = f"{type(e).__name__}: {e}"

    def results(self, frame_ms):
        return segment_latencies(self.measured, "mp4", frame_ms)


class PlaylistFilePoller:
    """A peer that writes its playlist to disk (nginx-rtmp): polled every 5 ms; T when a
    segment first appears in it; the segment read at once (the peer deletes old ones)."""

    def __init__(self, label, path, seconds):
        self.label, self.path, self.seconds = label, path, seconds
        self.dir = path.rsplit("/", 1)[0] + "/"
        self.measured = []
        self.error = None

    def run(self):
        seen = set()
        deadline = time.time() + self.seconds
        first = True
        try:
            while time.time() < deadline:
                try:
                    with open(self.path) as f:
                        text = f.read()
                except FileNotFoundError:
                    text = ""
                t = time.time()
                for uri in re.findall(r"^([^#\s][^\s]*)$", text, re.M):
                    if uri in seen:
                        continue
                    seen.add(uri)
                    if first:
                        continue  # listed before we looked
                    with open(self.dir + uri, "rb") as f:
                        self.measured.append((uri, t, f.read()))
                if text:
                    first = False
                time.sleep(0.005)
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"

    def results(self, frame_ms):
        return segment_latencies(self.measured, "mpegts", frame_ms)


def segment_latencies(measured, fmt, frame_ms):
    latencies, undecoded = [], 0
    for _, t, data in measured:
        stamps = decode_stamps(data, fmt)
        if not stamps:
            undecoded += 1
            continue
        lat = ((int(t * 1000) % WRAP - stamps[-1]) % WRAP) - frame_ms
        if -1000 < lat < 10_000:
            latencies.append(lat)
        else:
            undecoded += 1
    return latencies, undecoded, 0


def wait_ready(urls, seconds=90):
    deadline = time.time() + seconds
    for url in urls:
        u = urllib.parse.urlsplit(url)
        client = Client(u.hostname, u.port or 80)
        while True:
            try:
                status, body = client.get(u.path, timeout=5)
                text = body.decode() if status == 200 else ""
            except (http.client.HTTPException, OSError):
                text = ""
            if HINT.search(text) and text.count("#EXTINF") >= 2:
                break
            if time.time() > deadline:
                print(f"no live low-latency playlist at {u.path} within {seconds} s", file=sys.stderr)
                return 1
            time.sleep(0.2)
    return 0


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stream", action="append", required=True,
                    help="LABEL=http://host:port/live/ID/RENDITION/index.m3u8=TARGET_MS")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--frame-ms", type=float, default=1000 / 30)
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--wait-only", action="store_true",
                    help="only wait (90 s at most) until every playlist is a live LL-HLS edge "
                         "with two segments listed")
    ap.add_argument("--segments", action="append", default=[],
                    help="LABEL=URL_OF_A_STRATA_index.m3u8: whole segments, next to --peer")
    ap.add_argument("--peer", action="append", default=[],
                    help="LABEL=PATH_OF_A_PLAYLIST_FILE a peer server writes (nginx-rtmp)")
    args = ap.parse_args()
    if args.wait_only:
        return wait_ready([s.split("=", 1)[1].rsplit("=", 1)[0] for s in args.stream])

    followers, targets = [], {}
    for spec in args.stream:
        label, rest = spec.split("=", 1)
        url, target = rest.rsplit("=", 1)
        followers.append(Follower(label, url, args.seconds))
        targets[label] = float(target)
    threads = []
    for f in followers:
        threads += [threading.Thread(target=f.run), threading.Thread(target=f.fetch)]
    segment_followers = []
    for spec in args.segments:
        label, url = spec.split("=", 1)
        segment_followers.append(SegmentFollower(label, url, args.seconds))
    for spec in args.peer:
        label, path = spec.split("=", 1)
        segment_followers.append(PlaylistFilePoller(label, path, args.seconds))
    threads += [threading.Thread(target=f.run) for f in segment_followers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    print(f"part availability: end of a part's last frame -> its blocking playlist answer "
          f"(T - stamp - {args.frame_ms:.1f} ms frame), {args.seconds:.0f} s")
    print("  includes the publisher's x264 (zerolatency) + RTMP send; add one frame for "
          "'from the last frame's capture'")
    print(f"  {'stream':<24} {'parts':>5} {'median':>8} {'p90':>8} {'min':>7} {'max':>7}  target")
    raw = {}
    failed = False
    for f in followers:
        lat, undecoded, late = f.results(args.frame_ms)
        raw[f.label] = {"latencies_ms": lat, "undecoded": undecoded, "late": late,
                        "error": f.error, "part_hold_back": f.hold_back}
        target = targets[f.label]
        if not lat:
            failed = True
            print(f"  {f.label:<24} no measurement ({f.error or 'no decodable part'})")
            print(f"SUMMARY part {f.label} - - 0 {target:.0f}")
            continue
        med, p90 = statistics.median(lat), pct(lat, 0.9)
        verdict = "ok" if med <= target else "over target"
        notes = []
        if undecoded:
            notes.append(f"{undecoded} undecodable")
        if late:
            notes.append(f"{late} already there when asked")
        if f.error:
            notes.append(f"stopped early: {f.error}")
        print(f"  {f.label:<24} {len(lat):>5} {med:>6.0f}ms {p90:>6.0f}ms {min(lat):>5.0f}ms "
              f"{max(lat):>5.0f}ms  <= {target:.0f} ms median: {verdict}"
              + (f"  ({'; '.join(notes)})" if notes else ""))
        seen = ", ".join(f"{float(d):.3f} s" for d, _ in f.durations.most_common(3))
        print(f"  {'':<24} part durations listed: {seen}; {f.vanished} hinted part(s) never came "
              "(segment ended first)")
        print(f"SUMMARY part {f.label} {med:.0f} {p90:.0f} {len(lat)} {target:.0f}")
    if segment_followers:
        print(f"segment availability, next to a peer: end of a segment's last frame -> the "
              f"playlist listing it (Strata: blocking reload; peer: its playlist file, polled "
              f"every 5 ms)")
        print(f"  {'server':<24} {'segs':>5} {'median':>8} {'p90':>8} {'min':>7} {'max':>7}")
    for f in segment_followers:
        lat, undecoded, _ = f.results(args.frame_ms)
        raw[f.label] = {"latencies_ms": lat, "undecoded": undecoded, "error": f.error}
        if not lat:
            print(f"  {f.label:<24} no measurement ({f.error or 'no decodable segment'})")
            print(f"SUMMARY segment {f.label} - - 0 -")
            continue
        med, p90 = statistics.median(lat), pct(lat, 0.9)
        notes = ([f"{undecoded} undecodable"] if undecoded else []) + (
            [f"stopped early: {f.error}"] if f.error else [])
        print(f"  {f.label:<24} {len(lat):>5} {med:>6.0f}ms {p90:>6.0f}ms {min(lat):>5.0f}ms "
              f"{max(lat):>5.0f}ms  (reference)" + (f"  ({'; '.join(notes)})" if notes else ""))
        print(f"SUMMARY segment {f.label} {med:.0f} {p90:.0f} {len(lat)} -")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(raw, out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
