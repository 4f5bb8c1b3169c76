#!/usr/bin/env bash
# Benchmark: the agent's footprint on a deployed host: resident memory (VmRSS of tpa-agent,
# 5 samples 1 s apart), idle CPU (utime+stime over WINDOWS windows of 10 s, default 3), and
# the size of the stripped release binaries.
# Without arguments it provisions and deploys its own single-primary cluster (bench-agent,
# host ba1; download-packages and deploy are not timed) and deprovisions it at the end.
# With CLUSTER_DIR HOST it measures an already deployed host and leaves it as it is.
# Usage: scripts/bench/agent.sh [windows] [CLUSTER_DIR HOST]
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

windows="$(positive_int windows "${1:-3}")"
bench_init

if (($# >= 3)); then
  dir="$2" host="$3"
else
  need_image tpa/debian:12
  dir="$BENCH_TMP/bench-agent" host=ba1
  write_config "$dir" bench-agent "$host"
  bench_cluster "$dir"
  echo "download-packages and deploy of $host (not timed)"
  run_quiet download-packages "$TPA" download-packages "$dir"
  run_quiet deploy "$TPA" deploy "$dir"
  # One no-op deploy too: the agent has then served a full converge and a check round.
  run_quiet redeploy "$TPA" deploy "$dir"
fi

on_host() {
  timeout 60 ssh -F "$dir/ssh_config" -o BatchMode=yes "$host" "$@"
}

pid="$(on_host pgrep -xo tpa-agent)" || die "no tpa-agent process on $host"
sleep 2

rss=()
for ((s = 1; s <= 5; s++)); do
  kb="$(on_host awk "'/^VmRSS:/ { print \$2 }'" "/proc/$pid/status")"
  rss+=("$(awk -v k="$kb" 'BEGIN { printf "%.1f", k / 1024 }')")
  sleep 1
done
peak_kb="$(on_host awk "'/^VmHWM:/ { print \$2 }'" "/proc/$pid/status")"

# utime and stime are fields 14 and 15 of /proc/PID/stat, counted after the ")" that ends
# the command name; in clock ticks (getconf CLK_TCK).
# shellcheck disable=SC2016 # expanded on the host, not here
cpu_window='
  ticks() { sed "s/.*) //" /proc/$1/stat | awk "{ print \$12 + \$13 }"; }
  a=$(ticks '"$pid"'); sleep 10; b=$(ticks '"$pid"')
  echo $((b - a)) $(getconf CLK_TCK)'
cpu=()
for ((w = 1; w <= windows; w++)); do
  read -r ticks hz <<<"$(on_host "$cpu_window")"
  # Percent of one core over the 10 s window.
  cpu+=("$(awk -v t="$ticks" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz / 10 * 100 }')")
  echo "window $w/$windows: $ticks ticks of CPU in 10 s (${cpu[-1]} % of one core)"
done

size_mib() {
  local copy
  copy="$BENCH_TMP/$(basename "$1").stripped"
  strip -o "$copy" "$1"
  awk -v b="$(stat -c %s "$copy")" 'BEGIN { printf "%.1f", b / 1048576 }'
}
agent_bin="$(dirname "$TPA")/tpa-agent"
[[ -x "$agent_bin" ]] || die "$agent_bin not found: build it with 'cargo build --release --bins'"

report "agent idle RSS (VmRSS)" MiB "<" 20 "${rss[@]}"
info "agent peak RSS since start (VmHWM)" MiB "$(awk -v k="$peak_kb" 'BEGIN { printf "%.1f", k / 1024 }')"
report "agent idle CPU, 10 s windows" "% of a core" "<" 1 "${cpu[@]}"
report "tpa-agent binary, stripped" MiB "<" 20 "$(size_mib "$agent_bin")"
info "tpa-controller binary, stripped" MiB "$(size_mib "$TPA")"
