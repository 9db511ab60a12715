#!/usr/bin/env bash
# Low-latency delivery: how soon a viewer can have what the camera saw, in one run.
# One ffmpeg publishes a live 720p30 test picture with the wall clock (ms mod 2^24) burned into
# every frame as 24 black/white blocks along its top, over RTMP to two Strata streams at once
# (ffmpeg's tee: one encode, the same stamps): one on the `passthrough` ladder and one on the
# shipped `low-latency` ladder. Parts are 0.5 s, segments 2 s (the defaults).
#  1. Part availability (benches/part_latency.py): the time from the end of an LL-HLS part's
#     last frame to the blocking playlist request listing it, for the passthrough `source`
#     rendition and the ladder's `720p` rung, over PART_SECONDS.
#  2. Glass-to-glass (web/tests/bench/glass_to_glass.mjs): headless Chromium on Strata's watch
#     page reads the stamp of each frame it presents, for hls.js LL, dash.js LL and plain
#     hls.js, on the G2G_STREAM stream, G2G_SECONDS after a G2G_WARMUP warm-up.
# Each number is printed with its target and "ok" or "over target"; a miss does not fail the
# bench (a player that never plays does).
set -euo pipefail
cd "$(dirname "$0")/.."
# STRATA_BIN / FFMPEG: another strata binary / ffmpeg for the publisher (e.g. a renamed copy,
# out of reach of a `pkill strata` elsewhere on a shared machine)
BIN=${STRATA_BIN:-./target/release/strata}
PYTHON=${PYTHON:-/usr/bin/python3}
PART_SECONDS=${PART_SECONDS:-30}
G2G_SECONDS=${G2G_SECONDS:-30}
G2G_WARMUP=${G2G_WARMUP:-10}
G2G_STREAM=${G2G_STREAM:-ladder} # ladder | passthrough: which stream the players watch
# One player after the other (default): three software-decoding players at once on 2 cores
# overload it, and hls.js then stalls at start and sits a second further back (each stall adds
# liveSyncOnStallIncrease to its target), which measures the machine, not the server.
# G2G_SEQUENTIAL=0 runs them at once (a minute quicker).
export G2G_SEQUENTIAL=${G2G_SEQUENTIAL:-1}
# targets
PART_TARGET_PASSTHROUGH_MS=100
PART_TARGET_LADDER_MS=200
G2G_TARGET_LL_S=2.0

[ -x "$BIN" ] || { echo "build first: cargo build --release --locked" >&2; exit 1; }
# the watch page: web/dist, rebuilt only if web/ changed since (quiet when up to date)
make -s web
work=$(mktemp -d)
server=""
publisher=""
peer=""
trap 'kill $publisher $peer $server 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

echo "latency bench: load before: $(uptime | sed 's/.*load average/load average/')"
export STRATA__DATA_DIR="$work/data" STRATA__RTMP__LISTEN=127.0.0.1:0 \
  STRATA__HTTP__LISTEN=127.0.0.1:0 STRATA__SRT__ENABLED=false STRATA__HTTP__WEB_ROOT="$PWD/web/dist" \
  RUST_LOG=warn
field() { "$PYTHON" -c 'import json,sys; print(json.loads(sys.stdin.read())[sys.argv[1]])' "$1"; }
pt_json=$($BIN stream create bench-passthrough --ladder passthrough --no-record --json)
ll_json=$($BIN stream create bench-low-latency --ladder low-latency --no-record --json)
$BIN serve > "$work/out.txt" 2> "$work/err.txt" &
server=$!
for _ in $(seq 100); do grep -q STRATA_READY "$work/out.txt" && break; sleep 0.1; done
grep -q STRATA_READY "$work/out.txt" || { cat "$work/err.txt" >&2; echo "strata did not start" >&2; exit 1; }
rtmp=$(sed -n 's/.*rtmp=\([^ ]*\).*/\1/p' "$work/out.txt")
http=$(sed -n 's/.*http=\([^ ]*\).*/\1/p' "$work/out.txt")
pt_id=$(field playback_id <<<"$pt_json")
ll_id=$(field playback_id <<<"$ll_json")

# The peer, when installed (Debian's nginx + libnginx-mod-rtmp; `make bench` installs them):
# nginx-rtmp with HLS on and 2 s fragments, fed the same publish, for whole-segment
# availability next to Strata's. Single process, as this user, everything under $work.
peer_args=()
NGINX_RTMP=/usr/lib/nginx/modules/ngx_rtmp_module.so
if command -v nginx >/dev/null && [ -f "$NGINX_RTMP" ]; then
  mkdir -p "$work/nginx/hls"
  nginx_port=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat > "$work/nginx/nginx.conf" <<NGINX
