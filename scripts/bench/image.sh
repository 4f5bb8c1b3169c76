#!/usr/bin/env bash
# Benchmark: `tpa-controller image build --os-version 12` (debootstrap from Debian's archive,
# docker import), RUNS times (default 1).
# It rebuilds tpa/debian:12 under its normal name; the new image replaces the old one
# atomically (docker tag), so containers and tests that use it are not disturbed.
# Needs root (debootstrap) and Debian's archive.
# Usage: scripts/bench/image.sh [runs]
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

runs="$(positive_int runs "${1:-1}")"
bench_init
[[ "$(id -u)" == 0 ]] || die "image build runs debootstrap, which needs root: run this as root"

build=()
for ((i = 1; i <= runs; i++)); do
  timed t "image-$i" "$TPA" image build --os-version 12
  build+=("$t")
  size="$(docker image inspect tpa/debian:12 --format '{{.Size}}')"
  echo "run $i/$runs: image build ${build[-1]} s, tpa/debian:12 is $((size / 1000000)) MB"
done

report "image build --os-version 12" s "<" 120 "${build[@]}"
