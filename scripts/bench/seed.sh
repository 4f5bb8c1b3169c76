#!/usr/bin/env bash
# Benchmark: the seed's four hosts (primary, replica, cascaded replica, Barman) with two users
# and a database: the first deploy on fresh containers (once), then NOOP_RUNS (default 5)
# no-op re-deploys and deploy --check runs. The replicas are cloned and stream; Barman gets its
# first backup during the deploy. The no-op figures are taken after SETTLE_SECONDS (default 20).
# Usage: scripts/bench/seed.sh [noop_runs]
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

noop_runs="$(positive_int noop_runs "${1:-5}")"
bench_init
need_image tpa/debian:12

dir="$BENCH_TMP/seed"
mkdir -p "$dir"
# The seed, renamed so no other test's containers are touched, plus users and a database.
sed -e 's/cluster_name: fosdem/cluster_name: bench-seed/' \
  -e 's/\bulb\b/sulb/g; s/\bvub\b/svub/g; s/\bachel\b/sachel/g; s/\bchimay\b/schimay/g' \
  -e "/^  use_local_repo_only: true\$/r $REPO_ROOT/tests/fixtures/users.yml" \
  "$REPO_ROOT/tests/fixtures/seed/config.yml" >"$dir/config.yml"
bench_cluster "$dir"
run_quiet download-packages "$TPA" download-packages "$dir"
run_quiet provision "$TPA" provision "$dir"

timed first "first-deploy" "$TPA" deploy "$dir"
# The first deploy's aftermath (every agent's health round, Barman's first cron minute) runs
# for a few seconds; the no-op figures are of a settled cluster (SETTLE_SECONDS=0: right after).
sleep "${SETTLE_SECONDS:-20}"
noop=() check=()
for ((j = 1; j <= noop_runs; j++)); do
  timed t "noop-$j" "$TPA" deploy "$dir"
  grep -q ': 0 changed,' "$BENCH_TMP/noop-$j.log" || die "re-deploy $j changed something, see $BENCH_TMP/noop-$j.log"
  noop+=("$t")
  timed t "check-$j" "$TPA" deploy --check "$dir"
  check+=("$t")
done
report "seed (4 hosts), first deploy" s "<" 45 "$first"
report "seed (4 hosts), no-op re-deploy" s "<" 1 "${noop[@]}"
report "seed (4 hosts), deploy --check" s "<" 1 "${check[@]}"
