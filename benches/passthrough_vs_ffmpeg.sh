#!/usr/bin/env bash
# Passthrough packaging cost: Strata (RTMP in → CMAF HLS+DASH out) versus
# `ffmpeg -c copy -f hls -hls_segment_type fmp4` on the same pre-encoded input, in one run.
# Prints CPU-seconds per media-second for both and their ratio (lower is better for Strata).
# The input is pushed as fast as Strata takes it (no -re): this measures CPU, not wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/strata
SECONDS_OF_MEDIA=${SECONDS_OF_MEDIA:-60}
work=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT

echo "making a ${SECONDS_OF_MEDIA}s 720p30 H.264/AAC input…"
ffmpeg -v error -y -f lavfi -i testsrc2=size=1280x720:rate=30 \
  -f lavfi -i sine=frequency=440:sample_rate=48000 -t "$SECONDS_OF_MEDIA" \
  -c:v libx264 -preset veryfast -b:v 3M -g 60 -bf 2 -c:a aac -b:a 128k -f flv "$work/in.flv"

source benches/process_cpu.sh

export STRATA__DATA_DIR="$work/data" STRATA__RTMP__LISTEN=127.0.0.1:0 STRATA__HTTP__LISTEN=127.0.0.1:0 RUST_LOG=warn
key=$($BIN stream create bench --ladder passthrough --json | sed 's/.*"key":"\([^"]*\)".*/\1/')
$BIN serve > "$work/out.txt" 2> "$work/err.txt" &
server=$!
for _ in $(seq 50); do grep -q STRATA_READY "$work/out.txt" && break; sleep 0.1; done
rtmp=$(sed -n 's/.*rtmp=\([^ ]*\).*/\1/p' "$work/out.txt")

before=$(cpu_seconds $server)
ffmpeg -v error -i "$work/in.flv" -c copy -f flv "rtmp://$rtmp/live/$key"
sleep 1 # final manifests
after=$(cpu_seconds $server)
strata_cpu=$(echo "$after - $before" | bc -l)

mkdir -p "$work/hls"
ffmpeg_cpu=$( { /usr/bin/time -f "%U %S" ffmpeg -v error -i "$work/in.flv" -c copy -f hls \
  -hls_time 2 -hls_segment_type fmp4 -hls_playlist_type vod "$work/hls/index.m3u8" ; } 2>&1 | tail -1 | awk '{print $1 + $2}')

segments=$(find "$work/data/media/vod" -name '*.m4s' | wc -l)
printf 'media seconds:            %s\n' "$SECONDS_OF_MEDIA"
printf 'strata segments recorded: %s (video + audio)\n' "$segments"
printf 'strata  CPU-s per media-s: %.5f\n' "$(echo "$strata_cpu / $SECONDS_OF_MEDIA" | bc -l)"
printf 'ffmpeg  CPU-s per media-s: %.5f\n' "$(echo "$ffmpeg_cpu / $SECONDS_OF_MEDIA" | bc -l)"
printf 'ratio strata/ffmpeg:       %.2f\n' "$(echo "$strata_cpu / $ffmpeg_cpu" | bc -l)"
