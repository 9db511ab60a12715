#!/usr/bin/env bash
# 10,000 concurrent keep-alive viewers of one live low-latency stream on loopback: each asks
# for the media playlist once a second and for every new segment it lists (benches/viewers.rs).
# Strata runs on core 0 alone; the viewers and the publisher (a stream copy) on core 1.
# The stream is 426x240 at about 600 kb/s: 10,000 viewers of it pull 6 Gb/s, which one core
# can send (a 3 Mb/s stream would need 30 Gb/s, more than any server sends from one core).
# Prints requests answered, latency percentiles and the server's memory.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/strata
VIEWERS=${VIEWERS:-10000}
SECONDS_POLLED=${SECONDS_POLLED:-30}
work=$(mktemp -d)
server='' publisher=''
cleanup() {
  for pid in $publisher $server; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

export STRATA__HTTP__MAX_CONNECTIONS=$((VIEWERS + 1000))
export INPUT_SIZE=426x240 INPUT_VIDEO_RATE=500k
source benches/pinned_strata.sh
taskset -c 1 ffmpeg -v error -re -stream_loop -1 -i "$work/in.flv" -c copy -f flv \
  "rtmp://$rtmp/live/$key" &
publisher=$!
playlist="live/$playback/source/index.m3u8"
for _ in $(seq 300); do
  curl -sf "http://$http/$playlist" | grep -q EXTINF && break
  sleep 0.1
done
cargo build --release --locked --bench viewers -q
viewers=$(ls -t target/release/deps/viewers-* | grep -v '\.d$' | head -1)
ORIGIN=$http PLAYLIST=$playlist VIEWERS=$VIEWERS SECONDS=$SECONDS_POLLED SERVER_PID=$server \
  taskset -c 1 "$viewers"
