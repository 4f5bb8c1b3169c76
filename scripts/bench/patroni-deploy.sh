#!/usr/bin/env bash
# Benchmark: first deploy of a 3-node Patroni cluster against a 3-node repmgr cluster on the
# same machine in the same run (issue 10). Bar: Patroni / repmgr ≤ 1.3 per run, median.
# Each run provisions (not timed) two clusters of three fresh tpa/debian:12 containers:
# bench-pdr (bpr1 primary, bpr2 and bpr3 replicas of it, failover_manager repmgr) and
# bench-pdp (bpd1..3, the same with failover_manager patroni and each host also an etcd
# member, as the e2e test and `configure --failover-manager patroni` co-located do), then
# times `deploy` of each, alternating which goes first, and checks that `status` exits 0.
# Both deploys bootstrap the agents, install packages from the same local repository, run
# initdb on the primary and clone both replicas; Patroni's adds etcd (three members, TLS,
# health), Patroni's units and hand-over, and the DCS configuration.
# Needs the image tpa/debian:12, jq, and Debian's archive (download-packages, once).
# Usage: scripts/bench/patroni-deploy.sh [runs]
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

runs="$(positive_int runs "${1:-3}")"
bench_init
need_image tpa/debian:12

# write_ha_config DIR CLUSTER MANAGER PREFIX: 3 hosts PREFIX1..3, PREFIX1 the primary;
# with patroni every host is also an etcd member.
write_ha_config() {
  local dir="$1" name="$2" manager="$3" prefix="$4" node role
  mkdir -p "$dir"
  {
    echo "---"
    echo "architecture: M1"
    echo "cluster_name: $name"
    echo "cluster_vars:"
    echo "  failover_manager: $manager"
    echo "  postgres_version: '15'"
    echo "  use_local_repo_only: true"
    echo "instance_defaults:"
    echo "  image: tpa/debian:12"
    echo "  platform: docker"
    echo "  vars:"
    echo "    ansible_user: root"
    echo "instances:"
    for node in 1 2 3; do
      if ((node == 1)); then role=primary; else role=replica; fi
      [[ "$manager" == patroni ]] && role="$role, etcd"
      echo "- Name: $prefix$node"
      echo "  node: $node"
      echo "  role: [$role]"
      ((node == 1)) || echo "  upstream: ${prefix}1"
    done
  } >"$dir/config.yml"
}

# One local repository per failover manager (repmgr's packages are not Patroni's).
echo "download-packages (not timed)"
for manager in repmgr patroni; do
  write_ha_config "$BENCH_TMP/repo-$manager" "bench-pdrepo-$manager" "$manager" bpq
  run_quiet "download-packages-$manager" "$TPA" download-packages "$BENCH_TMP/repo-$manager"
done

new_cluster() {
  write_ha_config "$1" "$2" "$3" "$4"
  cp -al "$BENCH_TMP/repo-$3/local-repo" "$1/"
  bench_cluster "$1"
  run_quiet "provision-$2-$i" "$TPA" provision "$1"
}

# time_deploy DIR LABEL: times the first deploy of DIR into ${LABEL}s, then waits until
# `status` exits 0 (not timed).
time_deploy() {
  local dir="$1" label="$2"
  timed t "deploy-$label-$i" "$TPA" deploy "$dir"
  wait_healthy "$label-$i"
  if [[ "$label" == patroni ]]; then patroni+=("$t"); else repmgr+=("$t"); fi
}

patroni=() repmgr=() ratio=()
for ((i = 1; i <= runs; i++)); do
  rdir="$BENCH_TMP/repmgr-$i" pdir="$BENCH_TMP/patroni-$i"
  new_cluster "$rdir" bench-pdr repmgr bpr
  new_cluster "$pdir" bench-pdp patroni bpd
  if ((i % 2 == 1)); then
    time_deploy "$rdir" repmgr
    time_deploy "$pdir" patroni
  else
    time_deploy "$pdir" patroni
    time_deploy "$rdir" repmgr
  fi
  ratio+=("$(awk -v p="${patroni[-1]}" -v r="${repmgr[-1]}" 'BEGIN { printf "%.2f", p / r }')")
  echo "run $i/$runs: repmgr ${repmgr[-1]} s, patroni ${patroni[-1]} s, ratio ${ratio[-1]}"
  run_quiet "deprovision-repmgr-$i" "$TPA" deprovision "$rdir"
  run_quiet "deprovision-patroni-$i" "$TPA" deprovision "$pdir"
done

echo
echo "load average at the end: $(cut -d ' ' -f 1-3 /proc/loadavg)"
info "first deploy, 3 nodes, repmgr" s "${repmgr[@]}"
info "first deploy, 3 nodes, Patroni + etcd" s "${patroni[@]}"
report "first deploy Patroni / repmgr (per run)" x "<=" 1.3 "${ratio[@]}"
