#!/usr/bin/env bash
# Benchmark: `tpa-controller provision` + `deprovision` of a 4-instance aws cluster (VPC,
# subnet, gateway, route table, security group, key pair, instances) against a local moto
# server, RUNS times (default 5). moto answers like EC2 but boots nothing, so this measures
# tpa's side (API calls, key generation, files), not how long EC2 takes to start machines.
# Needs moto: scripts/install-deps --tests (or TPA_MOTO_VENV pointing at a venv with it).
# Usage: scripts/bench/aws-moto.sh [runs]
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

runs="$(positive_int runs "${1:-5}")"
[[ -x "$TPA" ]] || die "$TPA not found: build it first with 'cargo build --release --bins' (or set TPA_CONTROLLER)"
venv="${TPA_MOTO_VENV:-/opt/tpa/moto}"
[[ -x "$venv/bin/moto_server" ]] || die "moto is not installed in $venv: run scripts/install-deps --tests"
((BASH_VERSINFO[0] >= 5)) || die "bash 5 or newer is needed (EPOCHREALTIME)"

BENCH_TMP="$(mktemp -d "${TMPDIR:-/tmp}/bench-XXXXXX")"
moto_pid=""
cleanup() {
  local status=$?
  trap - EXIT
  [[ -n "$moto_pid" ]] && kill "$moto_pid" 2>/dev/null && wait "$moto_pid" 2>/dev/null
  if ((status == 0)) && [[ -z "${BENCH_KEEP:-}" ]]; then rm -rf "$BENCH_TMP"; else echo "bench: logs kept in $BENCH_TMP" >&2; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
MOTO_AMIS_PATH="$REPO_ROOT/tests/fixtures/aws/amis.json" \
  "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$BENCH_TMP/moto.log" 2>&1 &
moto_pid=$!
for ((i = 0; i < 300; i++)); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=testing \
  AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true XDG_CONFIG_HOME="$BENCH_TMP/config"
unset AWS_PROFILE

dir="$BENCH_TMP/bench-aws"
mkdir -p "$dir"
cat >"$dir/config.yml" <<'YAML'
---
architecture: M1
cluster_name: bench-aws
cluster_tags: {}
ec2_ami: {Name: 'debian-12-amd64-*', Owner: '136693071363'}
ec2_instance_reachability: public
ec2_vpc:
  eu-west-1: {Name: bench-aws, cidr: 10.33.0.0/16}
cluster_vars:
  postgres_version: '15'
  failover_manager: repmgr
locations:
- {Name: main, region: eu-west-1, az: eu-west-1a, subnet: 10.33.0.0/28}
instance_defaults:
  platform: aws
  type: t3.micro
  location: main
  default_volumes:
  - {device_name: root, volume_type: gp2, volume_size: 16, encrypted: true}
  - {device_name: /dev/sdf, volume_type: gp2, volume_size: 16, encrypted: true}
  vars: {ansible_user: admin}
instances:
- {Name: ba1, node: 1, role: [primary]}
- {Name: ba2, node: 2, role: [replica], upstream: ba1}
- {Name: ba3, node: 3, role: [replica], upstream: ba1}
- {Name: ba4, node: 4, role: [barman]}
YAML

both=() prov=() noop=() deprov=()
for ((i = 1; i <= runs; i++)); do
  timed p "provision-$i" "$TPA" provision "$dir"
  timed n "reprovision-$i" "$TPA" provision "$dir"
  timed d "deprovision-$i" "$TPA" deprovision "$dir"
  prov+=("$p") noop+=("$n") deprov+=("$d")
  both+=("$(awk -v a="$p" -v b="$d" 'BEGIN { printf "%.3f", a + b }')")
  echo "run $i/$runs: provision $p s, no-op $n s, deprovision $d s"
done

report "aws (moto): provision + deprovision, 4 instances" s "<" 10 "${both[@]}"
info "aws (moto): provision, 4 instances" s "${prov[@]}"
info "aws (moto): no-op re-provision" s "${noop[@]}"
info "aws (moto): deprovision, 4 instances" s "${deprov[@]}"
