#!/usr/bin/env bash
# The baseline seed-shell.sh compares tpa's deploy of the seed against: the essential steps of
# the seed's four hosts as a plain shell script, run from the controller over SSH on hosts
# provisioned like tpa's (same images, the local repository bind-mounted at
# /var/opt/tpa/local-repo). What a careful person would type, and no more:
#   - every host, at once: the local apt source, no `main` cluster, apt-get install of the
#     packages tpa installs for its role (the same lists, so the same dpkg work);
#   - the primary: initdb (tpa's options), listen on all addresses, pg_hba for the replicas
#     and Barman (scram-sha-256), start, the replication and Barman roles;
#   - the replica, then the cascaded replica: pg_basebackup -R from its upstream, start, wait
#     until it streams;
#   - Barman, beside the replicas: a streaming server (backup_method postgres, a slot,
#     receive-wal), a WAL switch archived, the first backup.
# It skips everything else tpa does (agent, CA and TLS, users and databases, repmgr, health
# checks, systemd units of its own). Arguments: the cluster directory (its ssh_config) and
# the four host names.
# Usage: plain-seed.sh DIR PRIMARY REPLICA CASCADED BARMAN
set -euo pipefail
(($# == 5)) || {
  echo "usage: plain-seed.sh DIR PRIMARY REPLICA CASCADED BARMAN" >&2
  exit 1
}
dir="$1" primary="$2" replica="$3" cascaded="$4" barman="$5"
ssh_=(ssh -F "$dir/ssh_config" -o BatchMode=yes)
address() { awk -v h="$1" '$1 == "Host" { on = ($2 == h) } on && $1 == "HostName" { print $2; exit }' "$dir/ssh_config"; }
pa="$(address "$primary")" ra="$(address "$replica")"
[[ -n "$pa" && -n "$ra" ]] || {
  echo "plain-seed.sh: no addresses for $primary/$replica in $dir/ssh_config" >&2
  exit 1
}
password="plain-$RANDOM$RANDOM"
common=(ca-certificates cron less locales openssh-client openssl postgresql-client-15 procps rsync sudo barman-cli postgresql-15)
node_packages=("${common[@]}" postgresql-15-repmgr python3-psycopg2)
barman_packages=("${common[@]}" barman)

# install HOST PACKAGE...: the local source and the packages, on HOST.
install() {
  local host="$1"
  shift
  "${ssh_[@]}" "$host" bash -s -- "$@" <<'EOF'
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
echo 'deb [trusted=yes] file:/var/opt/tpa/local-repo/Debian/12 ./' >/etc/apt/sources.list.d/local-repo.list
: >/etc/apt/sources.list
apt-get update -qq
mkdir -p /etc/postgresql-common/createcluster.d
echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/plain.conf
apt-get install -y -qq --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >/dev/null
EOF
}

# clone HOST UPSTREAM_ADDRESS: pg_basebackup -R from the upstream, start, wait for streaming.
clone() {
  "${ssh_[@]}" "$1" bash -s -- "$2" "$password" <<'EOF'
set -euo pipefail
pgbin=/usr/lib/postgresql/15/bin pgdata=/opt/postgres/data
install -d -o postgres -g postgres -m 0700 /opt/postgres
printf '*:5432:*:replication:%s\n' "$2" >/var/lib/postgresql/.pgpass
chown postgres:postgres /var/lib/postgresql/.pgpass; chmod 600 /var/lib/postgresql/.pgpass
cd /tmp
runuser -u postgres -- "$pgbin/pg_basebackup" -h "$1" -U replication -D "$pgdata" -R \
  --checkpoint=fast --wal-method=stream
runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -l /var/lib/postgresql/startup.log -w start >/dev/null
for _ in $(seq 600); do
  [[ "$(runuser -u postgres -- psql -Atc 'select status from pg_stat_wal_receiver')" == streaming ]] && exit 0
  sleep 0.1
done
echo "not streaming after 60 s" >&2; exit 1
EOF
}

install "$primary" "${node_packages[@]}" &
p1=$!
install "$replica" "${node_packages[@]}" &
p2=$!
install "$cascaded" "${node_packages[@]}" &
p3=$!
install "$barman" "${barman_packages[@]}" &
p4=$!
wait "$p1"

"${ssh_[@]}" "$primary" bash -s -- "$password" <<'EOF'
set -euo pipefail
pgbin=/usr/lib/postgresql/15/bin pgdata=/opt/postgres/data
install -d -o postgres -g postgres -m 0700 /opt/postgres "$pgdata"
cd /tmp
runuser -u postgres -- "$pgbin/initdb" -D "$pgdata" --data-checksums --locale=en_US.UTF-8 \
  --encoding=UTF8 --auth-local=peer --auth-host=scram-sha-256 >/dev/null
echo "listen_addresses = '*'" >>"$pgdata/postgresql.conf"
cat >>"$pgdata/pg_hba.conf" <<HBA
host replication replication 0.0.0.0/0 scram-sha-256
host replication streaming_barman 0.0.0.0/0 scram-sha-256
host postgres barman 0.0.0.0/0 scram-sha-256
HBA
runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -l /var/lib/postgresql/startup.log -w start >/dev/null
runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -v pw="$1" <<SQL
create role replication login replication password :'pw';
create role streaming_barman login replication password :'pw';
create role barman login superuser password :'pw';
SQL
EOF

(
  wait "$p4"
  "${ssh_[@]}" "$barman" bash -s -- "$primary" "$pa" "$password" <<'EOF'
set -euo pipefail
cat >"/etc/barman.d/$1.conf" <<CONF
[$1]
conninfo = host=$2 user=barman dbname=postgres
streaming_conninfo = host=$2 user=streaming_barman
backup_method = postgres
streaming_archiver = on
slot_name = barman
create_slot = auto
CONF
printf '*:5432:*:barman:%s\n*:5432:*:streaming_barman:%s\n' "$3" "$3" >/var/lib/barman/.pgpass
chown barman:barman /var/lib/barman/.pgpass; chmod 600 /var/lib/barman/.pgpass
cd /tmp
runuser -u barman -- barman -q cron
runuser -u barman -- barman -q switch-wal --force --archive --archive-timeout 60 "$1"
runuser -u barman -- barman -q backup --wait "$1"
EOF
) &
b=$!
wait "$p2"
clone "$replica" "$pa"
wait "$p3"
clone "$cascaded" "$ra"
wait "$b"
