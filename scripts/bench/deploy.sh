#!/usr/bin/env bash
# Benchmark: the first `tpa-controller deploy` of a single primary (Postgres 15 from the
# local repository) on a fresh container, against plain-primary.sh doing the essential steps
# over SSH on an identical fresh container; RUNS times (default 3), alternating which goes
# first. Provision and download-packages are outside the timing. Both start from the plain
# image (docker_package_layer: false), so both install the packages.
# Then, on the converged cluster, NOOP_RUNS (default 5) no-op re-deploys and deploy --check.
# Needs the image tpa/debian:12 and Debian's archive (download-packages, once).
# Usage: scripts/bench/deploy.sh [runs] [noop_runs]
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

runs="$(positive_int runs "${1:-3}")"
noop_runs="$(positive_int noop_runs "${2:-5}")"
bench_init
need_image tpa/debian:12

# One local repository, hard-linked into every cluster dir (provision bind-mounts it).
repo="$BENCH_TMP/repo"
write_config "$repo" bench-deploy bd1
echo "download-packages (not timed)"
run_quiet download-packages "$TPA" download-packages "$repo"

# new_cluster DIR NAME INSTANCE: a fresh single-primary cluster dir, provisioned.
new_cluster() {
  write_config "$1" "$2" "$3"
  # Both sides install the packages on the plain image (scale.sh measures package layers).
  sed -i 's/^  use_local_repo_only: true$/&\n  docker_package_layer: false/' "$1/config.yml"
  cp -al "$repo/local-repo" "$1/"
  bench_cluster "$1"
  run_quiet "provision-$2-$i" "$TPA" provision "$1"
}

# check_postgres DIR HOST: Postgres answers a query on HOST.
check_postgres() {
  run_quiet "check-$2-$i" ssh -F "$1/ssh_config" -o BatchMode=yes "$2" \
    "cd /tmp && runuser -u postgres -- psql -Atc 'select 1'"
}

time_deploy() {
  timed t "deploy-$i" "$TPA" deploy -v "$ddir"
  tpa+=("$t")
  # The plain script installs exactly what deploy installed ("installed: a, b, c").
  if ((${#packages[@]} == 0)); then
    read -ra packages <<<"$(sed -n 's/.*changed packages:[^:]*: installed: //p' "$BENCH_TMP/deploy-$i.log" |
      tr -d ',' | head -n 1)"
    ((${#packages[@]} > 0)) || die "no 'installed:' line in $BENCH_TMP/deploy-$i.log"
  fi
}

time_plain() {
  timed t "plain-$i" ssh -F "$sdir/ssh_config" -o BatchMode=yes bs1 bash -s -- "${packages[@]}" \
    <"$BENCH_DIR/plain-primary.sh"
  plain+=("$t")
}

tpa=() plain=() ratio=() packages=()
for ((i = 1; i <= runs; i++)); do
  ddir="$BENCH_TMP/deploy-$i" sdir="$BENCH_TMP/plain-$i"
  new_cluster "$ddir" bench-deploy bd1
  new_cluster "$sdir" bench-plain bs1
  # Run 1 has deploy first: it tells which packages the plain script must install.
  if ((i % 2 == 1)); then
    time_deploy
    time_plain
  else
    time_plain
    time_deploy
  fi
  check_postgres "$ddir" bd1
  check_postgres "$sdir" bs1
  ratio+=("$(awk -v a="${tpa[-1]}" -v b="${plain[-1]}" 'BEGIN { printf "%.2f", a / b }')")
  echo "run $i/$runs: deploy ${tpa[-1]} s, plain script ${plain[-1]} s, ratio ${ratio[-1]}"
  run_quiet "deprovision-plain-$i" "$TPA" deprovision "$sdir"
  if ((i < runs)); then
    run_quiet "deprovision-deploy-$i" "$TPA" deprovision "$ddir"
  fi
done
echo "packages: ${packages[*]}"

noop=() check=()
for ((j = 1; j <= noop_runs; j++)); do
  timed t "noop-$j" "$TPA" deploy "$ddir"
  grep -q ': 0 changed,' "$BENCH_TMP/noop-$j.log" ||
    die "re-deploy $j changed something, see $BENCH_TMP/noop-$j.log"
  noop+=("$t")
  # Exit 0: nothing pending (2 would mean changes pending, and fails the bench).
  timed t "check-$j" "$TPA" deploy --check "$ddir"
  check+=("$t")
done

info "deploy, single primary, fresh host" s "${tpa[@]}"
info "plain shell script, same steps" s "${plain[@]}"
report "deploy / plain script (per run)" x "<=" 1.5 "${ratio[@]}"
# The same ratio from the two medians, for comparison with the paired per-run figure.
read -r tpa_median _ <<<"$(stats "${tpa[@]}")"
read -r plain_median _ <<<"$(stats "${plain[@]}")"
info "deploy / plain script (ratio of medians)" x \
  "$(awk -v a="$tpa_median" -v b="$plain_median" 'BEGIN { printf "%.2f", a / b }')"
report "deploy, no-op re-deploy" s "<" 1 "${noop[@]}"
report "deploy --check, converged" s "<" 1 "${check[@]}"
