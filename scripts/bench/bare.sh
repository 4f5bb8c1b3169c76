#!/usr/bin/env bash
# Benchmark: the seed deployed on bare hosts against the same seed on docker hosts (issue 12).
# Bar: bare / docker ≤ 1.2 per run, median. The platform only changes how hosts are found
# and how packages reach them, not how they are deployed.
# Each run (runs, default 3) prepares, not timed:
# - bench-sdock: the seed (xdulb primary, xdvub replica, xdachel cascaded replica, xdchimay
#   Barman) on the docker platform, provisioned by tpa (the local repository bind-mounted);
# - bench-sbare: four machines started here as a hypervisor would (systemd, sshd, a sudo
#   login user with the cluster key, on an --internal Docker network: no package archive),
#   their host keys in the cluster's known_hosts, and the seed (xbulb, xbvub, xbachel,
#   xbchimay) with `platform: bare`, provisioned by tpa (strict SSH checks only);
# then times the first `deploy` of each, alternating which goes first, and checks that `status`
# exits 0. The bare deploy also ships the local repository (about 77 MB) to each host through
# the agents; that is part of what the bar measures.
# Needs the image tpa/debian:12, jq, ssh-keygen, and Debian's archive (download-packages, once).
# Usage: scripts/bench/bare.sh [runs]
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

runs="$(positive_int runs "${1:-3}")"
bench_init
need_image tpa/debian:12

network=bench-bare-net
user=benchops
bare_hosts=(xbulb xbvub xbachel xbchimay)

remove_machines() {
  local host
  for host in "${bare_hosts[@]}"; do
    docker rm -f -v "$host" >/dev/null 2>&1 || true
  done
  docker network rm "$network" >/dev/null 2>&1 || true
}
# The bare machines are ours, not a cluster's: removed on exit too (after the deprovision).
trap 'rc=$?; remove_machines; (exit $rc); bench_cleanup' EXIT

# seed_config DIR CLUSTER PREFIX PLATFORM: the seed renamed with PREFIX, on PLATFORM.
seed_config() {
  local dir="$1" name="$2" prefix="$3" platform="$4"
  mkdir -p "$dir"
  sed -e "s/cluster_name: fosdem/cluster_name: $name/" \
    -e "s/\\bulb\\b/${prefix}ulb/g; s/\\bvub\\b/${prefix}vub/g" \
    -e "s/\\bachel\\b/${prefix}achel/g; s/\\bchimay\\b/${prefix}chimay/g" \
    -e "s/^  image: tpa\\/debian\$/  image: tpa\\/debian:12/" \
    -e "s/^  platform: docker\$/  platform: $platform/" \
    "$REPO_ROOT/tests/fixtures/seed/config.yml" >"$dir/config.yml"
}

# start_machine HOST: systemd as PID 1 and sshd, nothing of tpa's; prints its address.
start_machine() {
  docker run -d --name "$1" --hostname "$1" --network "$network" \
    --tmpfs /run:rw,exec,nosuid,nodev,mode=755 --tmpfs /run/lock \
    --tmpfs /tmp:rw,exec,nosuid,nodev --cgroupns host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
    --stop-signal SIGRTMIN+3 -e container=docker tpa/debian:12 >/dev/null
  docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1"
}

# prepare HOST PUBLIC_KEY: the operator's preparation (login user, key, sudo); prints the
# host's ed25519 host key.
prepare() {
  docker exec -i "$1" sh -s -- "$user" "$2" <<'PREP'
set -e
useradd -m -s /bin/bash "$1"
install -d -m 700 -o "$1" "/home/$1/.ssh"
echo "$2" >"/home/$1/.ssh/authorized_keys"
chown "$1" "/home/$1/.ssh/authorized_keys"
echo "$1 ALL=(ALL) NOPASSWD: ALL" >"/etc/sudoers.d/$1"
i=0
until [ -s /etc/ssh/ssh_host_ed25519_key.pub ] && systemctl is-active -q ssh; do
  i=$((i + 1)); [ $i -gt 300 ] && exit 1; sleep 0.1
done
cut -d ' ' -f 1-2 /etc/ssh/ssh_host_ed25519_key.pub
PREP
}

# new_bare DIR: fresh machines, the config with their addresses, the operator's known_hosts.
new_bare() {
  local dir="$1" host address hostkey
  remove_machines
  docker network create --internal "$network" >/dev/null
  seed_config "$dir" bench-sbare xb bare
  sed -i -e "s/^    ansible_user: root\$/    ansible_user: $user/" -e '/^  image: /d' "$dir/config.yml"
  ssh-keygen -q -t ed25519 -N '' -f "$dir/id_bench-sbare"
  : >"$dir/known_hosts"
  for host in "${bare_hosts[@]}"; do
    address="$(start_machine "$host")"
    hostkey="$(prepare "$host" "$(cat "$dir/id_bench-sbare.pub")")"
    echo "$address $hostkey" >>"$dir/known_hosts"
    sed -i "/^- Name: $host\$/a\\  ip_address: $address" "$dir/config.yml"
  done
  cp -al "$repo/local-repo" "$dir/"
  bench_cluster "$dir"
  run_quiet "provision-bare-$i" "$TPA" provision "$dir"
}

new_docker() {
  seed_config "$1" bench-sdock xd docker
  cp -al "$repo/local-repo" "$1/"
  bench_cluster "$1"
  run_quiet "provision-docker-$i" "$TPA" provision "$1"
}

# time_deploy DIR LABEL: times the first deploy of DIR, then waits until `status` exits 0.
time_deploy() {
  local dir="$1" label="$2"
  timed t "deploy-$label-$i" "$TPA" deploy "$dir"
  wait_healthy "$label-$i"
  if [[ "$label" == bare ]]; then bare+=("$t"); else dock+=("$t"); fi
}

repo="$BENCH_TMP/repo"
seed_config "$repo" bench-srepo xr docker
echo "download-packages (not timed)"
run_quiet download-packages "$TPA" download-packages "$repo"

bare=() dock=() ratio=()
for ((i = 1; i <= runs; i++)); do
  bdir="$BENCH_TMP/bare-$i" ddir="$BENCH_TMP/docker-$i"
  new_bare "$bdir"
  new_docker "$ddir"
  if ((i % 2 == 1)); then
    time_deploy "$ddir" docker
    time_deploy "$bdir" bare
  else
    time_deploy "$bdir" bare
    time_deploy "$ddir" docker
  fi
  ratio+=("$(awk -v b="${bare[-1]}" -v d="${dock[-1]}" 'BEGIN { printf "%.2f", b / d }')")
  echo "run $i/$runs: docker ${dock[-1]} s, bare ${bare[-1]} s, ratio ${ratio[-1]}"
  run_quiet "deprovision-docker-$i" "$TPA" deprovision "$ddir"
  run_quiet "deprovision-bare-$i" "$TPA" deprovision "$bdir" --uninstall
done

echo
echo "load average at the end: $(cut -d ' ' -f 1-3 /proc/loadavg)"
info "seed first deploy, docker hosts" s "${dock[@]}"
info "seed first deploy, bare hosts" s "${bare[@]}"
report "seed first deploy bare / docker (per run)" x "<=" 1.2 "${ratio[@]}"
