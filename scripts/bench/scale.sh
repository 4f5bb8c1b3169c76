#!/usr/bin/env bash
# Benchmark harness for issue 13: clusters of 1, 4, 12 and 24 docker hosts (repmgr, Barman from
# 4 hosts up), each measured RUNS times from scratch: provision of fresh containers, the first
# deploy on them, a no-op re-deploy, `deploy --check` and `status`, with the controller's peak
# RSS. Package layers (docs/platforms.md) are built once, before the runs, and that build is
# measured on its own: the seed's provision + first deploy with the layers still to build.
#
#   1 host    the primary alone
#   4 hosts   the seed (tests/fixtures/seed): primary, replica, cascaded replica, Barman
#   12 hosts  the first 12 instances of tests/fixtures/scale24: brussels (primary, four
#             replicas, Barman) and ghent (a replica of the primary, five cascaded from it)
#   24 hosts  tests/fixtures/scale24
#
# Writes a markdown table and a PNG plot (with gnuplot) into its log directory and, with
# --write, puts the table into docs/benchmarks.md between the scale markers and the plot into
# docs/scale.png.
# Usage: scripts/bench/scale.sh [--write] [runs (default 3)] [sizes (default "1 4 12 24")]
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

write=""
if [[ "${1:-}" == --write ]]; then
  write=1
  shift
fi
runs="$(positive_int runs "${1:-3}")"
read -r -a sizes <<<"${2:-1 4 12 24}"
for n in "${sizes[@]}"; do
  [[ "$n" =~ ^(1|4|12|24)$ ]] || die "size $n: the harness knows 1, 4, 12 and 24 hosts"
done
command -v /usr/bin/time >/dev/null || die "/usr/bin/time not found: scripts/install-deps --bench"
command -v gnuplot >/dev/null || die "gnuplot not found: scripts/install-deps --bench"
bench_init
need_image tpa/debian:12

# scale_config N DIR: the N-host config, cluster bench-scale-N, names no test uses.
scale_config() {
  local n="$1" dir="$2"
  mkdir -p "$dir"
  case "$n" in
  1)
    awk '/^instances:/ { print; exit } { print }' "$REPO_ROOT/tests/fixtures/scale24/config.yml"
    printf -- '- Name: bru1\n  node: 1\n  location: brussels\n  role: [primary]\n'
    ;;
  4)
    sed -e 's/^cluster_name: fosdem/cluster_name: scale4/' \
      -e 's/\bulb\b/sculb/g; s/\bvub\b/scvub/g; s/\bachel\b/scachel/g; s/\bchimay\b/scchimay/g' \
      "$REPO_ROOT/tests/fixtures/seed/config.yml"
    ;;
  12)
    awk '/^- Name: ant1$/ { exit } { print }' "$REPO_ROOT/tests/fixtures/scale24/config.yml"
    ;;
  24) cat "$REPO_ROOT/tests/fixtures/scale24/config.yml" ;;
  esac | sed -e "s/^cluster_name: .*/cluster_name: bench-scale-$n/" >"$dir/config.yml"
  [[ "$(grep -c '^- Name: ' <(sed -n '/^instances:/,$p' "$dir/config.yml"))" == "$n" ]] ||
    die "the $n-host config in $dir has another number of instances"
}

# rss_timed VAR RSSVAR LABEL CMD...: like timed, and the command's peak RSS in MiB in RSSVAR.
rss_timed() {
  local -n _rss="$2"
  local var="$1" label="$3"
  shift 3
  timed "$var" "$label" /usr/bin/time -f '%M' -o "$BENCH_TMP/$label.rss" "$@"
  _rss="$(awk '{ v = $1 } END { printf "%.1f", v / 1024 }' "$BENCH_TMP/$label.rss")"
}

repo="$BENCH_TMP/local-repo"
layer_dir="$BENCH_TMP/scale-layer"
scale_config 4 "$layer_dir"
sed -i 's/^cluster_name: .*/cluster_name: bench-scale-layer/' "$layer_dir/config.yml"
bench_cluster "$layer_dir"
run_quiet download "$TPA" download-packages "$layer_dir"
cp -a "$layer_dir/local-repo" "$repo"

# The layers this cluster needs, built in the measured run: remove the unused ones first.
unused_layers="$(docker images --filter label=tpa.layer.packages -q | sort -u)"
if [[ -n "$unused_layers" ]]; then
  # shellcheck disable=SC2086 # ids, one per word; images that containers use are kept.
  docker rmi $unused_layers >/dev/null 2>&1 || true
fi
timed layer_provision layer-provision "$TPA" provision "$layer_dir"
grep -q 'building package layer' "$BENCH_TMP/layer-provision.log" ||
  die "no package layer was built in the layer run (is one in use by a container?), see $BENCH_TMP/layer-provision.log"
timed layer_deploy layer-deploy "$TPA" deploy "$layer_dir"
run_quiet layer-deprovision "$TPA" deprovision "$layer_dir"

table="$BENCH_TMP/scale.md"
data="$BENCH_TMP/scale.dat"
{
  echo "| hosts | provision | first deploy | no-op re-deploy | \`deploy --check\` | \`status\` | controller peak RSS (first / no-op deploy) |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
} >"$table"
: >"$data"
cell() {
  local median min max
  read -r median min max <<<"$(stats "$@")"
  printf '%.2f s (%.2f–%.2f)' "$median" "$min" "$max"
}
median_of() { stats "$@" | awk '{ print $1 }'; }

