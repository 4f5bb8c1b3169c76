#!/usr/bin/env bash
# Benchmark: Barman's two time bars of issue 9, on one cluster: bbulb (primary, backup:
# bbchimay) and bbchimay (Barman), cluster bench-barman, with a small database (10 000 rows).
#
# 1. What the first backup adds to a deploy. The first deploy on fresh containers is a figure
#    (apt dominates it). Then, runs times (default 3): bbchimay's backups are removed by hand
#    (its catalogue emptied, as on a Barman host that has never backed bbulb up), `deploy`
#    (its Barman stage takes the restore point, the WAL switch and the first backup again),
#    then a no-op `deploy`. Bar: median (deploy with first backup - no-op deploy) <= 10 s.
#    The agent-timed sum of the three resources (from deploy.log) is reported beside it.
# 2. `verify-backup` end to end (restore of the newest backup on bbchimay, start, checks,
#    report, clean-up), runs times. Bar: median < 30 s.
# Needs the image tpa/debian:12 and Debian's archive (download-packages, once; or
# BENCH_LOCAL_REPO=<a cluster dir's local-repo> to copy one).
# Usage: scripts/bench/barman.sh [runs]
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

runs="$(positive_int runs "${1:-3}")"
bench_init
need_image tpa/debian:12

dir="$BENCH_TMP/barman"
write_backed_up_config "$dir" bench-barman bbulb bbchimay
bench_cluster "$dir"
ssh_=(ssh -F "$dir/ssh_config" -o BatchMode=yes)

# first_backup_ms LOG: the agent-timed milliseconds of the restore point, WAL switch and first
# backup resources in the last deploy LOG appended to deploy.log.
first_backup_ms() {
  awk '/ barman changed barman:(restore-point|switch-wal|first-backup):bbulb / {
         ms = $5; sub(/ms$/, "", ms); sum += ms; n++ }
       END { if (n != 3) exit 1; print sum }' "$1"
}

run_quiet download-packages "$TPA" download-packages "$dir"
run_quiet provision "$TPA" provision "$dir"
timed first first-deploy "$TPA" deploy "$dir"
first_ms="$(first_backup_ms "$dir/deploy.log")" || die "the first deploy took no first backup, see $dir/deploy.log"
info "first deploy, primary + Barman (packages included)" s "$first"
"${ssh_[@]}" bbulb "cd /tmp && runuser -u postgres -- psql -XAtqc \
  'create table bench_b as select i, md5(i::text) as t from generate_series(1, 10000) i'"

added=() resources=()
for run in $(seq 1 "$runs"); do
  "${ssh_[@]}" bbchimay 'find /var/lib/barman/bbulb/base -mindepth 1 -delete'
  : >"$dir/deploy.log"
  timed with "deploy-first-backup-$run" "$TPA" deploy "$dir"
  ms="$(first_backup_ms "$dir/deploy.log")" || die "run $run: deploy took no first backup, see $dir/deploy.log"
  timed noop "deploy-noop-$run" "$TPA" deploy "$dir"
  grep -q ': 0 changed,' "$BENCH_TMP/deploy-noop-$run.log" || die "run $run: the re-deploy changed something"
  added+=("$(awk -v a="$with" -v b="$noop" 'BEGIN { printf "%.3f", a - b }')")
  resources+=("$(awk -v m="$ms" 'BEGIN { printf "%.3f", m / 1000 }')")
  echo "run $run: deploy with the first backup $with s, no-op $noop s, the three resources ${ms} ms"
done
info "first backup: restore point, WAL switch, backup (agent)" s \
  "$(awk -v m="$first_ms" 'BEGIN { printf "%.3f", m / 1000 }')" "${resources[@]}"
report "first backup adds to a deploy" s "<=" 10 "${added[@]}"

drill=()
for run in $(seq 1 "$runs"); do
  timed t "verify-backup-$run" "$TPA" verify-backup "$dir"
  drill+=("$t")
done
grep -E 'passed|rows|recovery' "$BENCH_TMP/verify-backup-$runs.log" | head -5 || true
report "verify-backup, small database, end to end" s "<" 30 "${drill[@]}"
