#!/usr/bin/env bash
# Benchmark: tpa's first deploy of the seed (primary, replica, cascaded replica, repmgr,
# Barman with its first backup) against seed-by-hand.sh doing the essential steps as a shell
# script over SSH, RUNS times (default 3), alternating which goes first. Both run on fresh
# containers of their own cluster, from the same package layers (built before the runs and
# not timed), so neither installs packages; provision is not timed. Each run checks both
# clusters: the cascaded replica streams and Barman lists a backup.
# Bar (issue 13): tpa's deploy within 1.3x the script, same run.
# Usage: scripts/bench/seed-vs-script.sh [runs]
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

runs="$(positive_int runs "${1:-3}")"
bench_init
need_image tpa/debian:12

# seed_config DIR CLUSTER PREFIX: the seed, its hosts renamed PREFIX<name>.
seed_config() {
  mkdir -p "$1"
  sed -e "s/^cluster_name: .*/cluster_name: $2/" \
    -e "s/\\b\\(ulb\\|vub\\|achel\\|chimay\\)\\b/$3\\1/g" \
    "$REPO_ROOT/tests/fixtures/seed/config.yml" >"$1/config.yml"
}

tdir="$BENCH_TMP/tpa" hdir="$BENCH_TMP/hand"
seed_config "$tdir" bench-seed-tpa tp
seed_config "$hdir" bench-seed-hand hb
bench_cluster "$tdir"
bench_cluster "$hdir"
echo "download-packages and the package layers (not timed)"
run_quiet download "$TPA" download-packages "$tdir"
cp -a "$tdir/local-repo" "$hdir/local-repo"
run_quiet layers "$TPA" provision "$tdir"
run_quiet layers-gone "$TPA" deprovision "$tdir"

# streams_and_backed_up DIR PREFIX: the cascaded replica streams; Barman lists a backup.
streams_and_backed_up() {
  local ssh_=(ssh -F "$1/ssh_config" -o BatchMode=yes)
  [[ "$("${ssh_[@]}" "${2}achel" "cd /tmp && runuser -u postgres -- psql -XAtc 'select status from pg_stat_wal_receiver'")" == streaming ]] ||
    die "${2}achel does not stream after the run"
  "${ssh_[@]}" "${2}chimay" "runuser -u barman -- barman list-backups ${2}ulb" | grep -q . ||
    die "${2}chimay lists no backup of ${2}ulb after the run"
}

time_tpa() {
  run_quiet "provision-tpa-$i" "$TPA" provision "$tdir"
  timed t "tpa-$i" "$TPA" deploy "$tdir"
  streams_and_backed_up "$tdir" tp
  run_quiet "deprovision-tpa-$i" "$TPA" deprovision "$tdir"
  tpa+=("$t")
}

time_hand() {
  run_quiet "provision-hand-$i" "$TPA" provision "$hdir"
  timed t "hand-$i" "$BENCH_DIR/seed-by-hand.sh" "$hdir" hbulb hbvub hbachel hbchimay
  streams_and_backed_up "$hdir" hb
  run_quiet "deprovision-hand-$i" "$TPA" deprovision "$hdir"
  hand+=("$t")
}

tpa=() hand=() ratio=()
for ((i = 1; i <= runs; i++)); do
  if ((i % 2 == 1)); then
    time_tpa
    time_hand
  else
    time_hand
    time_tpa
  fi
  ratio+=("$(awk -v a="${tpa[-1]}" -v b="${hand[-1]}" 'BEGIN { printf "%.2f", a / b }')")
  echo "run $i/$runs: deploy ${tpa[-1]} s, script ${hand[-1]} s, ratio ${ratio[-1]}"
done
info "seed first deploy (package layers)" s "${tpa[@]}"
info "seed by hand over SSH (same hosts)" s "${hand[@]}"
report "seed deploy / hand-written script" x "<=" 1.3 "${ratio[@]}"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
