#!/usr/bin/env bash
# Benchmark: `tpa-controller download-packages` for the seed's 4-host cluster (primary,
# replica, cascaded replica, Barman; repmgr), RUNS times (default 3), each time:
#   cold:   empty package-list cache (XDG_CACHE_HOME in a new temp dir), empty cluster dir;
#   warm:   cached package lists, empty cluster dir (the .debs are downloaded again);
#   re-run: the same cluster dir again (everything present, nothing downloaded).
# Needs Debian's archive (deb.debian.org) and the image tpa/debian:12. Creates no container.
# Usage: scripts/bench/download-packages.sh [runs]
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

runs="$(positive_int runs "${1:-3}")"
bench_init

seed="$REPO_ROOT/tests/fixtures/seed/config.yml"
[[ -f "$seed" ]] || die "$seed not found"

# The seed, renamed so that nothing here can be taken for another engineer's cluster.
seed_copy() {
  mkdir -p "$1"
  sed -E -e 's/^cluster_name: .*/cluster_name: bench-dl/' \
    -e 's/\bulb\b/bdl1/g; s/\bvub\b/bdl2/g; s/\bachel\b/bdl3/g; s/\bchimay\b/bdl4/g' \
    "$seed" >"$1/config.yml"
}

cold=() warm=() rerun=()
for ((i = 1; i <= runs; i++)); do
  cache="$BENCH_TMP/cache-$i"
  mkdir -p "$cache"
  seed_copy "$BENCH_TMP/cold-$i"
  seed_copy "$BENCH_TMP/warm-$i"
  timed t "cold-$i" env XDG_CACHE_HOME="$cache" "$TPA" download-packages "$BENCH_TMP/cold-$i"
  cold+=("$t")
  timed t "warm-$i" env XDG_CACHE_HOME="$cache" "$TPA" download-packages "$BENCH_TMP/warm-$i"
  warm+=("$t")
  timed t "rerun-$i" env XDG_CACHE_HOME="$cache" "$TPA" download-packages "$BENCH_TMP/warm-$i"
  rerun+=("$t")
  echo "run $i/$runs: cold ${cold[-1]} s, warm ${warm[-1]} s, re-run ${rerun[-1]} s"
  echo "  $(grep -m1 'packages needed' "$BENCH_TMP/cold-$i.log")"
  # Keep the temp dir small: a repository is ~100 MB.
  rm -rf "$BENCH_TMP/cold-$i" "$BENCH_TMP/warm-$i" "$cache"
done

report "download-packages, seed, empty cache" s "<" 60 "${cold[@]}"
info "download-packages, seed, cached lists" s "${warm[@]}"
info "download-packages, seed, re-run (all present)" s "${rerun[@]}"
