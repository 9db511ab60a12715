#!/usr/bin/env bash
# Transcoding ladder cost: the same 720p30 source → 720p/480p/360p x264 veryfast + AAC, through
# Strata (published over RTMP, as a user would, with the shipped `default` ladder) and through
# one ffmpeg CLI process (split + scale, the same x264 settings), in the same run.
# Strata's CPU includes its transcoding worker process (`strata worker`, one per broadcast).
# Prints CPU-seconds per media-second for both and the ratio (lower is better for Strata), the
# wall-clock speed of both (input pushed as fast as each takes it), the quality of each rung
# (SSIM against the source, ffmpeg's `ssim` filter, for Strata's rung and the CLI's), and how
# many 720p ladders Strata holds at real time at once on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/strata
SECONDS_OF_MEDIA=${SECONDS_OF_MEDIA:-60}
# concurrency probe: each step publishes this long in real time
LIVE_SECONDS=${LIVE_SECONDS:-30}
MAX_LADDERS=${MAX_LADDERS:-6}
work=$(mktemp -d)
server=""
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT

echo "making a ${SECONDS_OF_MEDIA}s 720p30 H.264/AAC input…"
ffmpeg -v error -y -f lavfi -i testsrc2=size=1280x720:rate=30 \
  -f lavfi -i sine=frequency=440:sample_rate=44100 -t "$SECONDS_OF_MEDIA" \
  -c:v libx264 -preset veryfast -b:v 4M -g 60 -bf 2 -c:a aac -b:a 128k -ac 2 -f flv "$work/in.flv"

source benches/process_cpu.sh
workers() { # $1: server pid; its children other than the previews zygote (which lives on)
  local pid
  for pid in $(pgrep -P "$1" || true); do
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q previews-zygote || echo "$pid"
  done
}
wait_workers_reaped() { # $1: server pid; a worker's CPU is counted once it is reaped
  for _ in $(seq 100); do [ -z "$(workers "$1")" ] && return 0; sleep 0.1; done
  echo "a transcoding worker is still running" >&2; return 1
}
now() { date +%s.%N; }
video_frames() { # $1: a media playlist; prints its video frame count
  ffprobe -v error -count_packets -select_streams v:0 -show_entries stream=nb_read_packets \
    -of default=nw=1:nk=1 "$1" 2>/dev/null | head -1 || true
}

