#!/usr/bin/env bash
# Benchmark: `status` of the seed's four hosts (primary, replica, cascaded replica, Barman),
# deployed once on fresh containers (not timed), then RUNS (default 10) runs of `status`, each
# required to exit 0 (every host up, both replicas streaming). Issue 8's bar: under 0.5 s.
# Then RUNS runs of `test` without pgbench (every check must pass; the users fixture gives it
# an application user). Issue 11's bar: under 10 s. Then, on the same four hosts,
# agent-idle.sh: what the agents' scheduled health checks cost (IDLE_SECONDS, default 60).
# Usage: scripts/bench/status.sh [runs]
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

runs="$(positive_int runs "${1:-10}")"
bench_init
need_image tpa/debian:12

dir="$BENCH_TMP/status"
mkdir -p "$dir"
# The seed, renamed so no other test's (or bench's) containers are touched.
sed -e 's/cluster_name: fosdem/cluster_name: bench-status/' \
  -e 's/\bulb\b/tulb/g; s/\bvub\b/tvub/g; s/\bachel\b/tachel/g; s/\bchimay\b/tchimay/g' \
  -e "/^  use_local_repo_only: true\$/r $REPO_ROOT/tests/fixtures/users.yml" \
  "$REPO_ROOT/tests/fixtures/seed/config.yml" >"$dir/config.yml"
bench_cluster "$dir"
run_quiet download-packages "$TPA" download-packages "$dir"
run_quiet deploy "$TPA" deploy "$dir"

times=()
for ((j = 1; j <= runs; j++)); do
  timed t "status-$j" "$TPA" status "$dir"
  times+=("$t")
done
echo "last status:"
cat "$BENCH_TMP/status-$runs.log"
report "status, seed (4 hosts, 2 replicas streaming)" s "<" 0.5 "${times[@]}"

tests=()
for ((j = 1; j <= runs; j++)); do
  timed t "test-$j" "$TPA" test "$dir"
  tests+=("$t")
done
echo "last test:"
tail -n 3 "$BENCH_TMP/test-$runs.log"
report "test without pgbench, seed (4 hosts)" s "<" 10 "${tests[@]}"

"$BENCH_DIR/agent-idle.sh" "${IDLE_SECONDS:-60}" "$dir" tulb tvub tachel tchimay
