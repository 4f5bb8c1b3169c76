#!/usr/bin/env bash
# Benchmark: `tpa-controller provision` of 4 fresh containers until every one answers SSH,
# then a no-op re-provision, then deprovision; RUNS times (default 5).
# Needs the host image tpa/debian:12 (tpa-controller image build --os-version 12).
# Usage: scripts/bench/provision.sh [runs]
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

runs="$(positive_int runs "${1:-5}")"
bench_init
need_image tpa/debian:12

dir="$BENCH_TMP/bench-prov"
hosts=(bp1 bp2 bp3 bp4)
write_config "$dir" bench-prov "${hosts[@]}"
bench_cluster "$dir"

fresh=() noop=() deprov=()
for ((i = 1; i <= runs; i++)); do
  timed t "provision-$i" "$TPA" provision "$dir"
  fresh+=("$t")
  # provision promises SSH-ready hosts: hold it to that, outside the timing.
  for h in "${hosts[@]}"; do
    run_quiet "ssh-$i-$h" ssh -F "$dir/ssh_config" -o BatchMode=yes -o ConnectTimeout=10 "$h" true
  done
  timed t "reprovision-$i" "$TPA" provision "$dir"
  noop+=("$t")
  timed t "deprovision-$i" "$TPA" deprovision "$dir"
  deprov+=("$t")
  echo "run $i/$runs: provision ${fresh[-1]} s, no-op ${noop[-1]} s, deprovision ${deprov[-1]} s"
done

report "provision, 4 fresh hosts to SSH-ready" s "<" 10 "${fresh[@]}"
report "provision, no-op (4 hosts up)" s "<" 1 "${noop[@]}"
info "deprovision, 4 hosts" s "${deprov[@]}"
