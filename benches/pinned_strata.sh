# Sourced by the origin benches: a 20 s 720p30 H.264/AAC input ($work/in.flv) and Strata
# serving a passthrough stream on core 0 alone ($server, $rtmp, $http, $key, $playback).
# Expects $BIN and $work; extra STRATA__* settings come from the caller's environment;
# INPUT_SIZE and INPUT_VIDEO_RATE change the input (720p at 3 Mb/s unless set).
size=${INPUT_SIZE:-1280x720} rate=${INPUT_VIDEO_RATE:-3M}
echo "making a 20 s ${size} 30 fps H.264/AAC input, video at ${rate}b/s…"
ffmpeg -v error -y -f lavfi -i testsrc2=size="$size":rate=30 \
  -f lavfi -i sine=frequency=440:sample_rate=48000 -t 20 \
  -c:v libx264 -preset veryfast -b:v "$rate" -maxrate "$rate" -bufsize "$rate" -g 60 -bf 2 \
  -c:a aac -b:a 128k -f flv "$work/in.flv"

export STRATA__DATA_DIR="$work/data" STRATA__RTMP__LISTEN=127.0.0.1:0 STRATA__HTTP__LISTEN=127.0.0.1:0
export STRATA__RTMP__RECONNECT_GRACE=1 RUST_LOG=warn
created=$($BIN stream create bench --ladder passthrough --json)
key=$(echo "$created" | sed 's/.*"key":"\([^"]*\)".*/\1/')
playback=$(echo "$created" | sed 's/.*"playback_id":"\([^"]*\)".*/\1/')
taskset -c 0 $BIN serve > "$work/out.txt" 2> "$work/err.txt" &
server=$!
for _ in $(seq 100); do grep -q STRATA_READY "$work/out.txt" && break; sleep 0.1; done
rtmp=$(sed -n 's/.*rtmp=\([^ ]*\).*/\1/p' "$work/out.txt")
http=$(sed -n 's/.*http=\([^ ]*\).*/\1/p' "$work/out.txt")