load_module $NGINX_RTMP;
daemon off;
master_process off;
worker_processes 1;
error_log $work/nginx/error.log warn;
pid $work/nginx/nginx.pid;
events { worker_connections 64; }
rtmp {
  server {
    listen 127.0.0.1:$nginx_port;
    application live {
      live on;
      record off;
      hls on;
      hls_path $work/nginx/hls;
      hls_fragment 2s;
      hls_playlist_length 12s;
    }
  }
}
NGINX
  nginx -p "$work/nginx" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" &
  peer=$!
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$nginx_port") 2>/dev/null && break; sleep 0.1; done
  peer_out="|[f=flv:onfail=ignore]rtmp://127.0.0.1:$nginx_port/live/bench"
  peer_args=(--segments "strata passthrough=http://$http/live/$pt_id/source/index.m3u8"
    --peer "nginx-rtmp (HLS, TS)=$work/nginx/hls/bench.m3u8")
else
  peer_out=""
  echo "(no peer row: apt-get install nginx libnginx-mod-rtmp for nginx-rtmp next to Strata)"
fi

# The stamp: pts := wall clock in ms (RTCTIME is µs), a black strip, then bit k of the ms
# (mod 2^24) as a white 40×40 block at x = 40k; then timestamps back to 30 fps from zero.
# -re paces lavfi to real time (it would otherwise generate as fast as x264 encodes).
stamp="settb=1/1000,setpts=RTCTIME/1000,drawbox=x=0:y=0:w=iw:h=40:color=black:t=fill"
for k in $(seq 0 23); do
  stamp+=",drawbox=x=$((k * 40)):y=0:w=40:h=40:color=white:t=fill:enable='mod(floor(t*1000/pow(2\\,$k))\\,2)'"
done
stamp+=",setpts=N/(30*TB)"
"${FFMPEG:-ffmpeg}" -hide_banner -v error -re -f lavfi -i testsrc2=size=1280x720:rate=30 \
  -re -f lavfi -i sine=frequency=440:sample_rate=48000 -t 900 -vf "$stamp" \
  -map 0:v -map 1:a -c:v libx264 -preset veryfast -tune zerolatency -g 60 -keyint_min 60 \
  -sc_threshold 0 -pix_fmt yuv420p -b:v 2500k -c:a aac -b:a 128k -flags +global_header \
  -f tee "[f=flv:onfail=ignore]rtmp://$rtmp/live/$(field key <<<"$pt_json")|[f=flv:onfail=ignore]rtmp://$rtmp/live/$(field key <<<"$ll_json")$peer_out" \
  2> "$work/ffmpeg.txt" &
publisher=$!

pt_url="http://$http/live/$pt_id/source/index.m3u8"
ll_url="http://$http/live/$ll_id/720p/index.m3u8"
"$PYTHON" benches/part_latency.py --wait-only --stream "a=$pt_url=0" --stream "b=$ll_url=0" || {
  sed 's/sk_[A-Za-z0-9_-]*/sk_…/g' "$work/ffmpeg.txt" >&2; tail -20 "$work/err.txt" >&2; exit 1; }

echo
"$PYTHON" benches/part_latency.py --seconds "$PART_SECONDS" --json "$work/part.json" \
  --stream "passthrough source=$pt_url=$PART_TARGET_PASSTHROUGH_MS" \
  --stream "low-latency 720p=$ll_url=$PART_TARGET_LADDER_MS" "${peer_args[@]}" | tee "$work/part.txt" | grep -v '^SUMMARY' || true
load_part=$(uptime | sed 's/.*load average: //')

