#!/usr/bin/env bash
# Benchmark: replication with repmgr on the seed (issue 8's bars), on one cluster: the seed's
# four hosts renamed bulb (primary), bvub (replica of bulb), bachel (replica of bvub) and
# bchimay (Barman), cluster bench-repl, deployed once on fresh containers (not timed).
#
# 1. A new replica, tpa against a hand-run clone, side by side in one run. A fifth instance,
#    brepl (replica of bulb, location brussels), is added to config.yml and provisioned, and
#    the packages a replica needs are installed on it by hand before the clock starts (the
#    exact package set tpa installed on bvub, from the same local repository), because the
#    bar is about the clone, not apt: apt-get install is 20 to 40 s here and would swamp it.
#    Timed: `deploy` of the whole cluster (the other four hosts should change nothing but
#    bulb's pg_hba and a slot; the bench notes any Postgres restart there), which on brepl bootstraps the agent, clones with pg_basebackup,
#    writes the configuration, starts Postgres, waits until it streams, and registers it
#    with repmgr and starts repmgrd. The hand-run path, over one SSH session to brepl (which
#    then has the packages, the CA file and the passfile, and which bulb's pg_hba admits):
#    `pg_basebackup -R --checkpoint=fast --wal-method=stream` with a new physical slot, from
#    bulb, into a scratch data directory, `pg_ctl -w start` on port 5433, then polling until
#    `pg_stat_wal_receiver` says streaming. So the hand-run path leaves out what a careful
#    person would also have to do (pg_hba on the primary, TLS files, passfile, a unit,
#    repmgr registration), and tpa's figure includes its whole run over five hosts: the
#    comparison favours the hand-run path. tpa goes first (the hand-run needs brepl's files);
#    the hand-run clone is stopped, removed and its slot dropped afterwards. Bar: ≤ 1.5×, for
#    tpa's clone-to-streaming span (brepl's resources from pg_basebackup to the streaming
#    check, as the agent timed them in deploy.log: clone, configuration files, Postgres
#    started under systemd, the auto.conf check, streaming) against the hand-run over SSH;
#    the whole deploy's ratio is printed beside it.
# 2. Switchover, switchover_runs (default 3) times, each to a replica that streams from the
#    live primary, rotating through bvub, brepl, bulb. During each, every Postgres host runs
#    an INSERT loop (psql, then 0.1 s of sleep); the outside window is the longest gap
#    between two accepted INSERTs (on any host) around the switchover. tpa's own figure
#    ("writes were refused for X s": primary shutdown to promotion) is reported too.
#    Bar: median of tpa's figure < 10 s.
# 3. Failover, failover_runs (default 3) times: INSERT loops on every replica, then
#    `docker stop <live primary>`; the figure is from just before `docker stop` to the first
#    INSERT a replica accepts (container and bench share the kernel clock). Then (not timed)
#    `docker start` the old primary, `deploy` (rejoins it as a replica), wait until `status`
#    exits 0. Bar: median < 30 s. With brepl the cluster has 4 Postgres hosts, one more than
#    the seed: two replicas stream from the primary, so repmgrd holds an election.
# Needs the image tpa/debian:12 and Debian's archive (download-packages, once).
# Usage: scripts/bench/replication.sh [failover_runs] [switchover_runs]
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

failover_runs="$(positive_int failover_runs "${1:-3}")"
switchover_runs="$(positive_int switchover_runs "${2:-3}")"
bench_init
need_image tpa/debian:12
command -v jq >/dev/null || die "jq not found: the bench reads 'status --json' with it"

dir="$BENCH_TMP/repl"
mkdir -p "$dir"
sed -e 's/cluster_name: fosdem/cluster_name: bench-repl/' \
  -e 's/\bulb\b/bulb/g; s/\bvub\b/bvub/g; s/\bachel\b/bachel/g; s/\bchimay\b/bchimay/g' \
  "$REPO_ROOT/tests/fixtures/seed/config.yml" >"$dir/config.yml"
bench_cluster "$dir"

# ssh as an array, not a function, so that timeout (run_quiet, timed) and & can run it.
ssh_=(ssh -F "$dir/ssh_config" -o BatchMode=yes)
rssh() {
  "${ssh_[@]}" "$@"
}
# psql_on HOST SQL: one query as postgres on HOST (SQL must not hold a single quote).
psql_on() {
  rssh "$1" "cd /tmp && runuser -u postgres -- psql -XAtqc '$2'"
}
address() {
  jq -r --arg h "$1" '.hosts[] | select(.name == $h) | .address' "$dir/inventory.json"
}