for n in "${sizes[@]}"; do
  dir="$BENCH_TMP/scale-$n"
  scale_config "$n" "$dir"
  cp -a "$repo" "$dir/local-repo"
  bench_cluster "$dir"
  prov=() first=() noop=() check=() status=() rss_first=() rss_noop=()
  for ((r = 1; r <= runs; r++)); do
    echo "== $n hosts, run $r of $runs"
    # provision finishes a host that failed to come up; a retry is reported, and timed.
    start=$EPOCHREALTIME
    if ! timeout "$STEP_TIMEOUT" "$TPA" provision "$dir" >"$BENCH_TMP/p-$n-$r.log" 2>&1; then
      echo "provision of $n hosts failed in run $r (retrying once):" >&2
      tail -n 25 "$BENCH_TMP/p-$n-$r.log" >&2
      run_quiet "p-$n-$r-retry" "$TPA" provision "$dir"
    fi
    t="$(elapsed "$start" "$EPOCHREALTIME")"
    grep -q 'building package layer' "$BENCH_TMP/p-$n-$r.log" &&
      die "$n hosts run $r built a layer: the layer figures above should have built it"
    prov+=("$t")
    rss_timed t m "d-$n-$r" "$TPA" deploy "$dir"
    first+=("$t") rss_first+=("$m")
    rss_timed t m "n-$n-$r" "$TPA" deploy "$dir"
    grep -q ': 0 changed,' "$BENCH_TMP/n-$n-$r.log" || die "the re-deploy changed something, see $BENCH_TMP/n-$n-$r.log"
    noop+=("$t") rss_noop+=("$m")
    timed t "c-$n-$r" "$TPA" deploy --check "$dir"
    check+=("$t")
    timed t "s-$n-$r" "$TPA" status "$dir"
    status+=("$t")
    run_quiet "x-$n-$r" "$TPA" deprovision "$dir"
  done
  printf '| %s | %s | %s | %s | %s | %s | %s / %s MiB |\n' "$n" "$(cell "${prov[@]}")" \
    "$(cell "${first[@]}")" "$(cell "${noop[@]}")" "$(cell "${check[@]}")" \
    "$(cell "${status[@]}")" "$(printf '%.1f' "$(median_of "${rss_first[@]}")")" \
    "$(printf '%.1f' "$(median_of "${rss_noop[@]}")")" >>"$table"
  printf '%s %s %s %s %s %s\n' "$n" "$(median_of "${prov[@]}")" "$(median_of "${first[@]}")" \
    "$(median_of "${noop[@]}")" "$(median_of "${check[@]}")" "$(median_of "${status[@]}")" >>"$data"
  info "$n hosts, provision" s "${prov[@]}"
  info "$n hosts, first deploy" s "${first[@]}"
  info "$n hosts, no-op re-deploy" s "${noop[@]}"
  info "$n hosts, deploy --check" s "${check[@]}"
  info "$n hosts, status" s "${status[@]}"
  info "$n hosts, controller peak RSS, first deploy" MiB "${rss_first[@]}"
done

# Into docs only with --write: a run without it leaves the committed plot alone.
plot="$BENCH_TMP/scale.png"
[[ -n "$write" ]] && plot="$REPO_ROOT/docs/scale.png"
gnuplot <<EOF
set terminal png size 800,500
set output '$plot'
set title 'tpa-controller on docker hosts (medians of $runs runs, 2 cores)'
set xlabel 'hosts'
set ylabel 'seconds'
set logscale y
set key top left
set xtics (1, 4, 12, 24)
plot '$data' using 1:3 with linespoints title 'first deploy (layers built)', \
     '' using 1:2 with linespoints title 'provision', \
     '' using 1:4 with linespoints title 'no-op re-deploy', \
     '' using 1:5 with linespoints title 'deploy --check', \
     '' using 1:6 with linespoints title 'status'
EOF

{
  echo
  echo "Package layers built in the run (seed, 4 hosts, layers removed first): provision" \
    "$(printf '%.1f' "$layer_provision") s (building the layers) + first deploy" \
    "$(printf '%.1f' "$layer_deploy") s = $(awk -v a="$layer_provision" -v b="$layer_deploy" 'BEGIN { printf "%.1f", a + b }') s."
  echo
  echo "Runs: $runs per size; $(date -u +%Y-%m-%d), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end."
} >>"$table"
cat "$table"
info "seed, provision building the package layers" s "$layer_provision"
info "seed, first deploy after that" s "$layer_deploy"
if [[ -n "$write" ]]; then
  doc="$REPO_ROOT/docs/benchmarks.md"
  grep -q '<!-- scale:begin -->' "$doc" || die "$doc has no <!-- scale:begin --> marker"
  awk -v table="$table" '
    /<!-- scale:begin -->/ { print; while ((getline line < table) > 0) print line; skip = 1; next }
    /<!-- scale:end -->/ { skip = 0 }
    !skip { print }' "$doc" >"$doc.new"
  mv "$doc.new" "$doc"
  echo "wrote the table into $doc and the plot into $plot"
fi
