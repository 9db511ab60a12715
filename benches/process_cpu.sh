# Sourced by the benches: CPU of a server and everything it started.
# cpu_seconds PID: utime+stime of PID (all its threads), of its children that ended and were
# reaped (the per-broadcast transcoding workers, one-shot previews), and of its children still
# running with what they reaped (the previews zygote and the sheet processes it forked), in
# seconds.
cpu_seconds() {
  local pid total=0
  for pid in "$1" $(pgrep -P "$1" || true); do
    total=$(awk -v t="$total" -v hz="$(getconf CLK_TCK)" '{print t + ($14 + $15 + $16 + $17) / hz}' \
      "/proc/$pid/stat" 2>/dev/null || echo "$total")
  done
  echo "$total"
}
