# shellcheck shell=bash
# Shared helpers for the benchmark scripts in scripts/bench/: timing, statistics, result
# lines for all.sh, and cleanup of the bench's own clusters (and nothing else) on exit.
# Sourced, not run. Every cluster a bench creates is named bench-* and its instances use
# names no other test uses, so several engineers' Docker tests can run beside it.

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$BENCH_DIR/../.." && pwd)"
TPA="${TPA_CONTROLLER:-$REPO_ROOT/target/release/tpa-controller}"
# A bench step that takes longer than this is a hang, not a figure: it fails the bench.
STEP_TIMEOUT="${BENCH_STEP_TIMEOUT:-600}"

BENCH_CLUSTERS=()
BENCH_TMP=""

die() {
  echo "bench: $*" >&2
  exit 1
}

# Checks the tools every bench needs; creates the bench's temporary directory and the trap
# that deprovisions the bench's clusters and removes that directory, on success or failure.
bench_init() {
  [[ -x "$TPA" ]] || die "$TPA not found: build it first with 'cargo build --release --bins' (or set TPA_CONTROLLER)"
  command -v docker >/dev/null || die "docker not found: the benches need a Docker engine"
  docker info >/dev/null 2>&1 || die "Docker is not reachable: start the engine or fix access to its socket"
  ((BASH_VERSINFO[0] >= 5)) || die "bash 5 or newer is needed (EPOCHREALTIME)"
  BENCH_TMP="$(mktemp -d "${TMPDIR:-/tmp}/bench-XXXXXX")"
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

bench_cleanup() {
  local status=$? dir
  trap - EXIT
  for dir in "${BENCH_CLUSTERS[@]}"; do
    if [[ -f "$dir/config.yml" ]]; then
      timeout 300 "$TPA" deprovision "$dir" >"$BENCH_TMP/deprovision.log" 2>&1 ||
        echo "bench: deprovision of $dir failed, see $BENCH_TMP/deprovision.log" >&2
    fi
  done
  if [[ -n "$BENCH_TMP" && -z "${BENCH_KEEP:-}" && $status -eq 0 ]]; then
    rm -rf "$BENCH_TMP"
  elif [[ -n "$BENCH_TMP" ]]; then
    echo "bench: logs kept in $BENCH_TMP" >&2
  fi
  exit "$status"
}

# bench_cluster DIR: remember DIR for deprovision at exit, and deprovision first any
# leftover containers of the same (bench-*) cluster from an interrupted earlier run, so
# that "fresh" really means fresh.
bench_cluster() {
  local dir="$1" name
  name="$(sed -n 's/^cluster_name: *//p' "$dir/config.yml")"
  [[ "$name" == bench-* ]] || die "cluster $name in $dir: bench clusters must be named bench-*"
  BENCH_CLUSTERS+=("$dir")
  if [[ -n "$(docker ps -aq --filter "label=Cluster=$name")" ]] ||
    docker network inspect "$name" >/dev/null 2>&1; then
    echo "removing leftovers of an earlier run of cluster $name"
    run_quiet leftovers "$TPA" deprovision "$dir"
  fi
}

# write_config DIR CLUSTER INSTANCE...: a docker cluster on tpa/debian:12 whose first
# instance is the primary and the others replicas of it, packages from the local repo only.
write_config() {
  local dir="$1" name="$2" node=1 instance
  shift 2
  mkdir -p "$dir"
  {
    echo "---"
    echo "architecture: M1"
    echo "cluster_name: $name"
    echo "cluster_vars:"
    echo "  postgres_version: '15'"
    echo "  use_local_repo_only: true"
    echo "instance_defaults:"
    echo "  image: tpa/debian:12"
    echo "  platform: docker"
    echo "  vars:"
    echo "    ansible_user: root"
    echo "instances:"
    for instance in "$@"; do
      echo "- Name: $instance"
      echo "  node: $node"
      if ((node == 1)); then
        echo "  role: [primary]"
      else
        echo "  role: [replica]"
        echo "  upstream: $1"
      fi
      node=$((node + 1))
    done
  } >"$dir/config.yml"
}

# write_backed_up_config DIR CLUSTER PRIMARY BARMAN: a docker cluster on tpa/debian:12 of a
# primary (backup: BARMAN) in brussels and a Barman host in antwerp, packages from the local
# repo only; the local repo copied from BENCH_LOCAL_REPO when it is set (skips the download).
write_backed_up_config() {
  local dir="$1" name="$2" primary="$3" barman="$4"
  mkdir -p "$dir"
  cat >"$dir/config.yml" <<EOF
---
architecture: M1
cluster_name: $name
cluster_vars:
  postgres_version: '15'
  use_local_repo_only: true
locations:
- Name: brussels
- Name: antwerp
instance_defaults:
  image: tpa/debian:12
  platform: docker
  vars:
    ansible_user: root
instances:
- Name: $primary
  node: 1
  location: brussels
  role: [primary]
  backup: $barman
- Name: $barman
  node: 2
  location: antwerp
  role: [barman]
EOF
  if [[ ! -d "$dir/local-repo" && -n "${BENCH_LOCAL_REPO:-}" ]]; then
    cp -a "$BENCH_LOCAL_REPO" "$dir/local-repo"
  fi
}

# run_quiet LABEL CMD...: runs CMD (bounded by STEP_TIMEOUT) with its output in a log;
# on failure shows the end of the log and stops the bench.
run_quiet() {
  local label="$1" log
  shift
  log="$BENCH_TMP/$label.log"
  if ! timeout "$STEP_TIMEOUT" "$@" >"$log" 2>&1; then
    echo "bench: '$*' failed (or took more than ${STEP_TIMEOUT}s); end of $log:" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
}

# timed VAR LABEL CMD...: like run_quiet, and stores the wall-clock seconds in VAR.
timed() {
  local -n _elapsed="$1"
  local label="$2" start end
  shift 2
  start=$EPOCHREALTIME
  run_quiet "$label" "$@"
  end=$EPOCHREALTIME
  _elapsed="$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", e - s }')"
}

