#!/usr/bin/env bash
# Benchmark: the seed's first deploy (primary, replica, cascaded replica, repmgr, Barman with its
# first backup) by tpa against plain-seed.sh doing the essential steps over SSH, each on four
# freshly provisioned hosts of the same images (package layers when they are built, see
# docs/platforms.md: then the packages are in place for both), RUNS times (default 3),
# alternating which goes first. Provision and download-packages are outside the timing.
# Usage: scripts/bench/seed-shell.sh [runs]
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

runs="$(positive_int runs "${1:-3}")"
bench_init
need_image tpa/debian:12

# seed_config DIR CLUSTER PREFIX: the seed renamed (cluster and hosts) so nothing else's clashes.
seed_config() {
  mkdir -p "$1"
  sed -e "s/^cluster_name: fosdem/cluster_name: $2/" \
    -e "s/\\bulb\\b/${3}ulb/g; s/\\bvub\\b/${3}vub/g; s/\\bachel\\b/${3}achel/g; s/\\bchimay\\b/${3}chimay/g" \
    "$REPO_ROOT/tests/fixtures/seed/config.yml" >"$1/config.yml"
}

repo="$BENCH_TMP/repo"
seed_config "$repo" bench-seed-repo ss
echo "download-packages (not timed)"
run_quiet download-packages "$TPA" download-packages "$repo"

new_cluster() {
  seed_config "$1" "$2" "$3"
  cp -al "$repo/local-repo" "$1/"
  bench_cluster "$1"
  run_quiet "provision-$2-$i" "$TPA" provision "$1"
}

time_deploy() {
  timed t "deploy-$i" "$TPA" deploy "$ddir"
  tpa+=("$t")
}
time_plain() {
  timed t "plain-$i" "$BENCH_DIR/plain-seed.sh" "$sdir" stulb stvub stachel stchimay
  plain+=("$t")
}
# senders DIR HOST: how many standbys (and Barman) stream from HOST.
senders() {
  ssh -F "$1/ssh_config" -o BatchMode=yes "$2" \
    "cd /tmp && runuser -u postgres -- psql -Atc 'select count(*) from pg_stat_replication'"
}

tpa=() plain=() ratio=() layered=""
for ((i = 1; i <= runs; i++)); do
  ddir="$BENCH_TMP/deploy-$i" sdir="$BENCH_TMP/plain-$i"
  new_cluster "$ddir" bench-seed-tpa sd
  new_cluster "$sdir" bench-seed-plain st
  layered="$(docker inspect -f '{{.Config.Image}}' sdulb stchimay | tr '\n' ' ')"
  if ((i % 2 == 1)); then
    time_deploy
    time_plain
  else
    time_plain
    time_deploy
  fi
  # Both did the job: the primary feeds the replica and Barman, the replica the cascaded one.
  for pair in "$ddir sdulb" "$sdir stulb" "$ddir sdvub" "$sdir stvub"; do
    read -r d h <<<"$pair"
    n="$(senders "$d" "$h")"
    ((n >= 1)) || die "$h streams to nobody after the run (see $BENCH_TMP)"
  done
  ratio+=("$(awk -v a="${tpa[-1]}" -v b="${plain[-1]}" 'BEGIN { printf "%.2f", a / b }')")
  echo "run $i/$runs: tpa deploy ${tpa[-1]} s, plain script ${plain[-1]} s, ratio ${ratio[-1]}"
  run_quiet "deprovision-plain-$i" "$TPA" deprovision "$sdir"
  run_quiet "deprovision-deploy-$i" "$TPA" deprovision "$ddir"
done
report "seed first deploy (tpa)" s "<" 20 "${tpa[@]}"
info "seed, plain-seed.sh over SSH" s "${plain[@]}"
report "seed first deploy / plain script, per run" x "<=" 1.3 "${ratio[@]}"
echo "a primary and a Barman host started from: $layered"
