#!/usr/bin/env bash
# Runs every benchmark in scripts/bench/ and ends with a markdown table of the medians
# (what | median | bar | verdict). A bench that fails is listed as failed; the others still run.
# Run counts come from the environment (defaults in brackets): IMAGE_RUNS [1],
# PROVISION_RUNS [5], DOWNLOAD_RUNS [3], DEPLOY_RUNS [3], NOOP_RUNS [5], AGENT_WINDOWS [3],
# STATUS_RUNS [10], FAILOVER_RUNS [3], SWITCHOVER_RUNS [3], RESTORE_RUNS [3], BARMAN_RUNS [3],
# PATRONI_FAILOVER_RUNS [3], PATRONI_DEPLOY_RUNS [3], SEED_SCRIPT_RUNS [3].
# BENCH_SKIP_IMAGE=1 leaves the image as it is (the image bench rebuilds tpa/debian:12).
# Usage: scripts/bench/all.sh
set -euo pipefail
bench_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

BENCH_RESULTS="$(mktemp "${TMPDIR:-/tmp}/bench-results-XXXXXX")"
export BENCH_RESULTS
trap 'rm -f "$BENCH_RESULTS"' EXIT

failed=0
run() {
  local name="$1" status=0
  shift
  echo "== $name: $*"
  "$bench_dir/$name" "$@" || status=$?
  if ((status != 0)); then
    printf '%s\tfailed (exit %d)\t-\tFAIL\n' "$name" "$status" >>"$BENCH_RESULTS"
    failed=1
  fi
  echo
}

started=$EPOCHREALTIME
if [[ -z "${BENCH_SKIP_IMAGE:-}" ]]; then
  run image.sh "${IMAGE_RUNS:-1}"
fi
run provision.sh "${PROVISION_RUNS:-5}"
run download-packages.sh "${DOWNLOAD_RUNS:-3}"
run deploy.sh "${DEPLOY_RUNS:-3}" "${NOOP_RUNS:-5}"
run agent.sh "${AGENT_WINDOWS:-3}"
run seed.sh "${NOOP_RUNS:-5}"
run status.sh "${STATUS_RUNS:-10}"
run replication.sh "${FAILOVER_RUNS:-3}" "${SWITCHOVER_RUNS:-3}"
run restore.sh "${RESTORE_RUNS:-3}"
run barman.sh "${BARMAN_RUNS:-3}"
run patroni-failover.sh "${PATRONI_FAILOVER_RUNS:-3}"
run patroni-deploy.sh "${PATRONI_DEPLOY_RUNS:-3}"
run seed-vs-script.sh "${SEED_SCRIPT_RUNS:-3}"

echo "## Benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
echo
echo "| what | median | bar | verdict |"
echo "| --- | --- | --- | --- |"
awk -F '\t' '{ printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }' "$BENCH_RESULTS"
echo
awk -v s="$started" -v e="$EPOCHREALTIME" 'BEGIN { printf "all benches took %.0f s\n", e - s }'
exit "$failed"
