#!/usr/bin/env bash
# Benchmark: Patroni failover time (issue 10): the leader's container stopped → the first
# INSERT accepted on the new leader, runs times (default 3). Bar: median < 30 s with
# Patroni's documented defaults (ttl 30, loop_wait 10, retry_timeout 10; docs/patroni.md).
# A 3-host cluster bench-pat (bpat1..3, each a Postgres host and an etcd member) is
# provisioned and deployed once (not timed). Each run: INSERT loops on both replicas, then
# `docker stop <leader>` (the leader from `status --json`); the figure runs from just before
# `docker stop` to the first `ok` of either loop (container and bench share the kernel clock).
# Then (not timed) `docker start` the old leader, `deploy`, and wait until `status` exits 0
# (the old leader streams from the new one again).
# Needs the image tpa/debian:12, jq, and Debian's archive (download-packages, once).
# Usage: scripts/bench/patroni-failover.sh [runs]
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

runs="$(positive_int runs "${1:-3}")"
bench_init
need_image tpa/debian:12
command -v jq >/dev/null || die "jq not found: the bench reads 'status --json' with it"

dir="$BENCH_TMP/pat"
mkdir -p "$dir"
cat >"$dir/config.yml" <<'CONF'
---
architecture: M1
cluster_name: bench-pat
cluster_vars:
  failover_manager: patroni
  postgres_version: '15'
  use_local_repo_only: true
instance_defaults:
  image: tpa/debian:12
  platform: docker
  vars:
    ansible_user: root
instances:
- Name: bpat1
  node: 1
  role: [primary, etcd]
- Name: bpat2
  node: 2
  role: [replica, etcd]
  upstream: bpat1
- Name: bpat3
  node: 3
  role: [replica, etcd]
  upstream: bpat1
CONF
bench_cluster "$dir"
hosts=(bpat1 bpat2 bpat3)

ssh_=(ssh -F "$dir/ssh_config" -o BatchMode=yes)
rssh() {
  "${ssh_[@]}" "$@"
}

echo "download-packages, provision and deploy of bench-pat (not timed)"
run_quiet download-packages "$TPA" download-packages "$dir"
run_quiet deploy "$TPA" deploy "$dir"
wait_healthy deployed
rssh bpat1 "cd /tmp && runuser -u postgres -- psql -XAtqc 'create table bench_w (host text)'"

# The INSERT loop run on a replica: "ok|no EPOCHREALTIME" per attempt; it dies of SIGPIPE
# once the bench closes its SSH session, and stops by itself after 5 minutes anyway.
cat >"$BENCH_TMP/writer.sh" <<'W'
end=$((SECONDS + 300))
cd /tmp
while ((SECONDS < end)); do
  if runuser -u postgres -- psql -XAtqc "insert into bench_w values ('$1')" >/dev/null 2>&1; then
    echo "ok $EPOCHREALTIME"
  else
    echo "no $EPOCHREALTIME"
  fi
  sleep 0.1
done
W

failover=() stopped_after=()
for ((i = 0; i < runs; i++)); do
  old="$(live_primary)"
  [[ -n "$old" ]] || die "no single live leader before failover $((i + 1))"
  replicas=() pids=()
  for host in "${hosts[@]}"; do
    [[ "$host" == "$old" ]] && continue
    replicas+=("$host")
    "${ssh_[@]}" "$host" bash -s -- "$host" <"$BENCH_TMP/writer.sh" >"$BENCH_TMP/fo$i-$host.w" 2>/dev/null &
    pids+=($!)
  done
  deadline=$((SECONDS + 30))
  for host in "${replicas[@]}"; do
    until [[ -s "$BENCH_TMP/fo$i-$host.w" ]]; do
      ((SECONDS < deadline)) || die "the INSERT loop on $host did not start"
      sleep 0.1
    done
  done
  t0=$EPOCHREALTIME
  run_quiet "docker-stop-$i" docker stop "$old"
  t_stopped=$EPOCHREALTIME
  first="$(first_insert "fo$i" "$old" "${replicas[@]}")"
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  read -r t_first promoted <<<"$first"
  failover+=("$(elapsed "$t0" "$t_first")")
  stopped_after+=("$(elapsed "$t0" "$t_stopped")")
  echo "failover $((i + 1))/$runs: $old stopped (docker stop took ${stopped_after[-1]} s)," \
    "$promoted accepted an INSERT after ${failover[-1]} s"
  # The old leader back as a replica (not timed).
  run_quiet "docker-start-$i" docker start "$old"
  wait_ssh "$old"
  run_quiet "rejoin-$i" "$TPA" deploy "$dir"
  wait_healthy "failover-$i"
done

echo
echo "load average at the end: $(cut -d ' ' -f 1-3 /proc/loadavg)"
report "Patroni failover: docker stop to first accepted write" s "<" 30 "${failover[@]}"
info "Patroni failover: docker stop itself" s "${stopped_after[@]}"