if [ "$G2G_STREAM" = passthrough ]; then g2g_id=$pt_id; else g2g_id=$ll_id; fi
watch="http://$http/watch/$g2g_id"
export G2G_SECONDS G2G_WARMUP G2G_PLAYS="[
  {\"label\": \"hls.js LL\", \"url\": \"$watch?engine=hls\", \"target\": $G2G_TARGET_LL_S},
  {\"label\": \"dash.js LL\", \"url\": \"$watch?engine=dash\", \"target\": $G2G_TARGET_LL_S},
  {\"label\": \"hls.js plain\", \"url\": \"$watch?engine=hls&latency=normal\", \"target\": null}]"
export G2G_TARGET_LL_S
echo
g2g_rc=0
node web/tests/bench/glass_to_glass.mjs | tee "$work/g2g.txt" | grep -v '^SUMMARY' || g2g_rc=$?
load_g2g=$(uptime | sed 's/.*load average: //')
if ! kill -0 "$server" 2>/dev/null; then
  wait "$server" && code=0 || code=$?
  echo "strata exited during the bench (status $code); the end of its log:" >&2
  tail -n 30 "$work/err.txt" >&2
  exit 1
fi

# What the players aim at: the playlist's PART-HOLD-BACK and the MPD's latency target.
"$PYTHON" - "$http" "$g2g_id" "$G2G_STREAM" "$work" "$load_part" "$load_g2g" <<'EOF'
import os, re, sys, urllib.request
http, pid, which, work, load_part, load_g2g = sys.argv[1:]
def get(path):
    try:
        return urllib.request.urlopen(f"http://{http}{path}", timeout=10).read().decode()
    except OSError:
        return ""
rendition = "720p" if which == "ladder" else "source"
playlist = get(f"/live/{pid}/{rendition}/index.m3u8")
mpd = get(f"/live/{pid}/manifest.mpd")
hold = re.search(r"PART-HOLD-BACK=([0-9.]+)", playlist)
target = re.search(r"<Latency[^>]*target=\"(\d+)\"", mpd)
ato = re.search(r"availabilityTimeOffset=\"([0-9.]+)\"", mpd)
lines = [l.split() for f in ("part.txt", "g2g.txt") for l in open(f"{work}/{f}") if l.startswith("SUMMARY")]
print()
print(f"== latency summary (Strata {which} stream for the players; 0.5 s parts, 2 s segments) ==")
print(f"  load average: during part availability {load_part}; after glass-to-glass {load_g2g}")
print(f"  {'part availability':<30} {'median':>8} {'p90':>8}  target")
for l in lines:
    if l[1] != "part":
        continue
    label = " ".join(l[2:-4]); med, p90, goal = l[-4], l[-3], float(l[-1])
    verdict = "no measurement" if med == "-" else ("ok" if float(med) <= goal else "over target")
    print(f"  {label:<30} {med:>6}ms {p90:>6}ms  <= {goal:.0f} ms: {verdict}")
for l in lines:
    if l[1] != "segment":
        continue
    if l is [x for x in lines if x[1] == "segment"][0]:
        print(f"  {'segment availability (peer)':<30} {'median':>8} {'p90':>8}")
    label = " ".join(l[2:-4])
    print(f"  {label:<30} {l[-4]:>6}ms {l[-3]:>6}ms  (reference: whole 2 s segments)")
print(f"  {'glass-to-glass (Chromium)':<30} {'median':>8} {'p90':>8}  target       player's own live distance")
hold_s = float(hold.group(1)) if hold else None
dash_s = int(target.group(1)) / 1000 if target else None
limits = []
for l in lines:
    if l[1] != "g2g":
        continue
    label = " ".join(l[2:-7]); med, p90, goal, edge, rate, fps = l[-7], l[-6], l[-4], l[-3], l[-2], l[-1]
    if med == "-":
        print(f"  {label:<30} never played")
        continue
    if goal == "-":
        verdict = "reference    "
    else:
        verdict = ("ok" if float(med) <= float(goal) else "over target").ljust(13)
    t = f"<= {float(goal):.1f} s: " if goal != "-" else ""
    rest = f"{edge} s (g2g − that: {float(med) - float(edge):.2f} s)" if edge != "-" else ""
    print(f"  {label:<30} {med:>7}s {p90:>7}s  {t}{verdict} {rest}")
    if edge == "-":
        continue
    m, e, r, slow = float(med), float(edge), float(rate), float(fps) < 25
    aim = None
    if "LL" in label and "hls" in label:
        aim, what = hold_s, "the playlist's PART-HOLD-BACK"
    elif "dash" in label:
        aim, what = dash_s, "the MPD's ServiceDescription latency target"
    elif "plain" in label:
        aim, what = 6.0, "hls.js's 3 segments (liveSyncDurationCount 3 × 2 s)"
    if aim is None:
        continue
    if "plain" in label and not slow:
        why = f"aims at {what} ({aim:.1f} s) behind the newest listed segment, and sits {e:.1f} s behind it"
    elif slow:
        why = f"presented {float(fps):.0f} of 30 fps: the machine was overloaded, the number is suspect"
    elif e <= aim + 0.3:
        why = f"sits at {what} ({aim:.1f} s): that is what limits it"
    elif r > 1.001:
        why = f"{e - aim:.1f} s beyond {what} ({aim:.1f} s), still catching up (playback rate {r:.2f}×)"
    else:
        why = (f"{e - aim:.1f} s beyond {what} ({aim:.1f} s) at 1×: stalls moved it back "
               "(hls.js adds 1 s to its target per stall, up to a target duration)")
    if "dash" in label:
        rest = ("dash.js counts from the MPD's availabilityStartTime, the wall clock at which Strata "
                "got media time 0, which the publisher's start-up makes a few hundred ms late")
    else:
        rest = "capture → x264 → RTMP → Strata (part availability) → fetch → decode → display"
    limits.append(f"    {label}: {why}" + ("" if slow else f"; the rest ({m - e:.2f} s): {rest}"))
print("  what limits glass-to-glass:")
print("\n".join(limits) if limits else "    (no player measured)")
if dash_s is not None and dash_s > float(os.environ.get("G2G_TARGET_LL_S", "2.0")):
    print(f"    note: the MPD's latency target ({dash_s:.1f} s) is itself above the {os.environ.get('G2G_TARGET_LL_S', '2.0')} s goal")
EOF
exit $g2g_rc
