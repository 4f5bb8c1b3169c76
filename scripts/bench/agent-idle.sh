#!/usr/bin/env bash
# Benchmark: what the agent's scheduled health checks cost (issue 11's bars: < 1 % of one
# core at the default interval, idle RSS < 20 MiB with checks running). On each HOST of a
# deployed cluster, over SECONDS (default 60): the CPU of tpa-agent itself (utime+stime of
# /proc/<pid>/stat) and of the commands its checks ran (cutime+cstime: psql, systemctl,
# runuser, the Barman check's Python), as a percentage of one core; and its VmRSS (5 samples)
# and VmHWM. Nothing calls the agent meanwhile, so what is measured is the schedule alone.
# Without CLUSTER_DIR it deploys the seed's four hosts itself (bench-idle, hosts prefixed
# with `i`; not timed) and deprovisions them at the end.
# Usage: scripts/bench/agent-idle.sh [seconds] [CLUSTER_DIR HOST...]
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

seconds="$(positive_int seconds "${1:-60}")"
bench_init

if (($# >= 3)); then
  dir="$2"
  shift 2
  hosts=("$@")
else
  need_image tpa/debian:12
  dir="$BENCH_TMP/idle"
  mkdir -p "$dir"
  sed -e 's/cluster_name: fosdem/cluster_name: bench-idle/' \
    -e 's/\bulb\b/iulb/g; s/\bvub\b/ivub/g; s/\bachel\b/iachel/g; s/\bchimay\b/ichimay/g' \
    "$REPO_ROOT/tests/fixtures/seed/config.yml" >"$dir/config.yml"
  bench_cluster "$dir"
  run_quiet download-packages "$TPA" download-packages "$dir"
  run_quiet deploy "$TPA" deploy "$dir"
  hosts=(iulb ivub iachel ichimay)
fi

# One SSH session per host, all at once: the windows overlap, as on a real cluster.
# shellcheck disable=SC2016 # expanded on the host, not here
measure='
  pid=$(pgrep -xo tpa-agent) || { echo "no tpa-agent"; exit 1; }
  ticks() { sed "s/.*) //" /proc/$pid/stat | awk "{ print \$12 + \$13, \$14 + \$15 }"; }
  rss() { awk "/^VmRSS:/ { print \$2 }" /proc/$pid/status; }
  read -r own0 kids0 <<<"$(ticks)"
  samples=""
  for i in 1 2 3 4 5; do samples="$samples $(rss)"; sleep $(('"$seconds"' / 5)); done
  read -r own1 kids1 <<<"$(ticks)"
  echo $((own1 - own0)) $((kids1 - kids0)) $(getconf CLK_TCK) $(awk "/^VmHWM:/ { print \$2 }" /proc/$pid/status) $samples'
for host in "${hosts[@]}"; do
  timeout $((seconds + 60)) ssh -F "$dir/ssh_config" -o BatchMode=yes "$host" "$measure" \
    >"$BENCH_TMP/idle-$host.out" 2>&1 &
done
wait

own=() total=() rss=()
for host in "${hosts[@]}"; do
  read -r own_ticks kid_ticks hz hwm samples <"$BENCH_TMP/idle-$host.out" ||
    die "$host: $(cat "$BENCH_TMP/idle-$host.out")"
  [[ "$own_ticks" =~ ^[0-9]+$ ]] || die "$host: $(cat "$BENCH_TMP/idle-$host.out")"
  pct() { awk -v t="$1" -v hz="$hz" -v s="$seconds" 'BEGIN { printf "%.2f", t / hz / s * 100 }'; }
  own+=("$(pct "$own_ticks")")
  total+=("$(pct $((own_ticks + kid_ticks)))")
  for kb in $samples; do rss+=("$(awk -v k="$kb" 'BEGIN { printf "%.1f", k / 1024 }')"); done
  echo "$host: agent ${own[-1]} %, with its checks' commands ${total[-1]} % of one core over ${seconds} s; VmHWM $(awk -v k="$hwm" 'BEGIN { printf "%.1f", k / 1024 }') MiB"
done
report "agent CPU, checks' commands included" "% of a core" "<" 1 "${total[@]}"
info "agent CPU, the agent process alone" "% of a core" "${own[@]}"
report "agent RSS (VmRSS) with checks running" MiB "<" 20 "${rss[@]}"
