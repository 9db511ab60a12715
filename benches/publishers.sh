#!/usr/bin/env bash
# Publishers per core: N passthrough publishers at 600 kb/s (N in $PUBLISHERS), to Strata and
# then to nginx-rtmp (HLS and DASH on, 2 s fragments), each server pinned to core 0 alone and
# the publishers (ffmpeg stream copies, -re) on core 1. After $WARMUP s, for $WINDOW s: the
# server's CPU (utime+stime of every process of it, its children's included) per stream, its
# memory per stream (proportional set size of those processes, above the idle server), and
# whether every stream kept real time (its playlist advanced by at least 80 % of the segments
# the window holds). Prints a table and Strata/nginx-rtmp ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/strata
PUBLISHERS=${PUBLISHERS:-50 100 200}
WARMUP=${WARMUP:-10}
WINDOW=${WINDOW:-20}
SEGMENT=2
NGINX_RTMP=/usr/lib/nginx/modules/ngx_rtmp_module.so
work=$(mktemp -d)
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "making a 20 s 600 kb/s input (426x240 30 fps H.264, 2 s GOP, 64 kb/s AAC)…"
ffmpeg -v error -y -f lavfi -i testsrc2=size=426x240:rate=30 \
  -f lavfi -i sine=frequency=440:sample_rate=48000 -t 20 \
  -c:v libx264 -preset veryfast -b:v 536k -maxrate 536k -bufsize 1M -g 60 -bf 2 \
  -c:a aac -b:a 64k -f flv "$work/in.flv"