# stats VALUE...: prints "median min max" (median of an even count: mean of the middle two).
stats() {
  printf '%s\n' "$@" | sort -g | awk '
    { v[NR] = $1 }
    END {
      m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      printf "%.3f %.3f %.3f\n", m, v[1], v[NR]
    }'
}

# report WHAT UNIT OP BAR VALUE...: prints the median (min/max, raw values) of VALUE... and
# whether the median meets the bar ("median OP BAR", OP one of < <=), and appends a line
# what<TAB>median<TAB>bar<TAB>verdict to $BENCH_RESULTS when all.sh set it.
report() {
  local what="$1" unit="$2" op="$3" bar="$4" median min max verdict
  shift 4
  read -r median min max <<<"$(stats "$@")"
  if awk -v m="$median" -v b="$bar" -v op="$op" 'BEGIN { exit !((op == "<") ? m < b : m <= b) }'; then
    verdict=pass
  else
    verdict=FAIL
  fi
  printf '%-48s median %s %s (min %s, max %s, n=%d)  bar %s %s %s: %s\n' \
    "$what" "$median" "$unit" "$min" "$max" "$#" "$op" "$bar" "$unit" "$verdict"
  printf '  raw: %s\n' "$*"
  if [[ -n "${BENCH_RESULTS:-}" ]]; then
    printf '%s\t%s %s (min %s, max %s, n=%d)\t%s %s %s\t%s\n' \
      "$what" "$median" "$unit" "$min" "$max" "$#" "$op" "$bar" "$unit" "$verdict" >>"$BENCH_RESULTS"
  fi
}

# info WHAT VALUE...: like report, for figures that have no bar.
info() {
  local what="$1" unit="$2" median min max
  shift 2
  read -r median min max <<<"$(stats "$@")"
  printf '%-48s median %s %s (min %s, max %s, n=%d)\n' "$what" "$median" "$unit" "$min" "$max" "$#"
  printf '  raw: %s\n' "$*"
  if [[ -n "${BENCH_RESULTS:-}" ]]; then
    printf '%s\t%s %s (min %s, max %s, n=%d)\t-\t-\n' "$what" "$median" "$unit" "$min" "$max" "$#" >>"$BENCH_RESULTS"
  fi
}

# positive_int NAME VALUE: VALUE, or a clear error when it is not a number of runs.
positive_int() {
  [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive whole number, got '$2'"
  echo "$2"
}

# Helpers for benches of one deployed cluster in $dir (set by the caller before using them).
# status_json: `status --json` of $dir (empty on failure).
status_json() {
  "$TPA" status --json "$dir" 2>/dev/null || true
}
# live_primary: the one host `status` calls primary, or "" (none, or several).
live_primary() {
  status_json | jq -r '[.[] | select(.role == "primary") | .host] | if length == 1 then .[0] else "" end'
}
# wait_healthy LABEL: until `status` exits 0 (every host up, every replica streaming).
wait_healthy() {
  local deadline=$((SECONDS + 180))
  until "$TPA" status "$dir" >"$BENCH_TMP/status-$1.log" 2>&1; do
    ((SECONDS < deadline)) || {
      cat "$BENCH_TMP/status-$1.log" >&2
      die "status did not exit 0 within 180 s ($1)"
    }
    sleep 1
  done
}
# elapsed START END: END - START, seconds with milliseconds.
elapsed() {
  awk -v s="$1" -v e="$2" 'BEGIN { printf "%.3f", e - s }'
}
# first_insert PREFIX STOPPED HOST...: waits up to 120 s (after STOPPED, a host's name for the
# message) for the first "ok" line of the INSERT loops writing $BENCH_TMP/PREFIX-HOST.w, and
# prints "<time> <host>" of the earliest.
first_insert() {
  local prefix="$1" stopped="$2" deadline=$((SECONDS + 120)) first="" host
  shift 2
  while [[ -z "$first" ]]; do
    first="$(for host in "$@"; do
      awk -v h="$host" '$1 == "ok" { print $2, h; exit }' "$BENCH_TMP/$prefix-$host.w"
    done | sort -g | head -n 1)"
    if [[ -z "$first" ]]; then
      ((SECONDS < deadline)) || die "no replica accepted an INSERT within 120 s of stopping $stopped"
      sleep 0.2
    fi
  done
  echo "$first"
}
# wait_ssh HOST: until HOST answers SSH through "${ssh_[@]}" (up to 60 s after a docker start).
wait_ssh() {
  local deadline=$((SECONDS + 60))
  until "${ssh_[@]}" "$1" true 2>/dev/null; do
    ((SECONDS < deadline)) || die "$1 did not answer SSH within 60 s of docker start"
    sleep 0.5
  done
}
# need_image IMAGE: dies unless Docker has IMAGE (benches never build one themselves).
need_image() {
  docker image inspect "$1" >/dev/null 2>&1 ||
    die "image $1 is missing: build it with '$TPA image build --os-version ${1##*:}'"
}
