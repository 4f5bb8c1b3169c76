#!/usr/bin/env bash
# Benchmark: `restore` (issue 9's bar), on one cluster: brulb (primary, backup: brchimay) and
# brchimay (Barman), cluster bench-restore, deployed once on fresh containers (not timed), with
# a small database (10 000 rows) and a backup taken after it was written.
#
# 1. `restore --to brnew` once: a new host created, its packages installed, the newest backup
#    restored with all WAL, started and promoted. Reported as a figure (no bar): apt dominates.
# 2. runs times (default 3), side by side in each run, onto brnew (which now has the packages):
#    - tpa: `restore --to brnew --force` (the newest backup, to the end of the archived WAL:
#      a WAL switch archived, backups listed, Postgres stopped and the data directory emptied,
#      `barman recover` over SSH, started under postgres.service, waited for until it is out
#      of recovery and answers);
#    - hand-run over SSH: `systemctl stop postgres` and the data directory emptied on brnew,
#      `barman recover --remote-ssh-command 'ssh postgres@brnew' brulb latest <data dir>` as
#      barman on brchimay (Barman's defaults: WAL by get-wal), `systemctl start postgres` and
#      polling `select pg_is_in_recovery()` until false.
#    Both end with the row count checked. Bar: median tpa / median hand-run <= 1.5.
# Needs the image tpa/debian:12 and Debian's archive (download-packages, once; or
# BENCH_LOCAL_REPO=<a cluster dir's local-repo> to copy one).
# Usage: scripts/bench/restore.sh [runs]
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

runs="$(positive_int runs "${1:-3}")"
bench_init
need_image tpa/debian:12
command -v jq >/dev/null || die "jq not found: the bench reads inventory.json with it"

dir="$BENCH_TMP/restore"
write_backed_up_config "$dir" bench-restore brulb brchimay
bench_cluster "$dir"

ssh_=(ssh -F "$dir/ssh_config" -o BatchMode=yes)
rssh() {
  "${ssh_[@]}" "$@"
}
psql_on() {
  rssh "$1" "cd /tmp && runuser -u postgres -- psql -XAtqc '$2'"
}

echo "download-packages, provision and deploy (not timed)"
run_quiet download-packages "$TPA" download-packages "$dir"
run_quiet deploy "$TPA" deploy "$dir"
psql_on brulb "create table bench_r as select i, md5(i::text) as t from generate_series(1, 10000) i"
run_quiet backup "$TPA" backup "$dir"

timed new_host restore-new "$TPA" restore "$dir" --to brnew
[[ "$(psql_on brnew "select count(*) from bench_r")" == 10000 ]] || die "brnew lacks the rows"
grep -E 'created at|installed and configured|barman recover:|recovered to' "$BENCH_TMP/restore-new.log" || true
info "restore --to a new host (packages included)" s "$new_host"

address="$(jq -r '.hosts[] | select(.name == "brnew") | .address' "$dir/inventory.json")"
tpa=()
hand=()
for run in $(seq 1 "$runs"); do
  timed t "restore-$run" "$TPA" restore "$dir" --to brnew --force
  [[ "$(psql_on brnew "select count(*) from bench_r")" == 10000 ]] || die "tpa run $run: rows missing"
  tpa+=("$t")
  timed h "hand-$run" bash -c "
    set -euo pipefail
    ${ssh_[*]} brnew 'systemctl stop postgres.service && find /opt/postgres/data -mindepth 1 -delete'
    ${ssh_[*]} brchimay \"cd /var/lib/barman && runuser -u barman -- barman recover \
      --remote-ssh-command 'ssh postgres@$address' brulb latest /opt/postgres/data\"
    ${ssh_[*]} brnew 'systemctl start postgres.service; cd /tmp; \
      until [[ \$(runuser -u postgres -- psql -XAtc \"select pg_is_in_recovery()\" 2>/dev/null) == f ]]; do sleep 0.1; done'
  "
  [[ "$(psql_on brnew "select count(*) from bench_r")" == 10000 ]] || die "hand run $run: rows missing"
  hand+=("$h")
  echo "run $run: tpa restore $t s, hand-run barman recover + start $h s"
done
read -r tpa_median _ _ <<<"$(stats "${tpa[@]}")"
read -r hand_median _ _ <<<"$(stats "${hand[@]}")"
ratio="$(awk -v a="$tpa_median" -v b="$hand_median" 'BEGIN { printf "%.2f", a / b }')"
info "restore --to brnew --force (tpa)" s "${tpa[@]}"
info "hand-run barman recover + start over SSH" s "${hand[@]}"
report "restore / hand-run (ratio of medians)" x "<=" 1.5 "$ratio"