with_children() { # the given pids and their children (Strata's previews zygote and workers)
  local pid
  for pid in "$@"; do echo "$pid"; pgrep -P "$pid" || true; done | sort -u
}
cpu_ticks() { # utime+stime of the given pids and their children, with what they reaped, in
  # clock ticks (a child that ended is in its parent's cutime+cstime)
  local total=0
  for pid in $(with_children "$@"); do
    total=$((total + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
rss_kib() { # proportional resident memory (PSS: a page shared by n of them counts 1/n) of the
  # given pids and their children, KiB
  local total=0
  for pid in $(with_children "$@"); do
    total=$((total + $(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
last_segment() { # the newest segment number a media playlist (text on stdin) lists, or -1
  awk '/^#EXT-X-MEDIA-SEQUENCE:/ {split($0, a, ":"); seq = a[2]} /^#EXTINF/ {n++}
    END {if (n) print seq + n - 1; else print -1}'
}
publish_all() { # url prefix, then keys: one -re stream copy each, staggered
  local prefix=$1; shift
  for key in "$@"; do
    taskset -c 1 ffmpeg -v error -re -stream_loop -1 -i "$work/in.flv" -c copy -f flv \
      "$prefix/$key" > /dev/null 2>&1 &
    pids+=($!)
    sleep 0.05
  done
}
# measure NAME "server pids" playlist-command N: warm up, then the window; prints a row
measure() {
  local name=$1 server_pids=$2 playlist=$3 n=$4 idle_rss=$5
  sleep "$WARMUP"
  local -a first
  for i in $(seq 0 $((n - 1))); do first[i]=$($playlist "$i" | last_segment); done
  local t0 c0 r_peak=0
  t0=$(date +%s.%N); c0=$(cpu_ticks $server_pids)
  local publishers_c0; publishers_c0=$(cpu_ticks "${pids[@]:1}")
  local end=$(( $(date +%s) + WINDOW ))
  while [ "$(date +%s)" -lt "$end" ]; do
    r=$(rss_kib $server_pids); [ "$r" -gt "$r_peak" ] && r_peak=$r
    sleep 1
  done
  local c1 t1 publishers_c1
  c1=$(cpu_ticks $server_pids); t1=$(date +%s.%N); publishers_c1=$(cpu_ticks "${pids[@]:1}")
  local behind=0 need
  need=$(echo "$WINDOW / $SEGMENT * 0.8" | bc -l)
  for i in $(seq 0 $((n - 1))); do
    local now; now=$($playlist "$i" | last_segment)
    if [ "${first[i]}" -lt 0 ] || [ "$(echo "$now - ${first[i]} < $need" | bc -l)" -eq 1 ]; then
      behind=$((behind + 1))
    fi
  done
  local hz; hz=$(getconf CLK_TCK)
  local core_pct per_stream mem_per
  core_pct=$(echo "($c1 - $c0) / $hz / ($t1 - $t0) * 100" | bc -l)
  per_stream=$(echo "$core_pct / $n" | bc -l)
  mem_per=$(echo "($r_peak - $idle_rss) / 1024 / $n" | bc -l)
  local publishers_pct
  publishers_pct=$(echo "($publishers_c1 - $publishers_c0) / $hz / ($t1 - $t0) * 100" | bc -l)
  printf '%-11s N=%-4s CPU %6.2f %% of a core (%.3f %% per stream)  memory (PSS) %6.1f MiB peak, %.2f MiB per stream  real time: %s  (publishers used %.0f %% of core 1)\n' \
    "$name" "$n" "$core_pct" "$per_stream" "$(echo "$r_peak / 1024" | bc -l)" "$mem_per" \
    "$([ "$behind" -eq 0 ] && echo "every stream" || echo "$behind behind")" "$publishers_pct"
  echo "$name $n $per_stream $mem_per $behind" >> "$work/results"
}

export STRATA__DATA_DIR="$work/data" STRATA__RTMP__LISTEN=127.0.0.1:0 STRATA__HTTP__LISTEN=127.0.0.1:0
export STRATA__RTMP__MAX_CONNECTIONS=2000 RUST_LOG=warn
max=0; for n in $PUBLISHERS; do [ "$n" -gt "$max" ] && max=$n; done
echo "creating $max streams…"
keys=() playbacks=()
for i in $(seq 1 "$max"); do
  created=$($BIN stream create "pub$i" --ladder passthrough --json)
  keys+=("$(echo "$created" | sed 's/.*"key":"\([^"]*\)".*/\1/')")
  playbacks+=("$(echo "$created" | sed 's/.*"playback_id":"\([^"]*\)".*/\1/')")
done

strata_playlist() { curl -sf "http://$http/live/${playbacks[$1]}/source/index.m3u8" || true; }
nginx_playlist() { cat "$work/nginx/hls/n$1.m3u8" 2>/dev/null || true; }

for n in $PUBLISHERS; do
  taskset -c 0 $BIN serve > "$work/out.txt" 2> "$work/err.txt" &
  server=$!; pids=("$server")
  for _ in $(seq 100); do grep -q STRATA_READY "$work/out.txt" && break; sleep 0.1; done
  rtmp=$(sed -n 's/.*rtmp=\([^ ]*\).*/\1/p' "$work/out.txt")
  http=$(sed -n 's/.*http=\([^ ]*\).*/\1/p' "$work/out.txt")
  sleep 1; idle=$(rss_kib "$server")
  publish_all "rtmp://$rtmp/live" "${keys[@]:0:$n}"
  measure strata "$server" strata_playlist "$n" "$idle"
  stop_all

  if command -v nginx >/dev/null && [ -f "$NGINX_RTMP" ]; then
    rm -rf "$work/nginx"; mkdir -p "$work/nginx/hls" "$work/nginx/dash"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    cat > "$work/nginx/nginx.conf" <<EOF
load_module $NGINX_RTMP;
daemon off;
master_process off;
worker_processes 1;
error_log $work/nginx/error.log warn;
pid $work/nginx/nginx.pid;
events { worker_connections 4096; }
rtmp {
  server {
    listen 127.0.0.1:$port;
    application live {
      live on;
      record off;
      hls on;
      hls_path $work/nginx/hls;
      hls_fragment ${SEGMENT}s;
      hls_playlist_length 12s;
      dash on;
      dash_path $work/nginx/dash;
      dash_fragment ${SEGMENT}s;
      dash_playlist_length 12s;
    }
  }
}
EOF
    taskset -c 0 nginx -p "$work/nginx" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" &
    master=$!; pids=("$master")
    for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    sleep 1
    nginx_pids="$master $( (pgrep -P "$master" || true) | tr "\n" " ")"
    idle=$(rss_kib $nginx_pids)
    names=(); for i in $(seq 0 $((n - 1))); do names+=("n$i"); done
    publish_all "rtmp://127.0.0.1:$port/live" "${names[@]}"
    measure nginx-rtmp "$nginx_pids" nginx_playlist "$n" "$idle"
    stop_all
  else
    echo "(no nginx-rtmp row: apt-get install nginx libnginx-mod-rtmp)"
  fi
done

echo
awk '{cpu[$1" "$2] = $3; mem[$1" "$2] = $4; behind[$1" "$2] = $5; ns[$2] = 1}
  END {for (n in ns) if (("nginx-rtmp " n) in cpu && cpu["nginx-rtmp " n] > 0)
    printf "N=%s: ratio strata/nginx-rtmp CPU per stream %.2f, memory per stream %.2f; behind: strata %d, nginx-rtmp %d\n",
      n, cpu["strata " n] / cpu["nginx-rtmp " n],
      (mem["nginx-rtmp " n] > 0 ? mem["strata " n] / mem["nginx-rtmp " n] : 0),
      behind["strata " n], behind["nginx-rtmp " n]}' "$work/results" | sort -t= -k2 -n
largest() { awk -v s="$1" '$1 == s && $5 == 0 && $2 > m {m = $2} END {print m + 0}' "$work/results"; }
echo "largest N held at real time: strata $(largest strata), nginx-rtmp $(largest nginx-rtmp)"
