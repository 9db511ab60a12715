#!/usr/bin/env bash
# The origin against nginx, in one run, pinned the same way: each server on core 0 alone,
# wrk on core 1 (with the publisher, a stream copy). Same files: nginx serves a copy of what
# Strata serves.
# - a live low-latency media playlist (Strata answers it from memory; it changes every part
#   while the stream publishes; nginx serves a snapshot of it from disk);
# - a finished recording's segment (a VOD object on Strata's local-disk store, which Strata keeps
#   in memory from its second read on; nginx sends it from the file with sendfile).
# Prints requests/s and bytes/s for both and Strata/nginx ratios (higher is better for Strata).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/strata
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-5}
CONNECTIONS=${CONNECTIONS:-64}
work=$(mktemp -d)
server='' publisher='' nginx_pid=''
cleanup() {
  for pid in $publisher $server $nginx_pid; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

source benches/pinned_strata.sh

# a recording: one broadcast, ended
# the end of a publish may race the server closing the session (EPIPE on the trailer)
taskset -c 1 ffmpeg -v error -i "$work/in.flv" -c copy -f flv "rtmp://$rtmp/live/$key" || true
segment=''
for _ in $(seq 100); do
  segment=$(cd "$work/data/media" && find vod -path '*/source/*.m4s' -size +400k | sort | head -1)
  [ -n "$segment" ] && break
  sleep 0.1
done
[ -n "$segment" ] || { echo "no recorded segment"; exit 1; }

# the live stream, publishing for the rest of the run
taskset -c 1 ffmpeg -v error -re -stream_loop -1 -i "$work/in.flv" -c copy -f flv \
  "rtmp://$rtmp/live/$key" &
publisher=$!
playlist="live/$playback/source/index.m3u8"
mkdir -p "$work/nginx/root/$(dirname "$playlist")" "$work/nginx/root/$(dirname "$segment")" "$work/nginx/tmp"
# nginx's copy is a live playlist with parts, as Strata answered it (not the ended one), once
# it lists three segments: the size it keeps while the stream runs
snapshot="$work/nginx/root/$playlist"
live=''
for _ in $(seq 600); do
  if curl -sf "http://$http/$playlist" -o "$snapshot" && grep -q EXT-X-PART "$snapshot" \
    && [ "$(grep -c '^#EXTINF' "$snapshot")" -ge 3 ] \
    && ! grep -q EXT-X-ENDLIST "$snapshot"; then live=yes; break; fi
  sleep 0.1
done
[ -n "$live" ] || { echo "the live playlist never listed parts and three segments:"; cat "$snapshot"; cat "$work/err.txt"; exit 1; }

cp "$work/data/media/$segment" "$work/nginx/root/$segment"
cat > "$work/nginx/nginx.conf" <<EOF
worker_processes 1;
user root;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path $work/nginx/tmp;
  proxy_temp_path $work/nginx/tmp;
  fastcgi_temp_path $work/nginx/tmp;
  uwsgi_temp_path $work/nginx/tmp;
  scgi_temp_path $work/nginx/tmp;
  types { application/vnd.apple.mpegurl m3u8; video/iso.segment m4s; }
  server {
    listen 127.0.0.1:0;
    root $work/nginx/root;
  }
}
EOF
# nginx cannot listen on port 0: take a free port
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -i "s/listen 127.0.0.1:0;/listen 127.0.0.1:$port;/" "$work/nginx/nginx.conf"

# wrk's "Requests/sec" and "Transfer/sec" (converted to bytes) for one URL
measure() {
  local out
  out=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "$1")
  if echo "$out" | grep -q 'Non-2xx'; then
    echo "$1 answered errors:" >&2; echo "$out" >&2; exit 1
  fi
  local rps bytes
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  bytes=$(echo "$out" | awk '/Transfer\/sec/ {v=$2; u=v; sub(/[0-9.]+/, "", u); sub(/[A-Za-z]+/, "", v);
    m = (u=="KB") ? 1024 : (u=="MB") ? 1048576 : (u=="GB") ? 1073741824 : 1; printf "%.0f", v * m}')
  echo "$rps $bytes"
}

taskset -c 0 nginx -c "$work/nginx/nginx.conf" &
nginx_pid=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/$segment" -o /dev/null && break; sleep 0.1; done

# Both servers stay up; each measure alternates Strata and nginx $ROUNDS times (this machine's
# speed drifts over a run) and the medians are compared. The publisher runs throughout the
# playlist rounds, for both (its ingest lands on the same core as either server).
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
: > "$work/rounds"
for round in $(seq "$ROUNDS"); do
  read -r rps _ <<<"$(measure "http://$http/$playlist")"; echo "s_pl $rps" >> "$work/rounds"
  read -r rps _ <<<"$(measure "http://127.0.0.1:$port/$playlist")"; echo "n_pl $rps" >> "$work/rounds"
done
kill "$publisher"; wait "$publisher" 2>/dev/null || true; publisher=''
for round in $(seq "$ROUNDS"); do
  read -r rps bytes <<<"$(measure "http://$http/$segment")"; echo "s_seg $rps $bytes" >> "$work/rounds"
  read -r rps bytes <<<"$(measure "http://127.0.0.1:$port/$segment")"; echo "n_seg $rps $bytes" >> "$work/rounds"
done
pick() { awk -v k="$1" -v f="$2" '$1 == k {print $f}' "$work/rounds" | median; }
s_pl_rps=$(pick s_pl 2) n_pl_rps=$(pick n_pl 2)
s_seg_rps=$(pick s_seg 2) s_seg_bytes=$(pick s_seg 3)
n_seg_rps=$(pick n_seg 2) n_seg_bytes=$(pick n_seg 3)

printf 'medians of %s alternating rounds of %s s each, %s connections\n' "$ROUNDS" "$DURATION" "$CONNECTIONS"
printf 'playlist: %s bytes (live, changing every part on Strata)\n' "$(stat -c %s "$work/nginx/root/$playlist")"
printf 'segment:  %s bytes (a recording'"'"'s)\n' "$(stat -c %s "$work/nginx/root/$segment")"
printf 'strata playlist req/s:  %.0f\n' "$s_pl_rps"
printf 'nginx  playlist req/s:  %.0f\n' "$n_pl_rps"
printf 'ratio strata/nginx (playlist req/s): %.2f\n' "$(echo "$s_pl_rps / $n_pl_rps" | bc -l)"
printf 'strata segment GB/s:    %.2f (%.0f req/s)\n' "$(echo "$s_seg_bytes / 1000000000" | bc -l)" "$s_seg_rps"
printf 'nginx  segment GB/s:    %.2f (%.0f req/s)\n' "$(echo "$n_seg_bytes / 1000000000" | bc -l)" "$n_seg_rps"
printf 'ratio strata/nginx (segment bytes/s): %.2f\n' "$(echo "$s_seg_bytes / $n_seg_bytes" | bc -l)"