start_server() { # $1: data dir
  export STRATA__DATA_DIR="$1" STRATA__RTMP__LISTEN=127.0.0.1:0 STRATA__HTTP__LISTEN=127.0.0.1:0 RUST_LOG=warn
  $BIN serve > "$1.out" 2> "$1.err" &
  server=$!
  for _ in $(seq 100); do grep -q STRATA_READY "$1.out" 2>/dev/null && break; sleep 0.1; done
  rtmp=$(sed -n 's/.*rtmp=\([^ ]*\).*/\1/p' "$1.out")
}
new_key() { # $1: stream name
  $BIN stream create "$1" --ladder default --json | sed 's/.*"key":"\([^"]*\)".*/\1/'
}
wait_ended() { # $1: data dir, $2: number of streams; waits for every 360p playlist's ENDLIST
  for _ in $(seq 600); do
    local n
    n=$( (grep -l ENDLIST "$1"/media/live/*/360p/index.m3u8 2>/dev/null || true) | wc -l)
    [ "$n" -ge "$2" ] && return 0
    sleep 0.1
  done
  echo "timed out waiting for the broadcasts to end" >&2; return 1
}

# --- Strata: one ladder, input as fast as it is taken; $1: transcode.isolation ---
strata_run() {
  mkdir -p "$work/$1"
  export STRATA__DATA_DIR="$work/$1/data" STRATA__TRANSCODE__ISOLATION="$1"
  local key before t0 t1
  key=$(new_key bench)
  start_server "$work/$1/data"
  before=$(cpu_seconds $server)
  t0=$(now)
  ffmpeg -v error -i "$work/in.flv" -c copy -f flv "rtmp://$rtmp/live/$key"
  wait_ended "$work/$1/data" 1
  t1=$(now)
  wait_workers_reaped $server
  run_cpu=$(echo "$(cpu_seconds $server) - $before" | bc -l)
  run_wall=$(echo "$t1 - $t0" | bc -l)
  run_frames=$(video_frames "$(ls -d "$work/$1"/data/media/vod/*/360p)/index.m3u8")
  run_vod=$(ls -d "$work/$1"/data/media/vod/*)
  kill $server; wait $server 2>/dev/null || true
  unset STRATA__TRANSCODE__ISOLATION
}
# in the server's threads, as before the worker process: the cost of the split is the difference
strata_run thread
thread_cpu=$run_cpu thread_wall=$run_wall
strata_run process
strata_cpu=$run_cpu strata_wall=$run_wall frames=$run_frames strata_vod=$run_vod

# --- ffmpeg CLI: the same ladder in one process ---
x264() { # $1 bitrate $2 maxrate $3 bufsize $4 profile $5 level
  echo "-c:v libx264 -preset veryfast -b:v $1 -maxrate $2 -bufsize $3 -profile:v $4 -level $5 \
    -g 60 -keyint_min 60 -sc_threshold 0 -flags +cgop -pix_fmt yuv420p"
}
t0=$(now)
# shellcheck disable=SC2046
ffmpeg_cpu=$( { /usr/bin/time -f "%U %S" ffmpeg -v error -y -i "$work/in.flv" \
  -filter_complex "[0:v]split=3[v720][a][b];[a]scale=854:480[v480];[b]scale=640:360[v360]" \
  -map "[v720]" $(x264 2800k 3000k 4200k high 4.1) -f mp4 -movflags +frag_keyframe+empty_moov "$work/720.mp4" \
  -map "[v480]" $(x264 1400k 1500k 2100k main 3.1) -f mp4 -movflags +frag_keyframe+empty_moov "$work/480.mp4" \
  -map "[v360]" $(x264 800k 856k 1200k main 3.0) -f mp4 -movflags +frag_keyframe+empty_moov "$work/360.mp4" \
  -map 0:a -c:a aac -b:a 128k -ar 48000 -f mp4 -movflags +frag_keyframe+empty_moov "$work/audio.mp4" ; } 2>&1 \
  | tail -1 | awk '{print $1 + $2}')
t1=$(now)
ffmpeg_wall=$(echo "$t1 - $t0" | bc -l)

# --- quality: each rung against the source, scaled back up to it (bicubic) and compared frame by
# frame from the first one (both start at the source's first frame) ---
ssim() { # $1: a rendition (file or playlist); prints SSIM "All" against the source, or nothing
  { ffmpeg -nostats -i "$1" -i "$work/in.flv" -lavfi \
    "[0:v]setpts=PTS-STARTPTS,scale=1280:720:flags=bicubic[r];[1:v]setpts=PTS-STARTPTS[s];[r][s]ssim" \
    -f null - 2>&1 || true; } | sed -n 's/.*SSIM .* All:\([0-9.]*\).*/\1/p' | tail -1
}
echo "measuring SSIM per rung…"
ssim_report=""
for rung in 720 480 360; do
  s_strata=$(ssim "$strata_vod/${rung}p/index.m3u8")
  s_ffmpeg=$(ssim "$work/$rung.mp4")
  if [ -z "$s_strata" ] || [ -z "$s_ffmpeg" ]; then
    ssim_report+="SSIM ${rung}p  could not be measured (strata '${s_strata}', ffmpeg '${s_ffmpeg}')"$'\n'
    continue
  fi
  diff=$(echo "$s_strata - $s_ffmpeg" | bc -l)
  within=$(echo "$diff >= -0.005" | bc -l)
  ssim_report+=$(printf 'SSIM %-5s strata %.4f  ffmpeg %.4f  difference %+.4f (%s)' "${rung}p" \
    "$s_strata" "$s_ffmpeg" "$diff" "$([ "$within" -eq 1 ] && echo "within 0.005" || echo "WORSE by more than 0.005")")$'\n'
done

# --- how many 720p ladders Strata holds at real time ---
echo "probing concurrent real-time ladders (${LIVE_SECONDS}s each step)…"
ffmpeg -v error -y -i "$work/in.flv" -t "$LIVE_SECONDS" -c copy "$work/live.flv"
held=0
for n in $(seq 1 "$MAX_LADDERS"); do
  dir="$work/live$n/data"
  mkdir -p "$dir"
  export STRATA__DATA_DIR="$dir"
  keys=()
  for i in $(seq 1 "$n"); do keys+=("$(new_key "s$i")"); done
  start_server "$dir"
  pids=()
  for k in "${keys[@]}"; do
    ffmpeg -v error -re -i "$work/live.flv" -c copy -f flv "rtmp://$rtmp/live/$k" & pids+=($!)
  done
  wait "${pids[@]}" || true
  wait_ended "$dir" "$n" || true
  kill $server; wait $server 2>/dev/null || true
  # held: no rung reported falling behind, and every rendition of every stream has its frames
  short=0
  ended=$( (grep -l ENDLIST "$dir"/media/live/*/360p/index.m3u8 2>/dev/null || true) | wc -l)
  if [ "$ended" -lt "$n" ]; then short=$((short + n - ended)); fi
  for playlist in "$dir"/media/vod/*/*p/index.m3u8; do
    [ -e "$playlist" ] || continue
    got=$(video_frames "$playlist")
    if [ "${got:-0}" -lt $((LIVE_SECONDS * 30 * 98 / 100)) ]; then short=$((short + 1)); fi
  done
  if grep -q "cannot keep up\|slower than real time" "$dir.err" || [ "$short" -gt 0 ]; then
    echo "  $n ladder(s): fell behind real time ($short rendition(s) short of frames)"
    break
  fi
  echo "  $n ladder(s): real time, every rendition complete"
  held=$n
done

printf 'media seconds:                 %s (720p30 → 720p/480p/360p veryfast + AAC)\n' "$SECONDS_OF_MEDIA"
printf 'strata 360p frames published:  %s (expected %s)\n' "$frames" "$((SECONDS_OF_MEDIA * 30))"
printf 'strata  CPU-s per media-s:     %.3f (worker process per broadcast)\n' "$(echo "$strata_cpu / $SECONDS_OF_MEDIA" | bc -l)"
printf 'strata  CPU-s per media-s:     %.3f (in the server'"'"'s threads, transcode.isolation = thread)\n' "$(echo "$thread_cpu / $SECONDS_OF_MEDIA" | bc -l)"
printf 'worker split CPU cost:         %+.1f %%\n' "$(echo "($strata_cpu / $thread_cpu - 1) * 100" | bc -l)"
printf 'ffmpeg  CPU-s per media-s:     %.3f\n' "$(echo "$ffmpeg_cpu / $SECONDS_OF_MEDIA" | bc -l)"
printf 'CPU ratio strata/ffmpeg:       %.2f (in-process: %.2f)\n' "$(echo "$strata_cpu / $ffmpeg_cpu" | bc -l)" "$(echo "$thread_cpu / $ffmpeg_cpu" | bc -l)"
printf 'strata  wall speed:            %.2fx real time\n' "$(echo "$SECONDS_OF_MEDIA / $strata_wall" | bc -l)"
printf 'ffmpeg  wall speed:            %.2fx real time\n' "$(echo "$SECONDS_OF_MEDIA / $ffmpeg_wall" | bc -l)"
printf 'wall speed ratio strata/ffmpeg: %.2f (in-process: %.2f)\n' "$(echo "$ffmpeg_wall / $strata_wall" | bc -l)" "$(echo "$ffmpeg_wall / $thread_wall" | bc -l)"
printf 'concurrent 720p ladders at real time: %s (of at most %s tried; floor(cores ÷ its CPU-s per media-s) = %s)\n' \
  "$held" "$MAX_LADDERS" "$(echo "scale=0; $(nproc) * $SECONDS_OF_MEDIA / $strata_cpu" | bc)"
printf '%s' "$ssim_report"
