#!/usr/bin/env bash
# The baseline seed-vs-script.sh compares tpa's first deploy of the seed against: the same
# essential steps written by hand as a shell script over SSH, on hosts of the same kind (fresh
# containers of a provisioned cluster, from the same package layers, so neither side installs
# packages). Each host's steps start as soon as their inputs are ready:
#
#   primary   initdb, postgresql.conf and pg_hba.conf, start, the roles (replication,
#             repmgr, barman, streaming_barman), Barman's slot, repmgr primary register,
#             repmgrd
#   replica   (once the primary is up) repmgr standby clone from it, start, register, repmgrd
#   cascaded  (once the replica is up) the same from the replica
#   Barman    (its configuration at once; once the primary is up) WAL streaming, a WAL switch
#             archived, the first backup, with a restore point written on the primary every
#             half second meanwhile so that Barman's segments close (what tpa's barman-follow
#             does)
#
# What tpa does and this script does not: TLS (certificates from the cluster's CA and
# verify-full on every connection), systemd units for Postgres and repmgrd, least-privilege
# roles for Barman and repmgr, health checks, the agents. The comparison is generous to the
# script.
# Usage: seed-by-hand.sh DIR PRIMARY REPLICA CASCADED BARMAN   (DIR: a provisioned cluster)
set -euo pipefail
(($# == 5)) || {
  echo "usage: seed-by-hand.sh DIR PRIMARY REPLICA CASCADED BARMAN" >&2
  exit 1
}
dir="$1" primary="$2" replica="$3" cascaded="$4" barman="$5"

# The hosts' addresses and the network, from provision's inventory.
address() {
  python3 -c 'import json,sys; print(next(h["address"] for h in json.load(open(sys.argv[1]))["hosts"] if h["name"] == sys.argv[2]))' \
    "$dir/inventory.json" "$1"
}
subnet="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["network"]["subnet"])' "$dir/inventory.json")"
p_ip="$(address "$primary")" r_ip="$(address "$replica")" c_ip="$(address "$cascaded")"
b_ip="$(address "$barman")"
pw() { openssl rand -hex 16; }
repl_pw="$(pw)" repmgr_pw="$(pw)" barman_pw="$(pw)" streaming_pw="$(pw)"

on() {
  local host="$1"
  shift
  ssh -F "$dir/ssh_config" -o BatchMode=yes "$host" bash -s -- "$@"
}

# Shared by the Postgres hosts: settings, repmgr's configuration and the postgres passfile.
common="
set -euo pipefail
export PGBIN=/usr/lib/postgresql/15/bin DATA=/opt/postgres/data
cd /tmp
install -d -o postgres -g postgres -m 0755 /opt/postgres
write_repmgr_conf() {
  cat >/etc/repmgr.conf <<EOF
node_id=\$1
node_name='\$2'
conninfo='host=\$3 user=repmgr dbname=repmgr connect_timeout=2 application_name=\$2'
data_directory='/opt/postgres/data'
pg_bindir='/usr/lib/postgresql/15/bin'
failover=automatic
promote_command='repmgr standby promote -f /etc/repmgr.conf --log-to-file'
follow_command='repmgr standby follow -f /etc/repmgr.conf --log-to-file --upstream-node-id=%n'
EOF
  printf '*:*:*:repmgr:%s\n*:*:replication:repmgr:%s\n' '$repmgr_pw' '$repmgr_pw' >~postgres/.pgpass
  chown postgres: ~postgres/.pgpass
  chmod 600 ~postgres/.pgpass
}
pg() { runuser -u postgres -- \"\$@\"; }
start() { pg \"\$PGBIN/pg_ctl\" -D \"\$DATA\" -l /opt/postgres/startup.log -w start >/dev/null; }
"

primary_steps() {
  on "$primary" <<EOF
$common
pg "\$PGBIN/initdb" -D "\$DATA" --data-checksums --locale=en_US.UTF-8 --encoding=UTF8 \
  --auth-local=peer --auth-host=scram-sha-256 >/dev/null
cat >>"\$DATA/postgresql.conf" <<CONF
listen_addresses = '*'
shared_preload_libraries = 'repmgr'
wal_log_hints = on
CONF
cat >>"\$DATA/pg_hba.conf" <<HBA
host all all $subnet scram-sha-256
host replication all $subnet scram-sha-256
HBA
start
pg psql -X -q -v ON_ERROR_STOP=1 <<SQL
create role replication login replication password '$repl_pw';
create role repmgr login superuser password '$repmgr_pw';
create database repmgr owner repmgr;
create role barman login superuser password '$barman_pw';
create role streaming_barman login replication password '$streaming_pw';
select pg_create_physical_replication_slot('barman', true);
SQL
write_repmgr_conf 1 $primary $p_ip
pg repmgr -f /etc/repmgr.conf primary register >/dev/null
pg repmgrd -f /etc/repmgr.conf >/dev/null 2>&1 </dev/null
EOF
}

# standby_steps HOST NODE_ID ADDRESS UPSTREAM_ADDRESS UPSTREAM_NODE_ID
standby_steps() {
  on "$1" <<EOF
$common
write_repmgr_conf $2 $1 $3
pg repmgr -f /etc/repmgr.conf -h $4 -U repmgr -d repmgr --upstream-node-id $5 standby clone --fast-checkpoint >/dev/null 2>&1
start
# Registration checks that the upstream sees this node streaming.
until [[ "\$(pg psql -XAtc 'select status from pg_stat_wal_receiver')" == streaming ]]; do sleep 0.1; done
pg repmgr -f /etc/repmgr.conf standby register --upstream-node-id $5 >/dev/null
pg repmgrd -f /etc/repmgr.conf >/dev/null 2>&1 </dev/null
EOF
}

barman_config() {
  on "$barman" <<EOF
set -euo pipefail
cat >/etc/barman.conf <<CONF
[barman]
barman_user = barman
configuration_files_directory = /etc/barman.d
barman_home = /var/lib/barman
log_file = /var/log/barman/barman.log
log_level = INFO
CONF
mkdir -p /etc/barman.d
cat >/etc/barman.d/$primary.conf <<CONF
[$primary]
description = $primary by hand
conninfo = host=$p_ip passfile=/var/lib/barman/.pgpass dbname=postgres user=barman
streaming_conninfo = host=$p_ip passfile=/var/lib/barman/.pgpass user=streaming_barman
backup_method = postgres
streaming_archiver = on
archiver = off
slot_name = barman
compression = gzip
minimum_redundancy = 1
retention_policy = RECOVERY WINDOW OF 4 WEEKS
CONF
printf '%s:5432:*:barman:%s\n%s:5432:*:streaming_barman:%s\n' $p_ip $barman_pw $p_ip $streaming_pw \
  >/var/lib/barman/.pgpass
chown barman: /var/lib/barman/.pgpass
chmod 600 /var/lib/barman/.pgpass
EOF
}

barman_backup() {
  on "$barman" <<EOF
set -euo pipefail
cd /tmp
b() { runuser -u barman -- env HOME=/var/lib/barman barman "\$@"; }
# Barman's cron starts receive-wal (and creates the server's directories), as Debian's
# cron.d entry would within the minute.
b cron >/dev/null 2>&1 </dev/null
on_primary() {
  runuser -u barman -- psql -XAtq "host=$p_ip passfile=/var/lib/barman/.pgpass dbname=postgres user=barman" -c "\$1"
}
# The switch must come after receive-wal streams, or its segment is never received.
until [[ "\$(on_primary "select active from pg_replication_slots where slot_name = 'barman'")" == t ]]; do
  sleep 0.1
done
(while :; do
  on_primary "select pg_create_restore_point('nudge')" >/dev/null 2>&1 || true
  sleep 0.5
done) &
nudger=\$!
b switch-wal --force --archive --archive-timeout 60 $primary >/dev/null
b backup --immediate-checkpoint --wait $primary >/dev/null
kill \$nudger
EOF
}

barman_config &
config=$!
primary_steps
wait "$config"
standby_steps "$replica" 2 "$r_ip" "$p_ip" 1 &&
  standby_steps "$cascaded" 3 "$c_ip" "$r_ip" 2 &
standbys=$!
barman_backup
wait "$standbys"