echo "download-packages, provision and deploy of the seed (not timed)"
run_quiet download-packages "$TPA" download-packages "$dir"
run_quiet deploy "$TPA" deploy "$dir"
wait_healthy deployed
psql_on bulb "create table bench_w (host text, at timestamptz default clock_timestamp())"

# --- 1. A new replica: tpa against a hand-run clone ---------------------------------------
cat >>"$dir/config.yml" <<'EOF'
- Name: brepl
  node: 5
  location: brussels
  role: [replica]
  upstream: bulb
EOF
run_quiet download-packages-2 "$TPA" download-packages "$dir"
run_quiet provision-brepl "$TPA" provision "$dir"
# The packages tpa installed on a replica: what bvub has and a fresh host does not.
rssh bvub "dpkg-query -W -f '\${db:Status-Abbrev} \${Package}\n'" |
  awk '$1 == "ii" { print $2 }' | sort >"$BENCH_TMP/pkgs-bvub"
rssh brepl "dpkg-query -W -f '\${db:Status-Abbrev} \${Package}\n'" |
  awk '$1 == "ii" { print $2 }' | sort >"$BENCH_TMP/pkgs-fresh"
mapfile -t packages < <(comm -23 "$BENCH_TMP/pkgs-bvub" "$BENCH_TMP/pkgs-fresh")
((${#packages[@]} > 0)) || die "no package difference between bvub and a fresh host"
echo "installing ${#packages[@]} packages on brepl by hand (not timed)"
run_quiet preinstall "${ssh_[@]}" brepl bash -s -- "${packages[@]}" <<'EOF'
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
echo 'deb [trusted=yes] file:/var/opt/tpa/local-repo/Debian/12 ./' >/etc/apt/sources.list.d/bench.list
: >/etc/apt/sources.list
apt-get update -qq
mkdir -p /etc/postgresql-common/createcluster.d
echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/bench.conf
apt-get install -y -qq --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >/dev/null
rm /etc/apt/sources.list.d/bench.list
EOF

timed tpa_clone deploy-brepl "$TPA" deploy -v "$dir"
[[ "$(psql_on brepl "select status from pg_stat_wal_receiver")" == streaming ]] ||
  die "brepl does not stream after deploy"
grep -q 'installed: ' "$BENCH_TMP/deploy-brepl.log" &&
  echo "note: deploy still installed packages on brepl: $(grep 'installed: ' "$BENCH_TMP/deploy-brepl.log")"

timed hand_clone hand-clone "${ssh_[@]}" brepl bash -s -- "$(address bulb)" <<'EOF'
set -euo pipefail
bin=/usr/lib/postgresql/15/bin data=/var/lib/postgresql/bench-hand-clone
cd /tmp
t0=$EPOCHREALTIME
runuser -u postgres -- "$bin/pg_basebackup" -D "$data" -R --checkpoint=fast --wal-method=stream \
  --create-slot --slot=bench_hand \
  -d "host=$1 port=5432 user=replication passfile=/var/lib/postgresql/.pgpass sslmode=verify-full sslrootcert=/etc/tpa/ca.crt application_name=bench_hand"
t1=$EPOCHREALTIME
runuser -u postgres -- "$bin/pg_ctl" -D "$data" -l /var/lib/postgresql/bench-hand-clone.log -o "-p 5433" -w start >/dev/null
t2=$EPOCHREALTIME
until [[ "$(runuser -u postgres -- psql -p 5433 -XAtc 'select status from pg_stat_wal_receiver')" == streaming ]]; do
  sleep 0.1
done
t3=$EPOCHREALTIME
awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" \
  'BEGIN { printf "hand-run steps: pg_basebackup %.1f s, pg_ctl start %.1f s, until streaming %.1f s\n", b - a, c - b, d - c }'
EOF
run_quiet hand-clone-cleanup "${ssh_[@]}" brepl "cd /tmp && runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl \
  -D /var/lib/postgresql/bench-hand-clone -m fast -w stop >/dev/null && rm -rf /var/lib/postgresql/bench-hand-clone"
psql_on bulb "select pg_drop_replication_slot(\$\$bench_hand\$\$)" >/dev/null
# tpa's own clone-to-streaming span, what the bar compares: brepl's resources from
# pg_basebackup up to the streaming check, as the agent timed them (deploy.log's last deploy),
# so the same work as the hand-run: clone, configuration, start, until streaming.
tpa_span="$(awk '/^deploy of / { n++ } { line[NR] = $0; run[NR] = n } END {
    for (i = 1; i <= NR; i++) if (run[i] == n) print line[i] }' "$dir/deploy.log" |
  awk '$1 == "[brepl]" && $2 ~ /^postgres-(install|config)$/ {
      if ($4 == "command:pg_basebackup") on = 1
      if (on) { ms += $5 + 0 }
      if ($4 == "streaming:wal_receiver") { on = 0; done = 1 }
    } END { if (!done) exit 1; printf "%.3f", ms / 1000 }')" ||
  die "no pg_basebackup .. streaming:wal_receiver span for brepl in $dir/deploy.log"
clone_ratio="$(awk -v a="$tpa_span" -v b="$hand_clone" 'BEGIN { printf "%.2f", a / b }')"
deploy_ratio="$(awk -v a="$tpa_clone" -v b="$hand_clone" 'BEGIN { printf "%.2f", a / b }')"
echo "new replica: tpa clone to streaming $tpa_span s, hand-run clone over SSH $hand_clone s, ratio $clone_ratio (bar <= 1.5)"
echo "new replica: tpa's whole deploy (bootstrap, 5 hosts, repmgr registration) $tpa_clone s, ratio $deploy_ratio"
tail -n 1 "$BENCH_TMP/hand-clone.log"
# Where tpa's time went: bootstrap and facts, brepl's stages, and restarts elsewhere.
grep -E '^(bootstrap|facts):|^  brepl ' "$BENCH_TMP/deploy-brepl.log" || true
grep -E 'elapsed_ms=[0-9]{4,}' <("${ssh_[@]}" brepl journalctl -u tpa-agent --no-pager -o cat 2>/dev/null) |
  sed -E 's/.*id=([^ ]+) outcome=[a-z_]+ elapsed_ms=([0-9]+).*/  brepl: \1 took \2 ms/' || true
if grep -E '^\[b(ulb|vub|achel)\] +changed service:postgres.service: restart' "$BENCH_TMP/deploy-brepl.log"; then
  echo "note: adding brepl restarted Postgres on the hosts above (0001-tpa_restart.conf changed)"
fi
wait_healthy brepl

# --- INSERT loops -----------------------------------------------------------------------
# Each prints "ok|no EPOCHREALTIME" per attempt; the line it writes makes it die of SIGPIPE
# once the bench closes its SSH session; it stops by itself after 5 minutes anyway.
cat >"$BENCH_TMP/writer.sh" <<'EOF'
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
EOF
writer_pids=()
# start_writers LABEL HOST...: an INSERT loop on each HOST, into $BENCH_TMP/LABEL-HOST.w;
# returns once every loop has made an attempt.
start_writers() {
  local label="$1" host deadline=$((SECONDS + 30))
  shift
  writer_pids=()
  for host in "$@"; do
    "${ssh_[@]}" "$host" bash -s -- "$host" <"$BENCH_TMP/writer.sh" >"$BENCH_TMP/$label-$host.w" 2>/dev/null &
    writer_pids+=($!)
  done
  for host in "$@"; do
    until [[ -s "$BENCH_TMP/$label-$host.w" ]]; do
      ((SECONDS < deadline)) || die "the INSERT loop on $host did not start"
      sleep 0.1
    done
  done
}
stop_writers() {
  kill "${writer_pids[@]}" 2>/dev/null || true
  wait "${writer_pids[@]}" 2>/dev/null || true
  writer_pids=()
}

# --- 2. Switchover ------------------------------------------------------------------------
postgres_hosts=(bulb bvub bachel brepl)
preference=(bvub brepl bulb)
refused=() outside=()
for ((i = 0; i < switchover_runs; i++)); do
  json="$(status_json)"
  primary="$(jq -r '.[] | select(.role == "primary") | .host' <<<"$json")"
  target=""
  for ((k = 0; k < ${#preference[@]}; k++)); do
    candidate="${preference[(i + k) % ${#preference[@]}]}"
    if [[ "$(jq -r --arg h "$candidate" --arg p "$primary" \
      '.[] | select(.host == $h and .role == "replica" and .upstream == $p) | .host' <<<"$json")" == "$candidate" ]]; then
      target="$candidate"
      break
    fi
  done
  [[ -n "$target" ]] || die "no replica streams from $primary: $json"
  start_writers "sw$i" "${postgres_hosts[@]}"
  sleep 1
  t0=$EPOCHREALTIME
  run_quiet "switchover-$i" "$TPA" switchover "$dir" "$target"
  t1=$EPOCHREALTIME
  # Writes must resume on the new primary before the loops stop.
  deadline=$((SECONDS + 60))
  until awk -v t="$t1" '$1 == "ok" && $2 > t { found = 1 } END { exit !found }' "$BENCH_TMP/sw$i-$target.w"; do
    ((SECONDS < deadline)) || die "no INSERT accepted on $target within 60 s of the switchover"
    sleep 0.2
  done
  stop_writers
  figure="$(sed -n 's/.*writes were refused for \([0-9.]*\)s.*/\1/p' "$BENCH_TMP/switchover-$i.log")"
  [[ -n "$figure" ]] || die "no 'writes were refused for' line in $BENCH_TMP/switchover-$i.log"
  refused+=("$figure")
  # The longest gap between two accepted INSERTs (any host) overlapping the switchover.
  gap="$(cat "$BENCH_TMP"/sw"$i"-*.w | awk '$1 == "ok" { print $2 }' | sort -g |
    awk -v s="$t0" -v e="$t1" 'NR > 1 && $1 >= s && p <= e && $1 - p > m { m = $1 - p } { p = $1 } END { printf "%.3f", m }')"
  outside+=("$gap")
  echo "switchover $((i + 1))/$switchover_runs: $primary -> $target in $(elapsed "$t0" "$t1") s;" \
    "tpa says writes refused ${figure} s, INSERT gap seen outside ${gap} s"
  wait_healthy "switchover-$i"
done

# --- 3. Failover --------------------------------------------------------------------------
failover=() stopped_after=()
for ((i = 0; i < failover_runs; i++)); do
  primary="$(live_primary)"
  [[ -n "$primary" ]] || die "no single live primary before failover $((i + 1))"
  replicas=()
  for host in "${postgres_hosts[@]}"; do
    [[ "$host" == "$primary" ]] || replicas+=("$host")
  done
  start_writers "fo$i" "${replicas[@]}"
  t0=$EPOCHREALTIME
  run_quiet "docker-stop-$i" docker stop "$primary"
  t_stopped=$EPOCHREALTIME
  first="$(first_insert "fo$i" "$primary" "${replicas[@]}")"
  stop_writers
  read -r t_first promoted <<<"$first"
  failover+=("$(elapsed "$t0" "$t_first")")
  stopped_after+=("$(elapsed "$t0" "$t_stopped")")
  echo "failover $((i + 1))/$failover_runs: $primary stopped (docker stop took ${stopped_after[-1]} s)," \
    "$promoted accepted an INSERT after ${failover[-1]} s"
  # The old primary back as a replica (not timed).
  run_quiet "docker-start-$i" docker start "$primary"
  wait_ssh "$primary"
  run_quiet "rejoin-$i" "$TPA" deploy "$dir"
  grep -E 'former primary|rejoin' "$BENCH_TMP/rejoin-$i.log" | head -n 3 || true
  wait_healthy "failover-$i"
done

echo
echo "load average at the end: $(cut -d ' ' -f 1-3 /proc/loadavg)"
info "new replica: tpa's whole deploy (packages preinstalled)" s "$tpa_clone"
info "new replica: tpa clone to streaming (agent-timed)" s "$tpa_span"
info "new replica: hand-run pg_basebackup + start over SSH" s "$hand_clone"
info "new replica: whole deploy / hand-run" x "$deploy_ratio"
report "new replica: tpa clone to streaming / hand-run" x "<=" 1.5 "$clone_ratio"
report "switchover: writes refused (tpa's figure)" s "<" 10 "${refused[@]}"
info "switchover: longest INSERT gap seen outside" s "${outside[@]}"
report "failover: docker stop to first accepted write" s "<" 30 "${failover[@]}"
info "failover: docker stop itself" s "${stopped_after[@]}"
