#!/usr/bin/env bash
# The baseline deploy.sh compares tpa against: the essential steps of a single Postgres
# primary as a plain shell script, run as root on a fresh tpa/debian:12 host over one SSH
# session (ssh HOST bash -s -- PACKAGE... < plain-primary.sh). The packages come from the
# local repository that provision bind-mounts at /var/opt/tpa/local-repo.
# Arguments: the packages to install (deploy.sh passes the list tpa's deploy installed).
set -euo pipefail
(($# > 0)) || {
  echo "usage: plain-primary.sh PACKAGE..." >&2
  exit 1
}
export DEBIAN_FRONTEND=noninteractive
pgbin=/usr/lib/postgresql/15/bin
pgdata=/opt/postgres/data

echo 'deb [trusted=yes] file:/var/opt/tpa/local-repo/Debian/12 ./' >/etc/apt/sources.list.d/local-repo.list
: >/etc/apt/sources.list
apt-get update -qq
mkdir -p /etc/postgresql-common/createcluster.d
echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/plain.conf
apt-get install -y -qq --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >/dev/null
install -d -o postgres -g postgres -m 0700 /opt/postgres "$pgdata"
cd /tmp
runuser -u postgres -- "$pgbin/initdb" -D "$pgdata" --data-checksums --locale=en_US.UTF-8 \
  --encoding=UTF8 --auth-local=peer --auth-host=scram-sha-256 >/dev/null
runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -l "$pgdata/startup.log" -w start >/dev/null
